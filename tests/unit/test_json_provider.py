"""`FastJSONProvider`: the app's answers read as the standard library's, written by orjson."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import math
import uuid

from flask import Flask, jsonify

from ml_backend.json_provider import FastJSONProvider


@dataclasses.dataclass
class _Point:
    x: int
    y: float


def _app() -> Flask:
    app = Flask("test")
    app.json = FastJSONProvider(app)
    app.json.sort_keys = False
    return app


def test_answers_match_the_standard_encoding_for_the_types_flask_knows() -> None:
    app, reference = _app(), Flask("reference")
    reference.json.sort_keys = False  # type: ignore[attr-defined]
    value = {
        "rle": list(range(256)) * 4,
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "id": uuid.UUID(int=7),
        "price": decimal.Decimal("1.50"),
        "point": _Point(1, 2.5),
        3: "int key",
        "text": "granularité",
    }
    with app.app_context():
        body = jsonify(value).get_data()
        standard = json.loads(reference.json.dumps(value))
    assert body.endswith(b"\n")
    assert json.loads(body) == standard
    assert json.loads(body)["when"] == "Fri, 02 Jan 2026 03:04:05 GMT"  # Flask's HTTP date
    assert list(json.loads(body)) == ["rle", "when", "id", "price", "point", "3", "text"]


def test_non_finite_floats_become_null_and_options_fall_back_to_the_standard_encoder() -> None:
    app = _app()
    with app.app_context():
        assert json.loads(jsonify({"iou": math.nan, "s": [math.inf]}).get_data()) == {
            "iou": None,
            "s": [None],
        }
        assert app.json.dumps({"a": 1}, indent=2) == '{\n  "a": 1\n}'
        assert jsonify(1, 2).get_json() == [1, 2]
        assert jsonify(a=1).get_json() == {"a": 1}
        assert jsonify({"echo": -(2**63) - 1}).get_json() == {"echo": -(2**63) - 1}

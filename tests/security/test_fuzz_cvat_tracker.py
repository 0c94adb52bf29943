"""Fuzz the CVAT tracker: never a 5xx, every 4xx a clear JSON line, states never trusted.

Bodies are a valid tracker call (a rectangle with the state of a running session and a mask
without one) with one to three fields replaced by arbitrary JSON or removed, as the route fuzz
does for the other functions, plus arbitrary strings as states.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from request_backend import build_backend, frame_b64
from test_fuzz_routes import FUZZ, check, mutations

from ml_backend.cvat.tracker_shapes import encode_cvat_mask

TRACKER = "unsamv2-tracker-fine"
HEADERS = {"x-nuclio-function-name": TRACKER}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model):
    presets = [{"name": "fine", "granularity": 0.2, "points_per_side": 4}]
    app, _ = build_backend(
        tmp_path_factory.mktemp("fuzz-tracker"),
        tiny_model,
        UNSAMV2_CVAT_PRESETS=json.dumps(presets),
        UNSAMV2_CVAT_TRACKER_SESSIONS="4",
    )
    return app.test_client()


@pytest.fixture(scope="module")
def template(client) -> dict[str, Any]:
    frame = frame_b64()
    mask = np.zeros((96, 128), dtype=bool)
    mask[20:40, 30:60] = True
    first = client.post(
        "/api/function_invocations",
        json={"image": frame, "shapes": [[30, 20, 60, 40]]},
        headers=HEADERS,
    )
    assert first.status_code == 200, first.get_json()
    return {
        "image": frame,
        "shapes": [[30, 20, 60, 40], {"type": "mask", "points": encode_cvat_mask(mask)}],
        "states": [first.get_json()["states"][0], None],
    }


def test_fuzz_tracker_bodies(client, template) -> None:
    @settings(FUZZ, max_examples=25)
    @given(body=mutations(template))
    def run(body: Any) -> None:
        check(client.post("/api/function_invocations", json=body, headers=HEADERS))

    run()


def test_fuzz_tracker_states(client, template) -> None:
    @settings(FUZZ, max_examples=8)
    @given(state=st.text(max_size=300) | st.binary(max_size=80).map(lambda b: b.hex()))
    def run(state: str) -> None:
        body = {**template, "shapes": template["shapes"][:1], "states": [state]}
        answer = client.post("/api/function_invocations", json=body, headers=HEADERS)
        assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
        # an unknown key starts afresh from the given shape
        assert answer.get_json()["shapes"] == [template["shapes"][0]]

    run()

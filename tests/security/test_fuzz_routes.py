"""Fuzz the HTTP routes with generated payloads: never a 5xx, every 4xx a clear JSON line.

Payloads are valid requests with one to three fields replaced by arbitrary JSON (wrong types,
huge or negative numbers, NaN, lone surrogates, deep nesting) or removed, plus raw bodies that
are not JSON objects at all. Runs are derandomized (the same examples every run) and small
enough to keep the whole module well under a minute on a CPU.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from request_backend import (
    CONFIG,
    SECRET,
    TASK,
    assert_clear_error,
    build_backend,
    click,
    frame_b64,
    interactive_body,
)

from core_model.masks import encode_brush_rle
from core_model.whole_image import WholeImageConfig
from ml_backend.cvat.service import CvatOptions

DELETE = object()
INTERESTING = st.sampled_from(
    [
        2**63,
        2**63 - 1,
        -1,
        0,
        10**400,
        1e308,
        float("nan"),
        float("inf"),
        "",
        "0,3",
        "\ud800",
        "١٢",
        "²",
        "12.17",
        [],
        {},
        [[]],
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | INTERESTING
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every (key/index) path inside a JSON value, the value itself excluded."""
    if isinstance(value, (dict, list)):
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))


def mutate(template: Any, changes: list[tuple[tuple[Any, ...], Any]]) -> Any:
    """Apply (path, new value or DELETE) changes; a path that no longer exists is skipped."""
    body = copy.deepcopy(template)
    for path, new in changes:
        parent = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            if new is DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = new
        except (KeyError, IndexError, TypeError):
            continue
    return body


def mutations(template: Any) -> st.SearchStrategy[Any]:
    """Bodies derived from `template` by 1-3 replaced or removed fields."""
    change = st.tuples(st.sampled_from(list(paths(template))), JSON | st.just(DELETE))
    return st.lists(change, min_size=1, max_size=3).map(lambda c: mutate(template, c))


RAW_BODIES = st.one_of(
    JSON.map(lambda v: json.dumps(v)),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    st.just('{"tasks": [' * 200 + "]" * 200 + "}"),
)

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(answer: Any) -> None:
    """No 5xx; a 4xx is a one-line JSON error; a 2xx is JSON."""
    if answer.status_code >= 400:
        assert_clear_error(answer)
    else:
        assert answer.is_json, answer.get_data(as_text=True)[:300]


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model):
    # a small detector grid: the fuzz is about request handling, not segmentation cost
    presets = [
        {"name": n, "granularity": g, "points_per_side": 4}
        for n, g in (("fine", 0.2), ("whole", 1.0))
    ]
    app, _ = build_backend(
        tmp_path_factory.mktemp("fuzz"),
        tiny_model,
        UNSAMV2_PREANNOTATE_DEADLINE_S="0.5",
        UNSAMV2_CVAT_PRESETS=json.dumps(presets),
    )
    app.extensions["unsamv2.cvat"].options = CvatOptions(
        whole_image=WholeImageConfig(points_per_side=4, max_masks=5, deadline_s=0.5)
    )
    client = app.test_client()
    setup = {"project": "90.1", "extra_params": {"preannotate": True, "points_per_side": 2}}
    assert client.post("/setup", json=setup).status_code == 200
    return client


PREDICT_CLICKS = interactive_body(
    [
        click("k1", 50, 45),
        {**click("k2", 20, 30), "is_positive": False},
        {"id": "k1", "type": "number", "from_name": "granularity", "value": {"number": 0.4}},
        {
            "id": "k1",
            "type": "textarea",
            "from_name": "granularity_text",
            "value": {"text": ["0.35"]},
        },
    ]
)
PREDICT_BOX = interactive_body(
    [
        {
            "id": "r1",
            "type": "rectanglelabels",
            "from_name": "box",
            "to_name": "image",
            "original_width": 128,
            "original_height": 96,
            "value": {
                "x": 10,
                "y": 10,
                "width": 30,
                "height": 30,
                "rotation": 15,
                "rectanglelabels": ["Car"],
            },
        }
    ]
)
PREDICT_WHOLE = {"tasks": [TASK], "project": "90.1", "label_config": CONFIG, "params": {}}


@pytest.mark.parametrize(
    ("template", "examples"),
    [(PREDICT_CLICKS, 500), (PREDICT_BOX, 150), (PREDICT_WHOLE, 60)],
    ids=["clicks", "box", "whole-image"],
)
def test_fuzz_predict(client, template, examples) -> None:
    assert client.post("/predict", json=template).status_code == 200

    @settings(FUZZ, max_examples=examples)
    @given(body=mutations(template))
    def run(body: Any) -> None:
        check(client.post("/predict", json=body))

    run()


SETUP = {
    "project": "91.1700000000",
    "schema": CONFIG,
    "hostname": "http://localhost:8080",
    "access_token": "token",
    "extra_params": {
        "default_granularity": 0.4,
        "preannotate": False,
        "preannotate_granularity": 1.0,
        "preannotate_label": "Car",
        "max_regions": 10,
        "points_per_side": 8,
        "pred_iou_thresh": 0.8,
        "stability_score_thresh": 0.9,
    },
}


@settings(FUZZ, max_examples=300)
@given(body=mutations(SETUP))
def test_fuzz_setup(client, body) -> None:
    check(client.post("/setup", json=body))


ANNOTATION = {
    "action": "ANNOTATION_CREATED",
    "project": {"id": 93, "title": "Fuzz", "label_config": CONFIG},
    "task": {"id": 5},
    "annotation": {
        "id": 11,
        "task": 5,
        "completed_by": 3,
        "was_cancelled": False,
        "result": [
            {
                "id": "m1",
                "type": "brushlabels",
                "from_name": "mask",
                "to_name": "image",
                "original_width": 4,
                "original_height": 2,
                "value": {
                    "format": "rle",
                    "rle": encode_brush_rle(np.ones((2, 4), bool)),
                    "brushlabels": ["Car"],
                },
            }
        ],
    },
}
DELETED = {"action": "ANNOTATIONS_DELETED", "project": {"id": 93}, "annotations": [{"id": 11}]}


@pytest.mark.parametrize(
    ("template", "examples"), [(ANNOTATION, 300), (DELETED, 80)], ids=["annotation", "deleted"]
)
def test_fuzz_webhook(client, template, examples) -> None:
    headers = {"X-UnSAMv2-Secret": SECRET}
    assert client.post("/webhook", json=template, headers=headers).status_code == 200

    @settings(FUZZ, max_examples=examples)
    @given(body=mutations(template))
    def run(body: Any) -> None:
        if isinstance(body, dict) and body.get("action") == "START_TRAINING":
            return  # queues a real job: covered by the request tests
        check(client.post("/webhook", json=body, headers=headers))

    run()


@pytest.mark.parametrize("route", ["/predict", "/setup", "/webhook", "/api/function_invocations"])
def test_fuzz_raw_bodies(client, route) -> None:
    headers = {"X-UnSAMv2-Secret": SECRET, "x-nuclio-function-name": "unsamv2-interactor-fine"}

    @settings(FUZZ, max_examples=40)
    @given(body=RAW_BODIES)
    def run(body: str) -> None:
        check(client.post(route, data=body, content_type="application/json", headers=headers))

    run()


FRAME = frame_b64()
INTERACTOR = {"image": FRAME, "pos_points": [[60, 40]], "neg_points": [[5, 5]], "obj_bbox": None}
DETECTOR = {"image": FRAME, "threshold": 0.5}


@pytest.mark.parametrize(
    ("function", "template", "examples"),
    [
        ("unsamv2-interactor-fine", INTERACTOR, 200),
        ("unsamv2-interactor-whole", {**INTERACTOR, "obj_bbox": [[10, 10], [90, 70]]}, 80),
        ("unsamv2-detector-whole", DETECTOR, 40),
    ],
    ids=["interactor", "interactor-box", "detector"],
)
def test_fuzz_cvat_invocations(client, function, template, examples) -> None:
    headers = {"x-nuclio-function-name": function}
    first = client.post("/api/function_invocations", json=template, headers=headers)
    assert first.status_code == 200, first.get_json()

    @settings(FUZZ, max_examples=examples)
    @given(body=mutations(template))
    def run(body: Any) -> None:
        check(client.post("/api/function_invocations", json=body, headers=headers))

    run()


@settings(FUZZ, max_examples=40)
@given(
    name=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30),
    suffix=st.sampled_from(["", "x", "%00", "../functions"]),
)
def test_fuzz_cvat_function_names(client, name, suffix) -> None:
    check(client.get("/api/functions/" + name.replace("/", "_") + suffix))
    headers = {"x-nuclio-function-name": name.encode("utf-8").decode("latin-1")}
    check(client.post("/api/function_invocations", json=DETECTOR, headers=headers))

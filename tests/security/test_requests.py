"""Hostile requests to the Label Studio routes: type confusion, huge ids, sizes and costs.

Each case sends the request that used to answer 500 (with a traceback in the log) or to occupy
the server, and checks it now gets a 4xx JSON answer with a one-line message, or a bounded
answer.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from label_studio_sdk.converter.brush import decode_rle
from request_backend import (
    CONFIG,
    SECRET,
    TASK,
    assert_clear_error,
    build_backend,
    click,
    interactive_body,
)

from labeling_pipeline.store.repository import label_studio_project
from ml_backend.label_studio.schemas import MAX_TASKS_PER_PREDICT

BIG_ID = 2**63


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_model):
    return build_backend(tmp_path_factory.mktemp("requests"), tiny_model)


@pytest.fixture
def client(backend):
    app, _ = backend
    return app.test_client()


def webhook(client, body: Any):
    return client.post("/webhook", json=body, headers={"X-UnSAMv2-Secret": SECRET})


# ----------------------------------------------------------------- type confusion in /predict


def _with_task(**changes: Any) -> dict[str, Any]:
    return interactive_body([click()], task={**TASK, **changes})


def _with_value(value: Any) -> dict[str, Any]:
    return interactive_body([{**click(), "value": value}])


def _with_control(kind: str, value: Any) -> dict[str, Any]:
    control = {"id": "k1", "type": kind, "from_name": "granularity", "value": value}
    if kind == "textarea":
        control["from_name"] = "granularity_text"
    return interactive_body([click(), control])


def _rectangle(**value: Any) -> dict[str, Any]:
    rect = {
        "id": "r1",
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "image",
        "value": {"x": 10, "y": 10, "width": 30, "height": 30, "rectanglelabels": ["Car"]},
    }
    rect["value"].update(value)
    return interactive_body([rect])


TYPE_CONFUSION = {
    "data as a string": _with_task(data="image.png"),
    "drafts as a list of strings": _with_task(drafts=["a", "b"]),
    "drafts as a dict": _with_task(drafts={"user": 3}),
    "region value as a string": _with_value("x=3"),
    "region value as a list": _with_value([1, 2]),
    "labels as a dict": interactive_body(
        [click(label=None) | {"value": {"x": 5, "y": 5, "keypointlabels": {"a": 1}}}]
    ),
    "labels as an int": interactive_body([click() | {"value": {"x": 5, "y": 5, "labels": 7}}]),
    "number value null": _with_control("number", {"number": None}),
    "number value a string": _with_control("number", {"number": "0.3"}),
    "number value a list": _with_control("number", {"number": [0.3]}),
    "textarea value a number": _with_control("textarea", {"text": 0.3}),
    "textarea value a dict": _with_control("textarea", {"text": {"a": "0.3"}}),
    "rotation a string": _rectangle(rotation="abc"),
    "rotation a list": _rectangle(rotation=[1]),
    "region id a list": interactive_body([click(region_id=["a"])]),
    "region id a dict": interactive_body([click(region_id={"a": 1})]),
    "task id too large": _with_task(id=BIG_ID),
    "task id negative": _with_task(id=-1),
    "project id too large": {**interactive_body([click()]), "project": f"{BIG_ID}.17"},
    "original_width zero": interactive_body([click() | {"original_width": 0}]),
    "original_height negative": interactive_body([click() | {"original_height": -96}]),
    "context result a string": {**interactive_body([]), "params": {"context": {"result": "x"}}},
    "params a list": {**interactive_body([]), "params": [1]},
    "tasks a dict": {**interactive_body([]), "tasks": {"id": 1}},
    "label_config a number": {**interactive_body([click()]), "label_config": 3},
    "x a huge integer": interactive_body([click(x=10**400)]),
}


@pytest.mark.parametrize("body", TYPE_CONFUSION.values(), ids=TYPE_CONFUSION.keys())
def test_type_confusion_in_predict_is_a_400(client, body) -> None:
    assert_clear_error(client.post("/predict", json=body), 400)


def test_results_of_unknown_types_are_ignored_whatever_their_type_field(client) -> None:
    for kind in (["number"], {"a": 1}, 3, None):
        body = interactive_body([click(), {**click("k2"), "type": kind}])
        answer = client.post("/predict", json=body)
        assert answer.status_code == 200, answer.get_json()
        assert len(answer.get_json()["results"][0]["result"]) == 1


def test_a_valid_click_still_gets_a_mask(client) -> None:
    answer = client.post("/predict", json=interactive_body([click()]))
    assert answer.status_code == 200, answer.get_json()
    (result,) = answer.get_json()["results"][0]["result"]
    assert (result["original_height"], result["original_width"]) == (96, 128)


def test_validation_messages_name_the_field(client) -> None:
    message = assert_clear_error(client.post("/predict", json=_with_task(drafts=["a"])), 400)
    assert message.startswith("tasks.0.drafts.0")
    message = assert_clear_error(client.post("/predict", json=_rectangle(rotation="abc")), 400)
    assert "rotation" in message and "number" in message


# ----------------------------------------------------------------- sizes


def test_original_size_over_the_pixel_limit_is_refused_before_any_resize(client) -> None:
    body = interactive_body([click() | {"original_width": 24000, "original_height": 18000}])
    assert "more than the limit" in assert_clear_error(client.post("/predict", json=body), 400)


def test_original_size_of_another_image_is_refused(client) -> None:
    body = interactive_body([click() | {"original_width": 200, "original_height": 50}])
    assert "does not match" in assert_clear_error(client.post("/predict", json=body), 400)


def test_original_size_of_a_rescaled_copy_is_served_at_that_size(client) -> None:
    body = interactive_body([click() | {"original_width": 256, "original_height": 192}])
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200, answer.get_json()
    (result,) = answer.get_json()["results"][0]["result"]
    assert (result["original_height"], result["original_width"]) == (192, 256)
    assert decode_rle(result["value"]["rle"]).size == 192 * 256 * 4


def test_more_tasks_than_the_limit_are_refused(client) -> None:
    body = {"tasks": [TASK] * (MAX_TASKS_PER_PREDICT + 1), "label_config": CONFIG}
    message = assert_clear_error(client.post("/predict", json=body), 400)
    assert message.startswith("tasks") and str(MAX_TASKS_PER_PREDICT) in message


def test_large_label_configs_are_refused(client) -> None:
    huge = "<View>" + "<Header value='x'/>" * 20_000 + "</View>"  # about 400 KB
    message = assert_clear_error(
        client.post("/predict", json=interactive_body([]) | {"label_config": huge}), 400
    )
    assert "label_config" in message
    answer = client.post("/setup", json={"project": "3.1", "schema": huge})
    assert (
        "label_config" in assert_clear_error(answer, 400) or "schema" in answer.get_json()["error"]
    )


def test_request_bodies_over_the_limit_get_a_json_413(tmp_path, tiny_model) -> None:
    app, _ = build_backend(tmp_path, tiny_model, UNSAMV2_MAX_REQUEST_BYTES="65536")
    client = app.test_client()
    body = interactive_body([click()]) | {"padding": "x" * 70_000}
    message = assert_clear_error(client.post("/predict", json=body), 413)
    assert "UNSAMV2_MAX_REQUEST_BYTES" in message
    assert_clear_error(
        client.post("/webhook", json=body, headers={"X-UnSAMv2-Secret": SECRET}), 413
    )
    answer = client.post(
        "/api/function_invocations",
        json={"image": "A" * 70_000},
        headers={"x-nuclio-function-name": "unsamv2-interactor-fine"},
    )
    assert_clear_error(answer, 413)
    assert client.post("/predict", json=interactive_body([click()])).status_code == 200


# ----------------------------------------------------------------- /setup limits, pre-annotation

SETUP_LIMITS = {
    "points_per_side": (48, 32),
    "max_regions": (1000, 200),
}


@pytest.mark.parametrize(("key", "values"), SETUP_LIMITS.items())
def test_setup_refuses_work_knobs_above_their_limit(client, key, values) -> None:
    over, limit = values
    body = {"project": "40.1", "extra_params": {"preannotate": True, key: over}}
    message = assert_clear_error(client.post("/setup", json=body), 400)
    assert key in message and str(limit) in message
    body["extra_params"][key] = limit
    assert client.post("/setup", json=body).status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        {"pred_iou_thresh": "0"},
        {"pred_iou_thresh": float("nan")},
        {"preannotate_label": ["Car"]},
        {"default_granularity": "0.3"},
        {"points_per_side": 16.0},
        {"preannotate": 1},
        "preannotate=true",
    ],
)
def test_setup_refuses_badly_typed_extra_params(client, extra) -> None:
    assert_clear_error(client.post("/setup", json={"project": "41.1", "extra_params": extra}), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"project": f"{BIG_ID}.1"},
        {"project": ["1"]},
        {"project": "1.1", "schema": 5},
        {"project": "1.1", "hostname": {"a": 1}},
    ],
)
def test_setup_refuses_bad_shapes(client, body) -> None:
    assert_clear_error(client.post("/setup", json=body), 400)


def test_options_stored_before_the_limits_are_not_served(backend) -> None:
    app, store = backend
    with store.session() as session:
        project = label_studio_project(session, 42)
        project.config = {"preannotate": True, "points_per_side": 48, "max_regions": 1000}
    settings = app.extensions["unsamv2"].project_settings(42)
    assert settings.preannotate is True
    assert (settings.points_per_side, settings.max_regions) == (16, 30)  # the defaults


def test_preannotation_past_the_deadline_answers_partially(tmp_path, tiny_model) -> None:
    app, _ = build_backend(tmp_path, tiny_model, UNSAMV2_PREANNOTATE_DEADLINE_S="0")
    client = app.test_client()
    setup = {"project": "7.1", "extra_params": {"preannotate": True, "points_per_side": 32}}
    assert client.post("/setup", json=setup).status_code == 200
    body = {"tasks": [TASK, {**TASK, "id": 6}], "project": "7.1", "label_config": CONFIG}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200, answer.get_json()
    results = answer.get_json()["results"]
    assert len(results) == 2
    assert all("partial" in r["model_version"] for r in results)
    assert all(r["result"] == [] for r in results)


def test_preannotation_within_the_deadline_is_complete(client) -> None:
    setup = {
        "project": "8.1",
        "extra_params": {"preannotate": True, "points_per_side": 4, "pred_iou_thresh": 0},
    }
    assert client.post("/setup", json=setup).status_code == 200
    body = {"tasks": [TASK], "project": "8.1", "label_config": CONFIG}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200, answer.get_json()
    assert "partial" not in answer.get_json()["results"][0]["model_version"]


# ----------------------------------------------------------------- ids, /webhook, /jobs

WEBHOOK_BODIES = {
    "project id too large": {"action": "START_TRAINING", "project": {"id": BIG_ID}},
    "project id a string": {"action": "START_TRAINING", "project": {"id": "12"}},
    "annotation id too large": {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 1},
        "annotation": {"id": BIG_ID, "task": 5, "result": []},
    },
    "annotation task id too large": {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 1},
        "annotation": {"id": 3, "task": BIG_ID, "result": []},
    },
    "annotation result a dict": {
        "action": "ANNOTATION_UPDATED",
        "project": {"id": 1},
        "annotation": {"id": 3, "task": 5, "result": {"a": 1}},
    },
    "task a string": {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 1},
        "annotation": {"id": 3},
        "task": "5",
    },
    "deleted ids too large": {
        "action": "ANNOTATIONS_DELETED",
        "project": {"id": 1},
        "annotations": [{"id": BIG_ID}],
    },
    "deleted annotations strings": {
        "action": "ANNOTATIONS_DELETED",
        "project": {"id": 1},
        "annotations": ["3"],
    },
    "project title a list": {"action": "START_TRAINING", "project": {"id": 1, "title": [1]}},
    "action a number": {"action": 3},
}


@pytest.mark.parametrize("body", WEBHOOK_BODIES.values(), ids=WEBHOOK_BODIES.keys())
def test_bad_webhook_events_are_400(client, body) -> None:
    assert_clear_error(webhook(client, body), 400)


def test_valid_annotation_events_are_still_stored(client) -> None:
    body = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 77, "title": "P"},
        "annotation": {"id": 9, "task": 5, "result": [], "completed_by": 3},
    }
    answer = webhook(client, body)
    assert answer.status_code == 200 and answer.get_json()["status"] == "stored"


def test_job_ids_too_large_are_not_found(client) -> None:
    assert_clear_error(client.get(f"/jobs/{BIG_ID}"), 404)
    assert_clear_error(client.get("/jobs?limit=²"), 400)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_non_ascii_credentials_are_compared_not_crashed_on(tmp_path, tiny_model) -> None:
    app, _ = build_backend(
        tmp_path,
        tiny_model,
        UNSAMV2_BASIC_AUTH_USER="ls",
        UNSAMV2_BASIC_AUTH_PASS="pässwort",
    )
    client = app.test_client()
    assert_clear_error(client.get("/versions", headers=_basic("lś", "x")), 401)
    assert_clear_error(client.get("/versions", headers=_basic("ls", "pässwörd")), 401)
    assert client.get("/versions", headers=_basic("ls", "pässwort")).status_code == 200
    start = {"action": "START_TRAINING", "project": {"id": BIG_ID}}
    headers = {"X-UnSAMv2-Secret": "sécret".encode().decode("latin-1")}
    assert_clear_error(client.post("/webhook", json=start, headers=headers), 401)
    assert_clear_error(client.post("/webhook", json=start, headers=_basic("lś", "pässwort")), 401)
    # the right basic auth passes the webhook check, then the id is refused
    assert_clear_error(client.post("/webhook", json=start, headers=_basic("ls", "pässwort")), 400)

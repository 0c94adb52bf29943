"""The backend end to end in-process: /setup, /predict (interactive, batch), /webhook, /metrics.

A tiny random model serves from a real official-format checkpoint file; task images are local
files served the way Label Studio's local storage does (``/data/local-files/?d=...``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

from core_model.checkpoint import official_state_dict
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import HumanMask, Job, PredictionRecord
from labeling_pipeline.worker.app import create_celery_app
from ml_backend.label_studio.app import create_app
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

CONFIG = shipped_config()


@pytest.fixture
def backend(tmp_path, make_tiny, scene_image):
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(make_tiny())}, checkpoint)
    files = tmp_path / "files"
    files.mkdir()
    Image.fromarray(scene_image).save(files / "scene.png")
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_LOCAL_FILES_ROOT": str(files),
            "UNSAMV2_WEBHOOK_SECRET": "hook-secret",
            "UNSAMV2_DEFAULT_GRANULARITY": "0.6",
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    app = create_app(
        settings,
        runtime=runtime,
        store=store,
        start_runtime=False,
        celery=create_celery_app(settings.pipeline),
    )
    return app.test_client(), store, runtime


TASK = {
    "id": 5,
    "data": {"image": "/data/local-files/?d=scene.png"},
    "drafts": [{"user": 3, "result": []}],
}


def click(region_id, x, y, label="Car @0.5", positive=True):
    return {
        "id": region_id,
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 128,
        "original_height": 96,
        "is_positive": positive,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
    }


def interactive(client, results, task=TASK):
    return client.post(
        "/predict",
        json={
            "tasks": [task],
            "project": "12.1700000000",
            "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": {"result": results}},
        },
    )


def decode(result) -> np.ndarray:
    h, w = result["original_height"], result["original_width"]
    return decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3]


def test_health_and_setup_report_the_loaded_model(backend) -> None:
    client, store, runtime = backend
    health = client.get("/health").get_json()["model"]
    assert health["state"] == "ready" and health["granularity_mode"] == "granularity"
    setup = client.post(
        "/setup",
        json={
            "project": "12.1700000000",
            "schema": CONFIG,
            "hostname": "http://localhost:8080",
            "access_token": "t",
            "extra_params": {"default_granularity": 0.4},
        },
    )
    assert setup.get_json()["model_version"] == runtime.model_version.strip()
    assert setup.get_json()["model_version"].startswith("test-tiny-official-")
    bad = client.post("/setup", json={"project": "12.1", "extra_params": {"nope": 1}})
    assert bad.status_code == 400 and "unknown extra params" in bad.get_json()["error"]


def test_click_becomes_a_brush_mask_of_the_image_size(backend) -> None:
    client, store, runtime = backend
    answer = interactive(
        client,
        [
            click("k1", 50, 45),
            {
                "id": "k1",
                "type": "number",
                "from_name": "granularity",
                "to_name": "image",
                "value": {"number": 0.3},
            },
        ],
    )
    assert answer.status_code == 200, answer.get_json()
    entry = answer.get_json()["results"][0]
    result = entry["result"][0]
    assert result["type"] == "brushlabels" and result["value"]["brushlabels"] == ["Car"]
    assert (result["from_name"], result["to_name"]) == ("mask", "image")
    mask = decode(result)
    assert mask.shape == (96, 128) and set(np.unique(mask)) <= {0, 255}
    assert entry["model_version"] == runtime.model_version
    with store.session() as s:
        record = s.query(PredictionRecord).one()
        assert (record.ls_task_id, record.result_id, record.granularity) == (5, result["id"], 0.3)
    # same group, one more click: same id (replaces the suggestion), new mask
    again = interactive(client, [click("k1", 50, 45), click("k2", 10, 10, positive=False)])
    assert again.get_json()["results"][0]["result"][0]["id"] == result["id"]


def test_granularity_changes_the_answer(backend) -> None:
    client, _, _ = backend
    fine = interactive(client, [click("a", 50, 45, label="Car @0.2")]).get_json()
    whole = interactive(client, [click("a", 50, 45, label="Car @1")]).get_json()
    assert (
        fine["results"][0]["result"][0]["value"]["rle"]
        != whole["results"][0]["result"][0]["value"]["rle"]
    )


def test_a_remembered_box_is_combined_with_later_clicks(backend) -> None:
    client, store, _ = backend
    box = {
        "id": "b1",
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "image",
        "original_width": 128,
        "original_height": 96,
        "value": {
            "x": 20,
            "y": 20,
            "width": 50,
            "height": 50,
            "rotation": 0,
            "rectanglelabels": ["Car"],
        },
    }
    boxed = interactive(client, [box]).get_json()["results"][0]["result"][0]
    clicked = interactive(client, [click("k", 40, 40)]).get_json()["results"][0]["result"][0]
    other_user = interactive(
        client, [click("k", 40, 40)], task={**TASK, "drafts": [{"user": 9}]}
    ).get_json()
    assert boxed["value"]["brushlabels"] == ["Car"]
    assert clicked["value"]["rle"] != other_user["results"][0]["result"][0]["value"]["rle"]


def test_empty_context_and_no_preannotation(backend) -> None:
    client, _, _ = backend
    assert interactive(client, []).get_json() == {"results": []}
    plain = client.post(
        "/predict",
        json={
            "tasks": [TASK],
            "project": "12.1",
            "label_config": CONFIG,
            "params": {"context": None},
        },
    )
    assert plain.get_json() == {"results": []}


def test_batch_preannotation_when_the_project_enables_it(backend) -> None:
    client, _, _ = backend
    client.post(
        "/setup",
        json={
            "project": "12.1",
            "schema": CONFIG,
            "extra_params": {
                "preannotate": True,
                "max_regions": 4,
                "points_per_side": 4,
                "pred_iou_thresh": 0.0,
                "stability_score_thresh": 0.0,
                "preannotate_label": "Person",
            },
        },
    )
    answer = client.post(
        "/predict",
        json={
            "tasks": [TASK, {**TASK, "id": 6}],
            "project": "12.1",
            "label_config": CONFIG,
            "params": {"context": None},
        },
    )
    results = answer.get_json()["results"]
    assert len(results) == 2
    regions = results[0]["result"]
    assert 1 <= len(regions) <= 4
    assert len({r["id"] for r in regions}) == len(regions)
    assert all(r["value"]["brushlabels"] == ["Person"] for r in regions)
    assert all(decode(r).shape == (96, 128) for r in regions)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"tasks": [], "label_config": CONFIG}, 400, "tasks"),
        ({"tasks": [TASK]}, 400, "label_config"),
        ({"tasks": [TASK], "label_config": "<View", "params": {}}, 400, "XML"),
        (
            {
                "tasks": [{"id": 5, "data": {}}],
                "label_config": CONFIG,
                "params": {"context": {"result": [click("a", 1, 1)]}},
            },
            400,
            "no image",
        ),
        (
            {
                "tasks": [{"id": 5, "data": {"image": "/data/local-files/?d=missing.png"}}],
                "label_config": CONFIG,
                "params": {"context": {"result": [click("a", 1, 1)]}},
            },
            422,
            "does not exist",
        ),
        (
            {
                "tasks": [TASK],
                "label_config": CONFIG,
                "params": {"context": {"result": [click("a", 150, 1)]}},
            },
            400,
            "outside",
        ),
        (
            {
                "tasks": [TASK],
                "label_config": CONFIG,
                "params": {"context": {"result": [click("a", 1, 1, label="Bus @1")]}},
            },
            400,
            "Bus",
        ),
    ],
)
def test_bad_predict_requests_get_clear_json_errors(backend, body, status, message) -> None:
    client, _, _ = backend
    answer = client.post("/predict", json=body)
    assert answer.status_code == status, answer.get_json()
    assert message in answer.get_json()["error"]
    assert "Traceback" not in answer.get_data(as_text=True)


def _annotation_event(action: str, annotation_id: int, results, cancelled=False):
    return {
        "action": action,
        "project": {"id": 12, "title": "cars"},
        "task": {"id": 5, "data": TASK["data"]},
        "annotation": {
            "id": annotation_id,
            "task": 5,
            "was_cancelled": cancelled,
            "completed_by": 3,
            "result": results,
        },
    }


def test_webhook_stores_replaces_and_deletes_accepted_masks(backend) -> None:
    client, store, _ = backend
    suggestion = interactive(client, [click("k1", 50, 45, label="Car @0.2")]).get_json()
    accepted = suggestion["results"][0]["result"][0]
    headers = {"X-UnSAMv2-Secret": "hook-secret"}
    event = _annotation_event("ANNOTATION_CREATED", 101, [accepted])
    assert client.post("/webhook", json=event).status_code == 401
    answer = client.post("/webhook", json=event, headers=headers)
    assert answer.get_json()["status"] == "stored" and answer.get_json()["masks"] == 1
    with store.session() as s:
        mask = s.query(HumanMask).one()
        assert (mask.label, mask.granularity, mask.ls_task_id) == ("Car", 0.2, 5)
    updated = _annotation_event("ANNOTATION_UPDATED", 101, [accepted, {**accepted, "id": "x2"}])
    client.post("/webhook?secret=hook-secret", json=updated)
    with store.session() as s:
        assert s.query(HumanMask).count() == 2  # replaced, not appended
    skipped = _annotation_event("ANNOTATION_CREATED", 102, [accepted], cancelled=True)
    assert client.post("/webhook", json=skipped, headers=headers).get_json()["status"] == "ignored"
    deleted = {"action": "ANNOTATIONS_DELETED", "project": {"id": 12}, "annotations": [{"id": 101}]}
    assert client.post("/webhook", json=deleted, headers=headers).get_json()["masks"] == 2
    other = {"action": "TASKS_CREATED", "project": {"id": 12}}
    assert client.post("/webhook", json=other, headers=headers).get_json()["status"] == "ignored"
    with store.session() as s:
        assert s.query(HumanMask).count() == 0


def test_start_training_without_a_training_worker_is_a_clear_error(backend) -> None:
    client, store, _ = backend
    answer = client.post(
        "/webhook",
        json={"action": "START_TRAINING", "project": {"id": 12}},
        headers={"X-UnSAMv2-Secret": "hook-secret"},
    )
    if answer.status_code == 200:  # training installed: a job is queued
        job_id = answer.get_json()["job_id"]
        with store.session() as s:
            assert s.get(Job, job_id).kind == "train"
    else:
        assert answer.status_code == 503 and "training" in answer.get_json()["error"]


def test_metrics_count_requests_and_cache_hits(backend) -> None:
    client, _, _ = backend
    interactive(client, [click("a", 50, 45)])
    interactive(client, [click("a", 50, 45)])
    text = client.get("/metrics").get_data(as_text=True)
    assert 'unsamv2_http_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert "unsamv2_http_request_seconds_bucket" in text
    assert "unsamv2_embedding_cache_hits_total 1.0" in text
    assert 'unsamv2_model_info{granularity_mode="granularity"' in text

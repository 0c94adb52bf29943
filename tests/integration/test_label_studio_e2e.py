"""End to end against a real Label Studio 1.23 (its own virtual environment, 127.0.0.1).

Label Studio's executable comes from UNSAMV2_TEST_LABEL_STUDIO (CI installs it in a separate
virtual environment). The backend runs as `unsamv2 serve` with a tiny random model from a real
checkpoint file, plus a worker. Steps: project with the shipped config, image upload, connect
the backend (`unsamv2 ls-connect`), an interactive click with a per-region granularity, submit
the annotation (webhook -> store), Start training (-> job), publish a model version (-> /setup),
then a second project: after the first project's lineage gets its own version, each project is
served (and Label Studio records) a different version.
"""

from __future__ import annotations

import io

import numpy as np
import requests
import torch
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

from core_model.checkpoint import save_finetuned_checkpoint
from labeling_pipeline.model_files.lineage import commit_version
from labeling_pipeline.model_files.registry import ModelRegistry
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import HumanMask, Job
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.settings import Settings

from helpers import (
    free_port,
    label_studio_caller,
    ls_connect,
    running_backend,
    tiny_backend_env,
    wait_for,
)

AUTH = ("labelstudio", "e2e-pass")  # Label Studio sends it; Start training relies on it


def test_label_studio_round_trip(label_studio, tmp_path, make_tiny, scene_image) -> None:
    ls_url, token = label_studio["url"], label_studio["token"]
    call = label_studio_caller(ls_url, token)

    # the backend (tiny random model from a real checkpoint file) and a worker
    port = free_port()
    env = tiny_backend_env(
        tmp_path,
        make_tiny(),
        port=port,
        auth=AUTH,
        webhook_secret="e2e-secret",
        label_studio=(ls_url, token),
        UNSAMV2_MODEL_POLL_S="0.5",
    )
    backend_url = f"http://127.0.0.1:{port}"
    with running_backend(env, backend_url, tmp_path, auth=AUTH, worker=True):
        _run_round_trip(call, env, backend_url, scene_image, Settings.from_env(env))


def _run_round_trip(call, env, backend_url, scene_image, settings) -> None:
    project = call(
        "POST", "/api/projects", json={"title": "unsamv2-e2e", "label_config": shipped_config()}
    )
    png = io.BytesIO()
    Image.fromarray(scene_image).save(png, format="PNG")
    imported = call(
        "POST",
        f"/api/projects/{project['id']}/import?return_task_ids=true",
        files={"file": ("scene.png", png.getvalue(), "image/png")},
    )
    task_id = imported["task_ids"][0]

    output = ls_connect(
        project["id"], backend_url, env, "--extra-params", '{"default_granularity": 0.4}'
    )
    assert "sends the secret header" in output
    ml = call("GET", f"/api/ml?project={project['id']}")[0]
    assert ml["state"] == "CO"

    keypoint = {
        "id": "kp1",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "origin": "manual",
        "original_width": 128,
        "original_height": 96,
        "image_rotation": 0,
        "is_positive": True,
        "value": {
            "x": 46.9,
            "y": 46.9,
            "width": 0.5,
            "keypointlabels": ["Car @0.5"],
            "labels": ["Car @0.5"],
        },
    }
    number = {
        "id": "kp1",
        "type": "number",
        "from_name": "granularity",
        "to_name": "image",
        "value": {"number": 0.3},
    }
    answer = call(
        "POST",
        f"/api/ml/{ml['id']}/interactive-annotating",
        json={"task": task_id, "context": {"result": [keypoint, number]}},
    )
    assert "errors" not in answer, answer
    result = answer["data"]["result"][0]
    mask = decode_rle(result["value"]["rle"]).reshape(96, 128, 4)[:, :, 3]
    assert mask.shape == scene_image.shape[:2] and set(np.unique(mask)) <= {0, 255}
    assert result["value"]["brushlabels"] == ["Car"]

    # the annotator accepts and submits: Label Studio's webhook stores the mask
    call("POST", f"/api/tasks/{task_id}/annotations", json={"result": [result]})
    store = Store(settings.pipeline.resolved_database_url)

    def stored_masks() -> list[tuple[str, float | None]]:
        with store.session() as s:
            return [(m.label, m.granularity) for m in s.query(HumanMask).all()]

    assert wait_for(stored_masks, 30, "the webhook to store the mask") == [("Car", 0.3)]

    # Start training -> a queued training job
    call("POST", f"/api/ml/{ml['id']}/train", json={})

    def train_jobs() -> int:
        with store.session() as s:
            return s.query(Job).filter(Job.kind == "train").count()

    assert wait_for(train_jobs, 30, "a training job") == 1

    # a newly published version reaches /setup, and Label Studio records it
    registry = ModelRegistry(store, settings.pipeline.models_dir)
    with registry.staging() as staging:
        save_finetuned_checkpoint(
            staging / "model.pt",
            base_checkpoint=settings.pipeline.checkpoint,
            granularity_state={
                k: v
                for k, v in torch.load(settings.pipeline.checkpoint, weights_only=True)[
                    "model"
                ].items()
                if k.startswith(
                    (
                        "sam_prompt_encoder.granularity",
                        "sam_prompt_encoder.fourier",
                        "sam_mask_decoder.gra_",
                    )
                )
            },
        )
        version = commit_version(
            registry,
            staging,
            model="test-tiny",
            scope="global",
            publish=True,
            metadata={"e2e": True},
        )

    def setup_version() -> bool:
        body = requests.post(
            f"{backend_url}/setup", json={"project": f"{project['id']}.1"}, auth=AUTH, timeout=5
        ).json()
        return body["model_version"] == version.name

    wait_for(setup_version, 60, "the backend to serve the new version", interval=0.5)
    assert call("GET", f"/api/ml/{ml['id']}")["model_version"] == version.name
    _two_projects(call, env, backend_url, project["id"], settings, version.name)


def _setup_version(backend_url: str, ls_project: int) -> str:
    body = requests.post(
        f"{backend_url}/setup", json={"project": f"{ls_project}.1"}, auth=AUTH, timeout=5
    ).json()
    return str(body["model_version"])


def _two_projects(call, env, backend_url, first: int, settings, global_version: str) -> None:
    """Project A retrains (its own version); project B keeps global's; LS records both."""
    second = call(
        "POST", "/api/projects", json={"title": "unsamv2-e2e-b", "label_config": shipped_config()}
    )["id"]
    ls_connect(second, backend_url, env)
    store = Store(settings.pipeline.resolved_database_url)
    registry = ModelRegistry(store, settings.pipeline.models_dir)
    with registry.staging() as staging:  # what a passing training run of A commits
        current = settings.pipeline.models_dir / global_version / "model.pt"
        (staging / "model.pt").write_bytes(current.read_bytes())
        own = commit_version(
            registry, staging, model="test-tiny", scope=f"ls:{first}", publish=True, metadata={}
        )
    wait_for(
        lambda: _setup_version(backend_url, first) == own.name,
        60,
        "project A to be served its own version",
        interval=0.5,
    )
    assert _setup_version(backend_url, second) == global_version
    ml_a = call("GET", f"/api/ml?project={first}")[0]
    ml_b = call("GET", f"/api/ml?project={second}")[0]
    assert call("GET", f"/api/ml/{ml_a['id']}")["model_version"] == own.name
    assert call("GET", f"/api/ml/{ml_b['id']}")["model_version"] == global_version
    versions_a = requests.get(
        f"{backend_url}/versions", params={"project": first}, auth=AUTH, timeout=5
    ).json()
    assert versions_a["current"] == own.name and own.name in versions_a["versions"]

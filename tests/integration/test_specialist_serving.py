"""Label Studio: a project with a current task specialist gets its masks when a task is opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

from core_model.checkpoint import official_state_dict
from labeling_pipeline.specialist.gate import SpecialistGate
from labeling_pipeline.specialist.service import train_specialist
from labeling_pipeline.specialist.synthetic import store_task_project, template_task
from labeling_pipeline.specialist.trainer import SpecialistTrainConfig
from labeling_pipeline.store import Store
from labeling_pipeline.worker.app import create_celery_app
from ml_backend.label_studio.app import create_app
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

CONFIG = shipped_config()
TASK = {"id": 9, "data": {"image": "/data/local-files/?d=scene.png"}}


@pytest.fixture
def backend(tmp_path: Path, make_tiny: Any) -> tuple[Any, Store, Settings]:
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(make_tiny())}, checkpoint)
    files = tmp_path / "files"
    files.mkdir()
    scenes = template_task(6, seed=7, height=96, width=128, template="any")
    Image.fromarray(scenes[0].image).save(files / "scene.png")
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_LOCAL_FILES_ROOT": str(files),
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    store_task_project(
        store,
        settings.pipeline.images_dir,
        "cars",
        scenes,
        label="Car",
        other_label="Person",
        label_config=CONFIG,
        ls_project_id=12,
    )
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    app = create_app(
        settings,
        runtime=runtime,
        store=store,
        start_runtime=False,
        celery=create_celery_app(settings.pipeline),
    )
    return app.test_client(), store, settings


def _open_task(client: Any) -> list[dict[str, Any]]:
    answer = client.post(
        "/predict", json={"tasks": [TASK], "project": "12.1700000000", "label_config": CONFIG}
    )
    assert answer.status_code == 200, answer.get_json()
    return list(answer.get_json()["results"])


def train_uniform_specialist(store: Store, settings: Settings, run_dir: Path, bias: float) -> str:
    """Train a tiny specialist of label Car, then make it say p = sigmoid(bias) everywhere.

    Returns its version. The model file is edited (head weight 0, bias `bias`) so what the
    specialist predicts is known exactly.
    """
    run = train_specialist(
        store,
        models_dir=settings.pipeline.models_dir,
        run_dir=run_dir,
        project="ls:12",
        labels=["Car"],
        config=SpecialistTrainConfig(variant="test-tiny", epochs=1),
        gate=SpecialistGate(min_miou=0.0, min_dice=0.0),
        min_images=2,
    )
    path = settings.pipeline.models_dir / run.version / "model.pt"
    saved = torch.load(path, weights_only=True)
    saved["state"]["decoder.head.weight"].zero_()
    saved["state"]["decoder.head.bias"].fill_(bias)
    torch.save(saved, path)
    return run.version


def test_opened_task_gets_specialist_masks_once_one_passed_its_gate(
    backend: tuple[Any, Store, Settings], tmp_path: Path
) -> None:
    client, store, settings = backend
    assert _open_task(client) == []  # no specialist yet: the usual answer (prefetch only)
    # the specialist sees the whole image as the label
    version = train_uniform_specialist(store, settings, tmp_path / "run", 8.0)

    [entry] = _open_task(client)
    assert entry["model_version"] == f"specialist {version}"
    [region] = entry["result"]
    assert region["value"]["brushlabels"] == ["Car"] and region["from_name"] == "mask"
    assert region["score"] > 0.99 and entry["score"] == pytest.approx(region["score"], abs=1e-3)
    h, w = region["original_height"], region["original_width"]
    mask = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
    assert (h, w) == (96, 128) and np.count_nonzero(mask) == 96 * 128


def test_setup_reports_the_current_specialist_so_batch_predictions_skip_its_tasks(
    backend: tuple[Any, Store, Settings], tmp_path: Path
) -> None:
    """Label Studio skips tasks holding a prediction of the version /setup reports."""
    client, store, settings = backend

    def setup(project: str) -> str:
        answer = client.post("/setup", json={"project": project, "schema": CONFIG})
        assert answer.status_code == 200, answer.get_json()
        return str(answer.get_json()["model_version"])

    served = setup("12.1700000000")
    assert not served.startswith("specialist ")
    version = train_uniform_specialist(store, settings, tmp_path / "run", 8.0)
    [entry] = _open_task(client)
    assert setup("12.1700000000") == entry["model_version"] == f"specialist {version}"
    assert setup("13.1700000000") == served  # another project: no specialist of its own

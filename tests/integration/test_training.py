"""Fine-tuning end to end on CPU with the tiny model: train, gate, resume, kill, UnSAMv2+."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core_model.build import build_model
from core_model.checkpoint import official_state_dict
from core_model.masks import decode_coco_rle, encode_coco_rle
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts
from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.pseudo_labels.extractors import build_feature_extractor
from labeling_pipeline.store import MaskRecord, Store
from labeling_pipeline.store.images import cache_image_bytes
from labeling_pipeline.store.masks import human_masks_by_image
from labeling_pipeline.store.models import Job, ModelVersion, TrainingRun
from labeling_pipeline.store.repository import (
    add_image,
    get_or_create_project,
    project_images,
    replace_human_masks,
)
from labeling_pipeline.store.versions import current_version
from labeling_pipeline.training.config import TrainConfig
from labeling_pipeline.training.data import training_images
from labeling_pipeline.training.loop import Trainer
from labeling_pipeline.worker.app import create_celery_app
from labeling_pipeline.worker.jobs import submit_training
from ml_backend.settings import Settings

from helpers import wait_for

SMALL = SceneConfig(height=96, width=128, min_objects=1, max_objects=2, clutter_count=6)
QUICK = {
    "steps": 8,
    "lr": 1e-3,
    "min_lr": 1e-4,
    "images_per_step": 2,
    "max_masks_per_image": 6,
    "correction_clicks": 1,
    "loss_at_image_size": False,
    "checkpoint_every": 4,
}


@pytest.fixture
def project(tmp_path, service_env, make_tiny):
    """A store with a project of 2 synthetic images, each with one accepted mask (whole, part)."""
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(make_tiny(3))}, checkpoint)
    service_env.update({"UNSAMV2_MODEL": "test-tiny", "UNSAMV2_CHECKPOINT": str(checkpoint)})
    settings = Settings.from_env(service_env).pipeline
    store = Store(settings.resolved_database_url)
    with store.session() as s:
        project_id = get_or_create_project(s, "synthetic").id
    scenes = [generate_scene(seed, SMALL) for seed in (1, 2)]
    image_ids: list[int] = []
    for index, scene in enumerate(scenes):
        buffer = io.BytesIO()
        Image.fromarray(scene.image).save(buffer, format="PNG")
        cached = cache_image_bytes(buffer.getvalue(), settings.images_dir)
        with store.session() as s:
            image = add_image(
                s,
                project_id,
                sha256=cached.sha256,
                local_path=str(cached.path),
                width=128,
                height=96,
                ls_task_id=10 + index,
            )
            image_id = image.id
            image_ids.append(image.id)
    whole = scenes[0].objects[0].mask
    with store.session() as s:
        replace_human_masks(
            s,
            project_id,
            ls_task_id=10,
            annotation_id=2,
            image_id=image_ids[0],
            masks=[MaskRecord("w1", "Car", encode_coco_rle(whole), 128, 96, int(whole.sum()))],
        )
    part = scenes[-1].objects[0].parts[0].mask
    with store.session() as s:
        replace_human_masks(
            s,
            project_id,
            ls_task_id=11,
            annotation_id=1,
            image_id=image_id,
            masks=[MaskRecord("r1", "Car", encode_coco_rle(part), 128, 96, int(part.sum()))],
        )
    return {
        "settings": settings,
        "store": store,
        "project_id": project_id,
        "env": service_env,
        "human_part": part,
        "checkpoint": checkpoint,
    }


def test_training_task_lowers_loss_and_publishes_a_loadable_version(project, start_service):
    settings, store = project["settings"], project["store"]
    start_service(["worker", "--queues", "training"], project["env"]).wait_log("ready")
    job_id = submit_training(
        create_celery_app(settings), store, project["project_id"], reason="test", config=QUICK
    )
    wait_for(lambda: _job(store, job_id).status in ("done", "failed"), 300, "the training job")
    job = _job(store, job_id)
    assert job.status == "done", job.message
    assert job.result["loss_last"] < job.result["loss_first"]
    # one of the two masked images is held out; one held-out mask cannot decide the gate
    assert job.result["human_masks"] == 1 and job.progress_done == job.progress_total == 8
    assert job.result["gate"]["decision"] == "undecided" and not job.result["published"]
    with store.session() as s:
        run = s.query(TrainingRun).filter_by(job_id=job_id).one()
        version = s.get(ModelVersion, run.model_version_id)
        assert version.status == "rejected" and version.scope == "project:1"
        assert current_version(s, "global") is None and current_version(s, "project:1") is None
        folder, model_name = Path(version.path), version.model
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["human_masks"] == 1 and metadata["held_out"]["masks"] == 1
    assert (folder / "report.md").is_file()
    run_dir = settings.data_dir / "training" / f"run-{run.id:05d}"
    assert (run_dir / "loss_curve.png").is_file() and (run_dir / "metrics.json").is_file()
    trained = build_model(model_name, folder / "model.pt")
    assert trained.info.checkpoint_kind == "finetuned"
    base = build_model(model_name, project["checkpoint"])
    image = generate_scene(1, SMALL).image
    prompts = Prompts.from_arrays([[64.0, 48.0]], [1])
    before = GranularityPredictor(base)
    after = GranularityPredictor(trained)
    a = before.predict(before.embed(image), prompts, granularity=0.5).low_res_logits
    b = after.predict(after.embed(image), prompts, granularity=0.5).low_res_logits
    assert not np.allclose(a, b)


def _job(store: Store, job_id: int) -> Job:
    with store.session() as s:
        return s.get(Job, job_id)


def test_human_masks_enter_the_divide_stage(project) -> None:
    """UnSAMv2+: the accepted part is in the training pseudo-labels, with a granularity."""
    from labeling_pipeline.training.project import _pseudo_labels

    settings, store = project["settings"], project["store"]
    with store.session() as s:
        humans = human_masks_by_image(s, project["project_id"])
        images = list(project_images(s, project["project_id"]))
    color = build_feature_extractor("color")
    pairs = _pseudo_labels(images, humans, settings.data_dir / "pl", color, {})
    annotations = json.loads(pairs[-1][1].read_text())["annotations"]
    human = [a for a in annotations if a.get("source") == "human"]
    assert len(human) == 1
    np.testing.assert_array_equal(decode_coco_rle(human[0]["segmentation"]), project["human_part"])
    assert 0.1 <= human[0]["granularity"] < 1.0  # a part of a whole: below the whole's 1.0


def _trainer(project, run_dir: Path, **overrides) -> Trainer:
    from labeling_pipeline.training.project import _pseudo_labels

    settings, store = project["settings"], project["store"]
    with store.session() as s:
        humans = human_masks_by_image(s, project["project_id"])
        images = list(project_images(s, project["project_id"]))
    pairs = _pseudo_labels(
        images,
        humans,
        settings.data_dir / "pl",
        build_feature_extractor("color"),
        {},
    )
    torch.manual_seed(0)
    model = build_model("test-tiny", project["checkpoint"])
    small = {
        **QUICK,
        "steps": 6,
        "images_per_step": 1,
        "max_masks_per_image": 4,
        "checkpoint_every": 3,
    }
    config = TrainConfig.from_mapping(small, **overrides)
    return Trainer(model, training_images(pairs), config, run_dir=run_dir)


def test_runs_are_deterministic_and_resume_exactly(project, tmp_path: Path) -> None:
    straight = _trainer(project, tmp_path / "a").train().losses
    assert straight == _trainer(project, tmp_path / "b").train().losses

    interrupted = _trainer(project, tmp_path / "c")

    def stop_after_four(step: int, total: int, loss: float) -> None:
        if step == 4:
            raise KeyboardInterrupt

    interrupted.on_step = stop_after_four
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    resumed = _trainer(project, tmp_path / "c").train()  # from the step-3 checkpoint
    assert resumed.steps == 6
    np.testing.assert_allclose(resumed.losses, straight, rtol=1e-5)


def test_a_killed_training_run_publishes_nothing(project) -> None:
    settings, store = project["settings"], project["store"]
    env = {**project["env"], "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ml_backend.cli",
            "train",
            "--project",
            "synthetic",
            "--steps",
            "400",
            "--set",
            "loss_at_image_size=false",
            "--set",
            "correction_clicks=1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def training() -> bool:
            with store.session() as s:
                job = s.query(Job).filter_by(kind="train").one_or_none()
                return job is not None and job.progress_done >= 2

        wait_for(training, 180, "training to make progress", interval=0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with store.session() as s:
        assert s.query(ModelVersion).count() == 0
        assert current_version(s, "global") is None
    models = settings.models_dir
    assert not models.exists() or not [p for p in models.iterdir() if not p.name.startswith(".")]

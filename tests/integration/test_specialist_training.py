"""Specialist training from a project's accepted masks: publish after the gate, refusals, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core_model.specialist import build_specialist, load_specialist, predict_probabilities
from labeling_pipeline.specialist.data import SpecialistDataError, check_sizes, to_model_frame
from labeling_pipeline.specialist.gate import SpecialistGate
from labeling_pipeline.specialist.losses import boundary_weights, structure_loss
from labeling_pipeline.specialist.metrics import iou_dice, s_measure
from labeling_pipeline.specialist.service import (
    active_specialist_paths,
    list_specialists,
    train_specialist,
)
from labeling_pipeline.specialist.synthetic import store_task_project, template_task
from labeling_pipeline.specialist.trainer import SpecialistTrainConfig, SpecialistTrainer
from labeling_pipeline.store import Store

TINY = SpecialistTrainConfig(variant="test-tiny", epochs=1, checkpoint_every=2)
OPEN_GATE = SpecialistGate(min_miou=0.0, min_dice=0.0)
CONFIG_XML = """<View><Image name="image" value="$image"/>
<BrushLabels name="tag" toName="image"><Label value="Ring"/><Label value="Other"/></BrushLabels>
</View>"""


@pytest.fixture(scope="module")
def scenes() -> list:
    return template_task(12, seed=0, height=96, width=128)


@pytest.fixture
def project(tmp_path: Path, scenes: list) -> tuple[Store, int]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    pid = store_task_project(
        store, tmp_path / "images", "p", scenes, label="Ring", label_config=CONFIG_XML
    )
    return store, pid


def _train(tmp_path: Path, store: Store, pid: int, **kwargs: object):
    params = {"config": TINY, "gate": OPEN_GATE, "min_images": 4, "labels": ["Ring"], **kwargs}
    return train_specialist(
        store,
        models_dir=tmp_path / "models",
        run_dir=tmp_path / "run",
        project=pid,
        **params,  # type: ignore[arg-type]
    )


def test_trained_specialist_is_published_listed_and_loads(tmp_path: Path, project, scenes) -> None:
    store, pid = project
    run = _train(tmp_path, store, pid)
    assert run.published and run.scope == f"specialist:{pid}:Ring"
    assert run.train_images + run.held_out_images == 12 and run.held_out_images >= 2
    rows = list_specialists(store, project_id=pid)
    assert [r["current"] for r in rows] == [True]
    folder = Path(rows[0]["path"])
    assert {"model.pt", "loss.png", "metadata.json", "report.json"} <= {
        p.name for p in folder.iterdir()
    }
    [(name, path)] = active_specialist_paths(store, pid)
    loaded = load_specialist(path)
    assert loaded.labels == ["Ring"] and name == run.version
    prob = predict_probabilities(loaded.model, scenes[0].image)
    assert prob.shape == (1, 96, 128) and 0.0 <= prob.min() <= prob.max() <= 1.0


def test_failed_gate_publishes_nothing(tmp_path: Path, project) -> None:
    store, pid = project
    run = _train(tmp_path, store, pid, gate=SpecialistGate(min_miou=0.99, min_dice=0.99))
    assert not run.published and "below the bar" in run.verdict.reason
    assert [r["status"] for r in list_specialists(store)] == ["rejected"]
    assert active_specialist_paths(store, pid) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_images": 40}, "needs at least 40"),
        ({"labels": ["Boat"]}, "not in the project's labeling config"),
        ({"labels": []}, "at least one label"),
    ],
)
def test_unusable_data_is_refused_before_anything_is_written(
    tmp_path: Path, project, kwargs: dict, message: str
) -> None:
    store, pid = project
    with pytest.raises(SpecialistDataError, match=message):
        _train(tmp_path, store, pid, **kwargs)
    assert list_specialists(store) == []
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_wildly_different_image_sizes_are_refused() -> None:
    check_sizes([(480, 640), (600, 800)])
    with pytest.raises(SpecialistDataError, match="sizes differ"):
        check_sizes([(64, 64), (2000, 2000)])
    with pytest.raises(SpecialistDataError, match="shapes differ"):
        check_sizes([(100, 1000), (1000, 100)])


def test_training_resumes_where_it_stopped(tmp_path: Path, scenes) -> None:
    maps = [s.target.astype(np.uint8) for s in scenes[:4]]
    data = to_model_frame([s.image for s in scenes[:4]], maps, 1, 128)
    cfg = SpecialistTrainConfig(variant="test-tiny", epochs=1, checkpoint_every=1)
    torch.manual_seed(0)
    whole = SpecialistTrainer(build_specialist("test-tiny"), data, cfg, tmp_path / "a").train()
    first = SpecialistTrainer(build_specialist("test-tiny"), data, cfg, tmp_path / "b")
    assert first.train(stop_after=2).steps == 2
    resumed = SpecialistTrainer(build_specialist("test-tiny"), data, cfg, tmp_path / "b").train()
    assert resumed.steps == whole.steps == 4
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    assert (tmp_path / "b" / "loss.png").stat().st_size > 0


def test_structure_loss_prefers_the_right_mask_and_weights_boundaries() -> None:
    target = torch.zeros(1, 1, 64, 64)
    target[..., 16:48, 16:48] = 1.0
    weights = boundary_weights(target)
    assert weights[0, 0, 16, 16] > 2.0 and weights[0, 0, 0, 0] == pytest.approx(1.0)
    good = structure_loss(target * 20 - 10, target)
    bad = structure_loss(-(target * 20 - 10), target)
    assert good < 0.05 < bad
    multi = torch.cat([1 - target, target], dim=1)
    assert structure_loss(multi * 20 - 10, multi) < structure_loss(-(multi * 20 - 10), multi)


def test_scores() -> None:
    gt = np.zeros((32, 32), bool)
    gt[8:24, 8:24] = True
    assert iou_dice(gt, gt) == (1.0, 1.0)
    assert iou_dice(np.zeros_like(gt), np.zeros_like(gt)) == (1.0, 1.0)
    half = gt.copy()
    half[8:24, 16:24] = False
    assert iou_dice(half, gt) == pytest.approx((0.5, 2 / 3))
    assert s_measure(gt.astype(np.float32), gt) == pytest.approx(1.0, abs=1e-6)
    assert s_measure((~gt).astype(np.float32), gt) < 0.1
    assert s_measure(np.zeros((8, 8), np.float32), np.zeros((8, 8), bool)) == 1.0

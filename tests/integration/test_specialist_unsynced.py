"""Specialist data: masks the annotation webhook stored before the task images were synced.

The webhook stores an annotation's masks without the image (Label Studio's events carry none);
the images come with a sync. A specialist asked for before that must say so, not claim that
there are no accepted masks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core_model.masks import encode_coco_rle
from labeling_pipeline.specialist.data import SpecialistDataError
from labeling_pipeline.specialist.service import project_data
from labeling_pipeline.store import MaskRecord, Store
from labeling_pipeline.store.repository import add_image, label_studio_project, replace_human_masks
from ml_backend.label_studio.label_config import shipped_config

LS_PROJECT = 31


def _webhook_masks(store: Store, project_id: int, tasks: range) -> None:
    """Store one "Car" mask per task as the webhook does: by task, without an image."""
    mask = np.zeros((24, 32), bool)
    mask[4:12, 6:20] = True
    record = MaskRecord("r0", "Car", encode_coco_rle(mask), 32, 24, int(mask.sum()))
    for task in tasks:
        with store.session() as session:
            replace_human_masks(
                session, project_id, ls_task_id=task, annotation_id=task, masks=[record]
            )


def _synced_image(store: Store, project_id: int, task: int, folder: Path) -> None:
    """Register a task's image as the sync does (same Label Studio task id)."""
    path = folder / f"task{task}.png"
    Image.fromarray(np.full((24, 32, 3), task, np.uint8)).save(path)
    with store.session() as session:
        add_image(
            session,
            project_id,
            sha256=f"{task:064x}",
            local_path=str(path),
            width=32,
            height=24,
            ls_task_id=task,
        )


@pytest.fixture
def store_project(tmp_path: Path) -> tuple[Store, int]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with store.session() as session:
        project_id = label_studio_project(
            session, LS_PROJECT, title="cars", label_config=shipped_config()
        ).id
    return store, project_id


def test_masks_without_their_images_ask_for_a_sync(store_project: tuple[Store, int]) -> None:
    store, project_id = store_project
    _webhook_masks(store, project_id, range(1, 7))
    with pytest.raises(SpecialistDataError) as caught:
        project_data(store, f"ls:{LS_PROJECT}", ["Car"], min_images=4)
    message = str(caught.value)
    assert "6 annotated Label Studio task(s) have no image in the store yet" in message
    assert f"unsamv2 jobs submit sync --ls-project {LS_PROJECT}" in message


def test_synced_tasks_train_and_the_rest_are_named_in_the_log(
    store_project: tuple[Store, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, project_id = store_project
    _webhook_masks(store, project_id, range(1, 7))
    for task in range(1, 5):
        _synced_image(store, project_id, task, tmp_path)
    with caplog.at_level(logging.WARNING, logger="labeling_pipeline.specialist.service"):
        data = project_data(store, f"ls:{LS_PROJECT}", ["Car"], min_images=4)
    assert len(data.samples) == 4 and data.labels == ["Car"]
    assert "2 annotated Label Studio task(s) have no image in the store yet" in caplog.text
    with pytest.raises(SpecialistDataError, match="needs at least 5.*2 annotated Label Studio"):
        project_data(store, f"ls:{LS_PROJECT}", ["Car"], min_images=5)

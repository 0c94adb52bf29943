"""A synthetic specialist task: "every object of one template" in generated part/whole scenes.

Scenes come from `labeling_pipeline.evaluation.synthetic`; every object made from the chosen
template (e.g. rings) is the task's label, every other object is labelled `other_label`, so the
specialist must tell the template apart from other objects and from background clutter. Used by
`unsamv2 bench specialist` and the tests, which store the scenes as a project's accepted masks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from core_model.masks import encode_coco_rle
from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.store import MaskRecord, Store
from labeling_pipeline.store.images import cache_image_bytes
from labeling_pipeline.store.repository import add_image, get_or_create_project, replace_human_masks


@dataclass(frozen=True)
class TaskScene:
    """One scene of the task.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        target: (H, W) bool: every object of the template.
        objects: (mask (H, W) bool, is of the template) per object.
    """

    image: npt.NDArray[np.uint8]
    target: npt.NDArray[np.bool_]
    objects: tuple[tuple[npt.NDArray[np.bool_], bool], ...]


def template_task(
    count: int, *, seed: int, template: str = "rings", height: int = 256, width: int = 320
) -> list[TaskScene]:
    """Generate `count` scenes (seeds ``seed``, ``seed + 1``, ...) and their targets.

    `template` is one of `labeling_pipeline.evaluation.synthetic.SHAPES`, or "any" (every object
    is the label: objects against background clutter).
    """
    config = SceneConfig(height=height, width=width, margin_px=max(4, height // 24))
    out = []
    for index in range(count):
        scene = generate_scene(seed + index, config)
        objects = tuple((o.mask, template in ("any", o.shape)) for o in scene.objects)
        target = np.zeros((height, width), bool)
        for mask, hit in objects:
            target |= mask & hit
        out.append(TaskScene(scene.image, target, objects))
    return out


def store_task_project(
    store: Store,
    images_dir: Path,
    name: str,
    scenes: Sequence[TaskScene],
    *,
    label: str,
    other_label: str = "Other",
    label_config: str | None = None,
    ls_project_id: int | None = None,
) -> int:
    """Store the scenes as a project's images with one accepted annotation each; return its id."""
    with store.session() as session:
        project_id = get_or_create_project(
            session, name, ls_project_id=ls_project_id, label_config=label_config
        ).id
    for index, scene in enumerate(scenes):
        buffer = io.BytesIO()
        Image.fromarray(scene.image).save(buffer, format="PNG")
        cached = cache_image_bytes(buffer.getvalue(), images_dir)
        height, width = scene.target.shape
        records = [
            MaskRecord(
                f"r{k}",
                label if hit else other_label,
                encode_coco_rle(mask),
                width,
                height,
                int(mask.sum()),
            )
            for k, (mask, hit) in enumerate(scene.objects)
        ]
        with store.session() as session:
            image = add_image(
                session,
                project_id,
                sha256=cached.sha256,
                local_path=str(cached.path),
                width=width,
                height=height,
                ls_task_id=None,
            )
            replace_human_masks(
                session,
                project_id,
                ls_task_id=project_id * 100000 + index,
                annotation_id=project_id * 100000 + index,
                image_id=image.id,
                masks=records,
            )
    return project_id

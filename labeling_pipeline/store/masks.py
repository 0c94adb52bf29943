"""Lookups over accepted (human) masks for training, sync and export.

Writes of human masks (replace per annotation, delete, count) are in `repository`; these are the
reads that group or filter them. Every function takes an open session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from labeling_pipeline.store.models import HumanMask, Image
from labeling_pipeline.store.repository import project_images


def human_masks_by_image(session: Session, project_id: int) -> dict[int, list[HumanMask]]:
    """A project's accepted masks per image id (matched by image id, else by Label Studio task)."""
    images = {i.ls_task_id: i.id for i in project_images(session, project_id) if i.ls_task_id}
    rows = session.scalars(select(HumanMask).where(HumanMask.project_id == project_id)).all()
    by_image: dict[int, list[HumanMask]] = defaultdict(list)
    for row in rows:
        image_id = row.image_id or images.get(row.ls_task_id)
        if image_id is not None:
            by_image[image_id].append(row)
    return dict(by_image)


def tasks_without_image(session: Session, project_id: int) -> set[int]:
    """Label Studio tasks whose accepted masks have no image in the project (not synced yet)."""
    synced = select(Image.ls_task_id).where(
        Image.project_id == project_id, Image.ls_task_id.is_not(None)
    )
    query = select(HumanMask.ls_task_id).where(
        HumanMask.project_id == project_id,
        HumanMask.image_id.is_(None),
        HumanMask.ls_task_id.not_in(synced),
    )
    return set(session.scalars(query.distinct()).all())


def delete_other_annotations(
    session: Session, project_id: int, ls_task_id: int, keep: Collection[int]
) -> int:
    """Delete a task's masks whose annotation id is not in `keep`; return how many rows went."""
    gone = session.execute(
        delete(HumanMask).where(
            HumanMask.project_id == project_id,
            HumanMask.ls_task_id == ls_task_id,
            HumanMask.annotation_id.not_in(keep or {-1}),
        )
    )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


def annotation_granularities(session: Session, ls_task_id: int) -> dict[tuple[int, str], float]:
    """Granularity of each accepted region of a task, by (annotation id, region id)."""
    rows = session.execute(
        select(HumanMask.annotation_id, HumanMask.region_id, HumanMask.granularity).where(
            HumanMask.ls_task_id == ls_task_id, HumanMask.granularity.is_not(None)
        )
    ).all()
    return {(annotation, region): float(value) for annotation, region, value in rows if value}

"""Queries and updates of projects, images, accepted masks, predictions and model versions.

Every function takes an open session. Writes that tasks may repeat (a redelivered message) are
idempotent: human masks are replaced per annotation. Jobs are in `jobs`, runs in `runs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core_model.errors import UnSAMv2Error
from labeling_pipeline.store.models import (
    HumanMask,
    Image,
    PredictionRecord,
    Project,
    utcnow,
)


class NotFoundError(UnSAMv2Error, LookupError):
    """A row named by id or name does not exist."""


def get_or_create_project(
    session: Session,
    name: str,
    *,
    ls_project_id: int | None = None,
    label_config: str | None = None,
) -> Project:
    """Return the project with this Label Studio id (or this name), creating it if needed."""
    project = None
    if ls_project_id is not None:
        project = session.scalar(select(Project).where(Project.ls_project_id == ls_project_id))
    if project is None:
        project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name, ls_project_id=ls_project_id, label_config=label_config)
        session.add(project)
        session.flush()
    elif label_config is not None:
        project.label_config = label_config
    return project


def label_studio_project(
    session: Session,
    ls_project_id: int,
    *,
    title: str | None = None,
    label_config: str | None = None,
) -> Project:
    """Return the store project of a Label Studio project, creating it if needed.

    Its name is ``"<title> [ls:<id>]"`` (the one naming rule; `find_project` also accepts
    ``ls:<id>``). A given `label_config` replaces the stored one.
    """
    name = f"{title or f'Label Studio project {ls_project_id}'} [ls:{ls_project_id}]"
    return get_or_create_project(
        session, name, ls_project_id=ls_project_id, label_config=label_config
    )


def find_project(session: Session, ref: str | int) -> Project:
    """Find a project by id, Label Studio id (``ls:12``) or name; raise `NotFoundError`."""
    text = str(ref)
    if text.startswith("ls:") and text[3:].isdigit():
        project = session.scalar(select(Project).where(Project.ls_project_id == int(text[3:])))
    elif text.isdigit():
        project = session.get(Project, int(text))
    else:
        project = session.scalar(select(Project).where(Project.name == text))
    if project is None:
        raise NotFoundError(f"no project {ref!r} (give an id, ls:<Label Studio id> or a name)")
    return project


def add_image(
    session: Session,
    project_id: int,
    *,
    sha256: str,
    local_path: str,
    width: int,
    height: int,
    source_url: str | None = None,
    ls_task_id: int | None = None,
) -> Image:
    """Register an image of a project (idempotent by content hash)."""
    image = session.scalar(
        select(Image).where(Image.project_id == project_id, Image.sha256 == sha256)
    )
    if image is None:
        image = Image(
            project_id=project_id,
            sha256=sha256,
            local_path=local_path,
            width=width,
            height=height,
            source_url=source_url,
            ls_task_id=ls_task_id,
        )
        session.add(image)
        session.flush()
    else:
        image.local_path = local_path
        if ls_task_id is not None:
            image.ls_task_id = ls_task_id
        if source_url is not None:
            image.source_url = source_url
    return image


def project_images(session: Session, project_id: int) -> Sequence[Image]:
    """Return a project's images by id."""
    return session.scalars(
        select(Image).where(Image.project_id == project_id).order_by(Image.id)
    ).all()


def get_image(session: Session, image_id: int) -> Image:
    """Return an image or raise `NotFoundError`."""
    image = session.get(Image, image_id)
    if image is None:
        raise NotFoundError(f"image {image_id} does not exist")
    return image


def list_projects(session: Session) -> Sequence[Project]:
    """Every project, by id."""
    return session.scalars(select(Project).order_by(Project.id)).all()


def set_project_options(session: Session, project_id: int, options: Mapping[str, Any]) -> Project:
    """Merge backend options (Label Studio's extra params) into a project's stored config."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"no project {project_id}")
    project.config = {**(project.config or {}), **options}
    return project


def task_ids_by_file_name(session: Session, ls_project_id: int) -> dict[str, int]:
    """Cached image file name (``<sha256>.<ext>``) -> Label Studio task id, for a synced project."""
    rows = session.execute(
        select(Image.local_path, Image.ls_task_id)
        .join(Project, Project.id == Image.project_id)
        .where(Project.ls_project_id == ls_project_id, Image.ls_task_id.is_not(None))
    ).all()
    return {Path(path).name: int(task) for path, task in rows if task is not None}


@dataclass(frozen=True)
class MaskRecord:
    """One accepted brush region, ready to store.

    Attributes:
        region_id: Id of the region in the Label Studio annotation.
        label: BrushLabels label.
        rle: COCO RLE (compressed, ASCII counts) of the (height, width) mask.
        area: Foreground pixels.
        granularity: Granularity used to make it, if known.
    """

    region_id: str
    label: str
    rle: dict[str, Any]
    width: int
    height: int
    area: int
    granularity: float | None = None


def replace_human_masks(
    session: Session,
    project_id: int,
    *,
    ls_task_id: int,
    annotation_id: int,
    masks: Iterable[MaskRecord],
    image_id: int | None = None,
) -> int:
    """Replace every mask of one annotation (created or updated); return how many are stored."""
    session.execute(
        delete(HumanMask).where(
            HumanMask.project_id == project_id, HumanMask.annotation_id == annotation_id
        )
    )
    now = utcnow()
    rows = [
        HumanMask(
            project_id=project_id,
            image_id=image_id,
            ls_task_id=ls_task_id,
            annotation_id=annotation_id,
            region_id=m.region_id,
            label=m.label,
            rle=m.rle,
            width=m.width,
            height=m.height,
            area=m.area,
            granularity=m.granularity,
            updated_at=now,
        )
        for m in masks
    ]
    session.add_all(rows)
    return len(rows)


def delete_human_masks(session: Session, project_id: int, annotation_ids: Iterable[int]) -> int:
    """Delete the masks of these annotations; return how many rows went."""
    ids = list(annotation_ids)
    if not ids:
        return 0
    result = session.execute(
        delete(HumanMask).where(
            HumanMask.project_id == project_id, HumanMask.annotation_id.in_(ids)
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def count_human_masks(
    session: Session, project_id: int, *, since: dt.datetime | None = None
) -> int:
    """Count a project's human masks, optionally only those updated after `since`."""
    query = select(func.count(HumanMask.id)).where(HumanMask.project_id == project_id)
    if since is not None:
        query = query.where(HumanMask.updated_at > since)
    return int(session.scalar(query) or 0)


def record_predictions(
    session: Session,
    *,
    ls_project_id: int | None,
    ls_task_id: int,
    regions: Iterable[tuple[str, str, float]],
    model_version: str,
) -> None:
    """Remember the granularity of suggested masks, given as (result id, label, granularity).

    The latest suggestion per (task, result id) wins.
    """
    for result_id, label, granularity in regions:
        row = session.scalar(
            select(PredictionRecord).where(
                PredictionRecord.ls_task_id == ls_task_id, PredictionRecord.result_id == result_id
            )
        )
        if row is None:
            row = PredictionRecord(ls_task_id=ls_task_id, result_id=result_id)
            session.add(row)
        row.ls_project_id, row.label, row.granularity = ls_project_id, label, granularity
        row.model_version, row.created_at = model_version, utcnow()


def prediction_granularities(session: Session, ls_task_id: int) -> dict[str, float]:
    """Granularity by result id of the masks suggested for a task."""
    rows = session.execute(
        select(PredictionRecord.result_id, PredictionRecord.granularity).where(
            PredictionRecord.ls_task_id == ls_task_id
        )
    ).all()
    return {result_id: granularity for result_id, granularity in rows}

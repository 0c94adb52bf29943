"""Queries and updates of the store, as functions over a `Session`.

Writes that tasks may repeat (a redelivered message) are idempotent: human masks are replaced
per annotation, pseudo-label outcomes are keyed by (run, image), job progress is recounted
rather than incremented.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core_model.errors import UnSAMv2Error
from labeling_pipeline.store.models import (
    HumanMask,
    Image,
    Job,
    ModelPointer,
    ModelVersion,
    PredictionRecord,
    Project,
    PseudoLabelImage,
    utcnow,
)

DEFAULT_SCOPE = "default"
FINISHED = ("done", "failed")


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


# ---------------------------------------------------------------------------------- jobs


def create_job(
    session: Session,
    kind: str,
    *,
    project_id: int | None = None,
    params: dict[str, Any] | None = None,
    total: int = 0,
) -> Job:
    """Add a queued job."""
    job = Job(kind=kind, project_id=project_id, params=dict(params or {}), progress_total=total)
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> Job:
    """Return a job or raise `NotFoundError`."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job


def set_job_progress(
    session: Session,
    job_id: int,
    *,
    done: int | None = None,
    total: int | None = None,
    message: str | None = None,
) -> Job:
    """Update what a job reports: items done out of total, and a short message."""
    job = get_job(session, job_id)
    if done is not None:
        job.progress_done = done
    if total is not None:
        job.progress_total = total
    if message is not None:
        job.message = message
    return job


def start_job(session: Session, job_id: int, *, worker_pid: int | None = None) -> Job:
    """Mark a job running (again, after a redelivery: `attempts` counts executions).

    Only an execution of the job's own task counts; a task that does part of the job's work
    (one image of a pseudo-label run) records itself with `start_subtask`.
    """
    job = get_job(session, job_id)
    if job.status not in FINISHED:
        job.status = "running"
    job.attempts += 1
    job.worker_pid = worker_pid
    job.started_at = job.started_at or utcnow()
    job.updated_at = utcnow()
    return job


def start_subtask(session: Session, job_id: int, *, worker_pid: int | None = None) -> Job:
    """Record that a task doing part of a job's work started (not a new attempt of the job)."""
    job = get_job(session, job_id)
    if job.status not in FINISHED:
        job.status = "running"
    job.worker_pid = worker_pid
    job.started_at = job.started_at or utcnow()
    job.updated_at = utcnow()
    return job


def finish_job(
    session: Session,
    job_id: int,
    *,
    result: dict[str, Any] | None = None,
    message: str = "",
    project_id: int | None = None,
) -> Job:
    """Mark a job done (idempotent); `project_id` records the project it turned out to concern."""
    job = get_job(session, job_id)
    if project_id is not None:
        job.project_id = project_id
    job.status = "done"
    job.result = dict(result or job.result)
    job.message = message or job.message
    job.finished_at = job.finished_at or utcnow()
    return job


def fail_job(session: Session, job_id: int, message: str) -> Job:
    """Mark a job failed with a message."""
    job = get_job(session, job_id)
    job.status = "failed"
    job.message = message
    job.finished_at = utcnow()
    return job


def list_jobs(session: Session, *, limit: int = 50, kind: str | None = None) -> Sequence[Job]:
    """Return the newest jobs first."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return session.scalars(query).all()


def job_as_dict(job: Job) -> dict[str, Any]:
    """JSON-ready view of a job (for `unsamv2 jobs` and the backend's endpoint)."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "project_id": job.project_id,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "attempts": job.attempts,
        "message": job.message,
        "params": job.params,
        "result": job.result,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "updated_at": iso(job.updated_at),
        "finished_at": iso(job.finished_at),
    }


def record_pseudo_label_image(
    session: Session,
    run_id: int,
    image_id: int,
    *,
    status: str,
    json_path: str | None,
    num_masks: int = 0,
    error: str = "",
) -> None:
    """Store the outcome of one image of a run (replacing an earlier attempt's)."""
    row = session.scalar(
        select(PseudoLabelImage).where(
            PseudoLabelImage.run_id == run_id, PseudoLabelImage.image_id == image_id
        )
    )
    if row is None:
        row = PseudoLabelImage(run_id=run_id, image_id=image_id, status=status)
        session.add(row)
    row.status, row.json_path, row.num_masks, row.error = status, json_path, num_masks, error
    row.finished_at = utcnow()
    session.flush()


def start_pseudo_label_image(session: Session, run_id: int, image_id: int) -> None:
    """Show an image of a run as being worked on (status "running"; not counted as progress)."""
    row = session.scalar(
        select(PseudoLabelImage).where(
            PseudoLabelImage.run_id == run_id, PseudoLabelImage.image_id == image_id
        )
    )
    if row is None:
        session.add(PseudoLabelImage(run_id=run_id, image_id=image_id, status="running"))
    elif row.status != "done":
        row.status = "running"
    session.flush()


def recount_run_progress(session: Session, job_id: int, run_id: int) -> Job:
    """Set the job's progress from the run's image outcomes; finish it when all are in."""
    counts = dict(
        session.execute(
            select(PseudoLabelImage.status, func.count())
            .where(PseudoLabelImage.run_id == run_id)
            .group_by(PseudoLabelImage.status)
        ).all()
    )
    done, failed = int(counts.get("done", 0)), int(counts.get("failed", 0))
    session.execute(update(Job).where(Job.id == job_id).values(progress_done=done + failed))
    job = get_job(session, job_id)
    session.refresh(job)
    if job.progress_total and done + failed >= job.progress_total and job.status not in FINISHED:
        job.result = {"images_done": done, "images_failed": failed}
        job.status = "done"
        job.finished_at = utcnow()
    return job


# ------------------------------------------------------------------------ model versions


def current_model_version(session: Session, scope: str = DEFAULT_SCOPE) -> ModelVersion | None:
    """Return the version the pointer names, or None."""
    pointer = session.get(ModelPointer, scope)
    return session.get(ModelVersion, pointer.model_version_id) if pointer else None


def add_model_version_and_point(
    session: Session, version: ModelVersion, scope: str = DEFAULT_SCOPE
) -> ModelVersion:
    """Insert a complete version and move the pointer to it, in the caller's transaction."""
    session.add(version)
    session.flush()
    pointer = session.get(ModelPointer, scope)
    if pointer is None:
        session.add(ModelPointer(scope=scope, model_version_id=version.id))
    else:
        pointer.model_version_id = version.id
        pointer.updated_at = utcnow()
    return version


def find_model_version(session: Session, name: str) -> ModelVersion:
    """Return the version called `name` (``"current"``: the one the pointer names).

    Raises:
        NotFoundError: no such version.
    """
    if name == "current":
        version = current_model_version(session)
    else:
        version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        raise NotFoundError(f"no model version {name!r} (see `unsamv2 models list`)")
    return version


def list_model_versions(session: Session) -> Sequence[ModelVersion]:
    """Return every version, newest first."""
    return session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).all()

"""Jobs (background work and its progress) and the progress of pseudo-label runs.

Every function takes an open session and leaves committing to it. Writes that tasks may repeat
(a redelivered message) are idempotent: pseudo-label outcomes are keyed by (run, image) and job
progress is recounted rather than incremented.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from labeling_pipeline.store.models import Job, PseudoLabelImage, utcnow
from labeling_pipeline.store.repository import NotFoundError

FINISHED = ("done", "failed")
"""Job states that never change again."""


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

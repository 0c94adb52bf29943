"""Queries and updates of pseudo-label runs and training runs (the store's run bookkeeping).

Every function takes an open session (see `Store.session`) and leaves committing to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labeling_pipeline.store.models import Job, PseudoLabelRun, TrainingRun
from labeling_pipeline.store.repository import NotFoundError


def create_pseudo_label_run(
    session: Session,
    project_id: int,
    *,
    job_id: int,
    features: str,
    config: Mapping[str, Any],
    output_root: Path,
) -> PseudoLabelRun:
    """Record a pseudo-label run; its output folder is ``output_root/run-<id>``."""
    run = PseudoLabelRun(
        project_id=project_id,
        job_id=job_id,
        features=features,
        config=dict(config),
        output_dir="",
    )
    session.add(run)
    session.flush()
    run.output_dir = str(output_root / f"run-{run.id:05d}")
    return run


def get_pseudo_label_run(session: Session, run_id: int) -> PseudoLabelRun:
    """Return a pseudo-label run or raise `NotFoundError`."""
    run = session.get(PseudoLabelRun, run_id)
    if run is None:
        raise NotFoundError(f"pseudo-label run {run_id} does not exist")
    return run


def training_run_for_job(session: Session, job_id: int, project_id: int | None) -> TrainingRun:
    """Return the training run of a job, creating it on the job's first execution."""
    run = session.scalar(select(TrainingRun).where(TrainingRun.job_id == job_id))
    if run is None:
        run = TrainingRun(project_id=project_id, job_id=job_id)
        session.add(run)
        session.flush()
    return run


def finish_training_run(
    session: Session,
    run_id: int,
    *,
    metrics: Mapping[str, Any],
    human_masks_used: int,
    model_version_id: int | None,
    config: Mapping[str, Any],
) -> TrainingRun:
    """Record what a finished training run measured and published."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFoundError(f"training run {run_id} does not exist")
    run.metrics, run.human_masks_used = dict(metrics), human_masks_used
    run.model_version_id, run.config = model_version_id, dict(config)
    return run


def last_training_run(session: Session, project_id: int) -> TrainingRun | None:
    """The project's most recent training run (any outcome), or None."""
    return session.scalar(
        select(TrainingRun)
        .where(TrainingRun.project_id == project_id)
        .order_by(TrainingRun.created_at.desc(), TrainingRun.id.desc())
        .limit(1)
    )


def training_active(session: Session, project_id: int) -> bool:
    """Whether a training job of the project is queued or running."""
    active = session.scalar(
        select(Job.id)
        .where(
            Job.project_id == project_id,
            Job.kind == "train",
            Job.status.in_(("queued", "running")),
        )
        .limit(1)
    )
    return active is not None

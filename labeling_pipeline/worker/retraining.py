"""When is retraining due? Enough newly accepted masks, or a period elapsed with new ones."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from labeling_pipeline.store.models import Job, Project, TrainingRun
from labeling_pipeline.store.repository import count_human_masks


@dataclass(frozen=True)
class RetrainDecision:
    """The verdict for one project.

    Attributes:
        project_id: Project in question.
        due: Whether a training run should start now.
        reason: Why (or why not), for logs and the jobs list.
        new_masks: Accepted masks added or changed since the last training run.
    """

    project_id: int
    due: bool
    reason: str
    new_masks: int


def _training_active(session: Session, project_id: int) -> bool:
    active = session.scalar(
        select(Job.id)
        .where(
            Job.project_id == project_id, Job.kind == "train", Job.status.in_(("queued", "running"))
        )
        .limit(1)
    )
    return active is not None


def decide(
    session: Session,
    project: Project,
    *,
    min_new_masks: int,
    period_s: float,
    now: dt.datetime,
) -> RetrainDecision:
    """Decide for one project (see module docstring); never due while a run is active."""
    last = session.scalar(
        select(TrainingRun)
        .where(TrainingRun.project_id == project.id)
        .order_by(TrainingRun.created_at.desc())
        .limit(1)
    )
    since = last.created_at if last is not None else None
    new = count_human_masks(session, project.id, since=since)
    if new == 0:
        return RetrainDecision(project.id, False, "no new accepted masks", 0)
    if _training_active(session, project.id):
        return RetrainDecision(
            project.id, False, "a training run is already queued or running", new
        )
    if new >= min_new_masks:
        return RetrainDecision(
            project.id, True, f"{new} new accepted masks (>= {min_new_masks})", new
        )
    reference = since or project.created_at
    waited = (now - reference).total_seconds()
    if waited >= period_s:
        return RetrainDecision(
            project.id, True, f"{waited:.0f} s since the last run with {new} new masks", new
        )
    return RetrainDecision(project.id, False, f"{new} new masks, below {min_new_masks}", new)


def retraining_decisions(
    session: Session, *, min_new_masks: int, period_s: float, now: dt.datetime
) -> list[RetrainDecision]:
    """Decide for every project."""
    projects = session.scalars(select(Project).order_by(Project.id)).all()
    return [
        decide(session, p, min_new_masks=min_new_masks, period_s=period_s, now=now)
        for p in projects
    ]

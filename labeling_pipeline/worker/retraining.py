"""When is retraining due? Enough newly accepted masks, or a period elapsed with new ones."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from labeling_pipeline.store.models import Project
from labeling_pipeline.store.repository import count_human_masks, list_projects
from labeling_pipeline.store.runs import last_training_run, training_active


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


def decide(
    session: Session,
    project: Project,
    *,
    min_new_masks: int,
    period_s: float,
    now: dt.datetime,
) -> RetrainDecision:
    """Decide for one project (see module docstring); never due while a run is active."""
    last = last_training_run(session, project.id)
    since = last.created_at if last is not None else None
    new = count_human_masks(session, project.id, since=since)
    if new == 0:
        return RetrainDecision(project.id, False, "no new accepted masks", 0)
    if training_active(session, project.id):
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
    projects = list_projects(session)
    return [
        decide(session, p, min_new_masks=min_new_masks, period_s=period_s, now=now)
        for p in projects
    ]

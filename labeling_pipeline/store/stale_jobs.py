"""Signs of life of running jobs, and failing the jobs whose worker was lost.

A job's worker changes its row while it works (progress, and a heartbeat while its task runs:
`touch_job`), which moves ``updated_at``. A running job that stays silent longer than the limit
lost its worker: killed as a whole, or its machine went down, with a broker that does not
redeliver (the embedded one). `fail_stale_jobs` marks such jobs failed so they do not show
`running` forever.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from labeling_pipeline.store.models import Job, utcnow


def touch_job(session: Session, job_id: int) -> None:
    """Record a sign of life of a running job (its worker's heartbeat)."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == "running").values(updated_at=utcnow())
    )


def job_silence_s(job: Job, now: dt.datetime) -> float:
    """Return the seconds since the job's last sign of life (update, start or creation)."""
    last = job.updated_at or job.started_at or job.created_at
    return (now - last).total_seconds()


def stale_message(silence_s: float, stale_s: float) -> str:
    """Return the message of a job failed for silence."""
    return (
        f"no word from its worker for {int(silence_s)} s (limit UNSAMV2_JOB_STALE_S="
        f"{stale_s:g} s); it was probably killed: resubmit the job"
    )


def fail_stale_jobs(
    session: Session, *, stale_s: float, now: dt.datetime | None = None
) -> list[Job]:
    """Mark failed every running job not heard from for more than `stale_s` seconds.

    Args:
        session: Open session (the caller commits).
        stale_s: Silence after which a running job counts as lost.
        now: Current time (timezone-aware UTC); default now.

    Returns:
        The jobs marked failed.
    """
    now = now or utcnow()
    running = session.scalars(select(Job).where(Job.status == "running")).all()
    stale = [job for job in running if job_silence_s(job, now) > stale_s]
    for job in stale:
        job.message = stale_message(job_silence_s(job, now), stale_s)
        job.status = "failed"
        job.finished_at = now
    return stale

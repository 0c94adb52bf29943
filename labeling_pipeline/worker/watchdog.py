"""Lost jobs: the heartbeat of a running task, and the beat task that fails silent jobs.

When a whole worker is killed, the embedded broker does not redeliver its task, and the job row
would say ``running`` forever. While a task works, `job_heartbeat` moves the job's ``updated_at``
from a background thread; `fail_lost_jobs` (a beat entry, also run by `unsamv2 jobs`) marks a
running job failed once it has been silent for ``job_stale_s`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.stale_jobs import fail_stale_jobs, touch_job
from labeling_pipeline.worker.context import store_for
from labeling_pipeline.worker.names import SETTINGS_KEY

if TYPE_CHECKING:
    from celery import Task

logger = logging.getLogger(__name__)


def heartbeat_interval_s(stale_s: float) -> float:
    """Return how often a running task signals life: well inside the staleness limit."""
    return max(0.5, min(60.0, stale_s / 10))


def check_interval_s(stale_s: float) -> float:
    """Return the period of the beat entry that looks for lost jobs."""
    return max(1.0, min(300.0, stale_s / 4))


@contextlib.contextmanager
def job_heartbeat(store: Store, job_id: int, *, interval_s: float) -> Iterator[None]:
    """Touch the job's row every `interval_s` seconds while the block runs.

    The heartbeat stops with the block, or with the process: a killed worker goes silent.
    Database errors of a beat are logged and the next beat tries again.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                with store.session() as session:
                    touch_job(session, job_id)
            except Exception as exc:  # a busy or unreachable database: try at the next beat
                logger.warning("job %d: heartbeat not recorded: %s", job_id, exc)

    thread = threading.Thread(target=beat, name=f"job-{job_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def fail_lost(settings: PipelineSettings, store: Store) -> list[int]:
    """Mark failed the running jobs silent for ``settings.job_stale_s``; return their ids."""
    with store.session() as session:
        jobs = fail_stale_jobs(session, stale_s=settings.job_stale_s)
        failed = [(job.id, job.kind, job.message) for job in jobs]
    for job_id, kind, message in failed:
        logger.warning("job %d (%s) failed: %s", job_id, kind, message)
    return [job_id for job_id, _, _ in failed]


def fail_lost_jobs(task: Task) -> dict[str, Any]:
    """Beat entry: mark failed the running jobs whose worker went silent."""
    settings: PipelineSettings = task.app.conf[SETTINGS_KEY]
    return {"failed_jobs": fail_lost(settings, store_for(settings))}

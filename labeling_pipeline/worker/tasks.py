"""Celery tasks: thin, idempotent wrappers over the library. Arguments are ids only.

Every task records its execution in its job row (status, attempts, worker pid, progress) so
`unsamv2 jobs` and the backend can show it. A redelivered task finds finished work and only
re-records it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery, Task

from core_model.errors import UnSAMv2Error
from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError
from labeling_pipeline.label_studio.fetch import FetchPolicy
from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import (
    create_job,
    fail_job,
    finish_job,
    record_pseudo_label_image,
    recount_run_progress,
    set_job_progress,
    start_job,
    start_pseudo_label_image,
    start_subtask,
)
from labeling_pipeline.store.locks import exclusive_file_lock
from labeling_pipeline.store.repository import NotFoundError, get_image, project_images
from labeling_pipeline.store.runs import get_pseudo_label_run
from labeling_pipeline.worker.context import get_feature_extractor, store_for
from labeling_pipeline.worker.jobs import submit_training, training_available
from labeling_pipeline.worker.names import (
    CHECK_RETRAINING_TASK,
    FAIL_LOST_JOBS_TASK,
    PSEUDO_LABEL_IMAGE_TASK,
    PSEUDO_LABEL_PROJECT_TASK,
    SETTINGS_KEY,
    SYNC_PROJECT_TASK,
    TRAIN_SPECIALIST_TASK,
    TRAIN_TASK,
)
from labeling_pipeline.worker.retraining import retraining_decisions
from labeling_pipeline.worker.watchdog import fail_lost_jobs, heartbeat_interval_s, job_heartbeat

logger = logging.getLogger(__name__)

TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
}


def _context(task: Task) -> tuple[PipelineSettings, Store]:
    settings: PipelineSettings = task.app.conf[SETTINGS_KEY]
    return settings, store_for(settings)


def _heartbeat(
    settings: PipelineSettings, store: Store, job_id: int
) -> contextlib.AbstractContextManager[None]:
    """Keep the job visibly alive while its task works (see `watchdog`)."""
    return job_heartbeat(store, job_id, interval_s=heartbeat_interval_s(settings.job_stale_s))


def _begin(store: Store, job_id: int) -> None:
    """Record an execution of the job's task (a redelivery counts as a new attempt)."""
    with store.session() as session:
        start_job(session, job_id, worker_pid=os.getpid())


def pseudo_label_project(task: Task, job_id: int, run_id: int) -> dict[str, Any]:
    """Fan out one `pseudo_label_image` task per image of the run's project."""
    from celery import group

    _, store = _context(task)
    _begin(store, job_id)
    with store.session() as session:
        try:
            project_id = get_pseudo_label_run(session, run_id).project_id
        except NotFoundError as exc:
            fail_job(session, job_id, str(exc))
            return {"images": 0}
        image_ids = [image.id for image in project_images(session, project_id)]
        set_job_progress(session, job_id, total=len(image_ids))
        if not image_ids:
            finish_job(session, job_id, message="the project has no images")
            return {"images": 0}
    image_task = task.app.tasks[PSEUDO_LABEL_IMAGE_TASK]
    group(image_task.s(job_id, run_id, image_id) for image_id in image_ids).apply_async()
    return {"images": len(image_ids)}


def pseudo_label_image(task: Task, job_id: int, run_id: int, image_id: int) -> dict[str, Any]:
    """Pseudo-label one image of a run (skips an image whose JSON is already written)."""
    from labeling_pipeline.pseudo_labels import pseudo_label_image_file

    settings, store = _context(task)
    with store.session() as session:
        run, image = get_pseudo_label_run(session, run_id), get_image(session, image_id)
        image_path, out_dir = Path(image.local_path), Path(run.output_dir)
        features, config = run.features, dict(run.config)
        start_subtask(session, job_id, worker_pid=os.getpid())  # not a new attempt of the job
        start_pseudo_label_image(session, run_id, image_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (
            _heartbeat(settings, store, job_id),
            exclusive_file_lock(out_dir / f".{image_id}.lock"),
        ):
            extractor = get_feature_extractor(features, settings.device)
            outcome = pseudo_label_image_file(
                image_path,
                out_dir,
                extractor=extractor,
                config=config,
                json_name=f"{image_id}.json",
                image_id=image_id,
            )
        status, error = ("done", "") if outcome.ok else ("failed", outcome.reason)
        json_path, count = (
            (str(outcome.json_path) if outcome.json_path else None),
            outcome.num_masks,
        )
    except UnSAMv2Error as exc:
        status, error, json_path, count = "failed", str(exc), None, 0
    with store.session() as session:
        record_pseudo_label_image(
            session,
            run_id,
            image_id,
            status=status,
            json_path=json_path,
            num_masks=count,
            error=error,
        )
        recount_run_progress(session, job_id, run_id)
    return {"image_id": image_id, "status": status, "masks": count}


def sync_label_studio(task: Task, job_id: int, ls_project_id: int) -> dict[str, Any]:
    """Pull a Label Studio project's images and accepted annotations into the store."""
    from labeling_pipeline.label_studio.sync import sync_project

    settings, store = _context(task)
    _begin(store, job_id)

    def progress(done: int, total: int) -> None:
        with store.session() as session:
            set_job_progress(session, job_id, done=done, total=total)

    try:
        client = LabelStudioClient(
            settings.label_studio_url or "", settings.label_studio_api_key or ""
        )
        policy = FetchPolicy(
            allowed_hosts=frozenset({client.host}), deadline_s=settings.fetch_timeout_s
        )
        with _heartbeat(settings, store, job_id):
            result = sync_project(
                settings, store, ls_project_id, client=client, policy=policy, on_progress=progress
            )
    except LabelStudioError as exc:
        if exc.status is None and task.request.retries < 3:  # unreachable: try again later
            raise task.retry(exc=exc, countdown=30 * 2**task.request.retries) from exc
        with store.session() as session:
            fail_job(session, job_id, str(exc))
        return {"error": str(exc)}
    with store.session() as session:
        finish_job(session, job_id, result=result.as_dict(), project_id=result.project_id)
    return result.as_dict()


def check_retraining(task: Task) -> dict[str, Any]:
    """Beat entry: record which projects are due for retraining and queue their runs."""
    settings, store = _context(task)
    now = dt.datetime.now(dt.timezone.utc)
    with store.session() as session:
        decisions = retraining_decisions(
            session,
            min_new_masks=settings.retrain_min_new_masks,
            period_s=settings.retrain_period_s,
            now=now,
        )
        job = create_job(session, "retrain_check")
        job_id = job.id
    queued = []
    for decision in decisions:
        if decision.due and training_available(task.app):
            queued.append(
                submit_training(task.app, store, decision.project_id, reason=decision.reason)
            )
    summary = {
        "due": [d.project_id for d in decisions if d.due],
        "queued_jobs": queued,
        "training_installed": training_available(task.app),
        "decisions": [
            {"project_id": d.project_id, "due": d.due, "reason": d.reason, "new_masks": d.new_masks}
            for d in decisions
        ],
    }
    with store.session() as session:
        start_job(session, job_id, worker_pid=os.getpid())
        finish_job(session, job_id, result=summary)
    return summary


def train(task: Task, job_id: int) -> dict[str, Any]:
    """Train and publish a model version for the job's project (the ``training`` queue)."""
    from labeling_pipeline.training.project import train_project

    settings, store = _context(task)
    try:
        with _heartbeat(settings, store, job_id):
            return train_project(
                settings,
                store,
                job_id,
                extractor_for=lambda spec: get_feature_extractor(spec, settings.device),
            )
    except UnSAMv2Error as exc:
        with store.session() as session:
            fail_job(session, job_id, str(exc))
        return {"error": str(exc)}


def train_specialist(task: Task, job_id: int) -> dict[str, Any]:
    """Train and gate a task specialist for the job's project (the ``training`` queue)."""
    from labeling_pipeline.specialist.jobs import run_specialist_job

    settings, store = _context(task)
    try:
        with _heartbeat(settings, store, job_id):
            return run_specialist_job(settings, store, job_id)
    except UnSAMv2Error as exc:
        with store.session() as session:
            fail_job(session, job_id, str(exc))
        return {"error": str(exc)}


def register(app: Celery) -> None:
    """Register the tasks on an app (explicitly; nothing is registered at import time)."""
    for name, function in (
        (PSEUDO_LABEL_PROJECT_TASK, pseudo_label_project),
        (PSEUDO_LABEL_IMAGE_TASK, pseudo_label_image),
        (SYNC_PROJECT_TASK, sync_label_studio),
        (CHECK_RETRAINING_TASK, check_retraining),
        (TRAIN_TASK, train),
        (TRAIN_SPECIALIST_TASK, train_specialist),
        (FAIL_LOST_JOBS_TASK, fail_lost_jobs),
    ):
        app.task(name=name, **TASK_OPTIONS)(function)

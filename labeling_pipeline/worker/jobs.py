"""Submitting work: a job row first (visible progress), then the Celery message.

Used by the CLI, the HTTP backend and the beat task alike. A message that cannot be sent (broker
down) marks its job failed and raises `JobSubmitError`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery

from core_model.errors import UnSAMv2Error
from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import create_job, fail_job, get_job
from labeling_pipeline.store.runs import create_pseudo_label_run
from labeling_pipeline.worker.names import (
    PSEUDO_LABEL_PROJECT_TASK,
    PSEUDO_LABEL_QUEUE,
    SETTINGS_KEY,
    SYNC_PROJECT_TASK,
    TRAIN_TASK,
    TRAINING_QUEUE,
)

logger = logging.getLogger(__name__)


class JobSubmitError(UnSAMv2Error):
    """The job was recorded but its message could not be queued."""


def _send(app: Celery, store: Store, job_id: int, task: str, args: list[Any], queue: str) -> int:
    try:
        message = app.send_task(task, args=args, queue=queue)
    except Exception as exc:  # kombu raises many connection errors
        with store.session() as session:
            fail_job(session, job_id, f"cannot queue the task: {exc}")
        raise JobSubmitError(f"job {job_id}: cannot reach the task broker: {exc}") from exc
    with store.session() as session:
        get_job(session, job_id).celery_task_id = message.id
    return job_id


def submit_pseudo_label_run(
    app: Celery,
    store: Store,
    project_id: int,
    *,
    features: str | None = None,
    config: dict[str, Any] | None = None,
) -> int:
    """Queue pseudo-labelling of every image of a project; return the job id."""
    from labeling_pipeline.pseudo_labels.extractors import features_status

    settings: PipelineSettings = app.conf[SETTINGS_KEY]
    features = features or settings.features
    # the report says when the weight-free extractor stands in for missing DINO weights
    warning = features_status(features)["warning"]
    with store.session() as session:
        job = create_job(
            session,
            "pseudo_label",
            project_id=project_id,
            params={"features": features, "config": config or {}, "features_warning": warning},
        )
        run = create_pseudo_label_run(
            session,
            project_id,
            job_id=job.id,
            features=features,
            config=config or {},
            output_root=Path(settings.pseudo_labels_dir),
        )
        job_id, run_id = job.id, run.id
    return _send(
        app, store, job_id, PSEUDO_LABEL_PROJECT_TASK, [job_id, run_id], PSEUDO_LABEL_QUEUE
    )


def submit_sync(app: Celery, store: Store, ls_project_id: int) -> int:
    """Queue a Label Studio project synchronisation; return the job id.

    Raises:
        JobSubmitError: Label Studio is not configured (no job is created: it could only
            fail), or the broker is unreachable.
    """
    settings: PipelineSettings = app.conf[SETTINGS_KEY]
    missing = [
        name
        for name, value in (
            ("LABEL_STUDIO_URL", settings.label_studio_url),
            ("LABEL_STUDIO_API_KEY", settings.label_studio_api_key),
        )
        if not value
    ]
    if missing:
        raise JobSubmitError(
            f"cannot sync Label Studio project {ls_project_id}: set {' and '.join(missing)} "
            "(for the worker too) first"
        )
    with store.session() as session:
        job_id = create_job(session, "sync", params={"ls_project_id": ls_project_id}).id
    return _send(
        app, store, job_id, SYNC_PROJECT_TASK, [job_id, int(ls_project_id)], PSEUDO_LABEL_QUEUE
    )


def training_available(app: Celery) -> bool:
    """Whether a training task is installed in this app."""
    return TRAIN_TASK in app.tasks


def submit_training(
    app: Celery,
    store: Store,
    project_id: int | None,
    *,
    reason: str,
    config: dict[str, Any] | None = None,
) -> int:
    """Queue a training run; return the job id.

    Raises:
        JobSubmitError: no training task is installed, or the broker is unreachable.
    """
    if not training_available(app):
        raise JobSubmitError("no training task is installed in this deployment")
    with store.session() as session:
        job_id = create_job(
            session,
            "train",
            project_id=project_id,
            params={"reason": reason, "config": config or {}},
        ).id
    return _send(app, store, job_id, TRAIN_TASK, [job_id], TRAINING_QUEUE)

"""The Celery application factory.

Queues: ``pseudo_labels`` (CPU work: pseudo-labels, Label Studio sync, checks) and
``training`` (GPU work). Every task acknowledges late and is rejected back to the queue when
its worker process dies, so a killed task runs again; tasks are idempotent. Without a broker
URL, an embedded filesystem broker under the data directory is used (no server needed; Redis is
recommended for deployments: it also redelivers the tasks of a worker killed as a whole, after
``visibility_timeout_s``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.worker import context, tasks
from labeling_pipeline.worker.names import (
    CHECK_RETRAINING_TASK,
    FAIL_LOST_JOBS_TASK,
    PSEUDO_LABEL_QUEUE,
    QUEUES,
    SETTINGS_KEY,
    TRAIN_SPECIALIST_TASK,
    TRAIN_TASK,
    TRAINING_QUEUE,
)
from labeling_pipeline.worker.watchdog import check_interval_s


def broker_config(settings: PipelineSettings) -> dict[str, Any]:
    """Return broker, result backend and transport options for these settings."""
    if settings.broker_url:
        backend = settings.result_backend or (
            settings.broker_url
            if settings.broker_url.startswith(("redis://", "rediss://"))
            else None
        )
        # Redis: messages of a worker that died come back after the visibility timeout; sweep
        # for them every few seconds (kombu's default sweep is about every 100 s)
        sweep_s = min(10.0, max(1.0, settings.visibility_timeout_s / 10))
        return {
            "broker_url": settings.broker_url,
            "result_backend": backend,
            "broker_transport_options": {
                "visibility_timeout": settings.visibility_timeout_s,
                "unacked_restore_interval": sweep_s,
                "unacked_restore_throttle": 1,
            },
        }
    root = settings.broker_dir.resolve()
    folders = {name: root / name for name in ("queue", "processed", "results", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "result_backend": settings.result_backend or f"file://{folders['results']}",
        "broker_transport_options": {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
            "store_processed": False,
            "polling_interval": 0.1,
        },
    }


def create_celery_app(settings: PipelineSettings, *, name: str = "unsamv2") -> Celery:
    """Build the Celery app for these settings (tasks registered, beat schedule set).

    The settings are kept in ``app.conf[SETTINGS_KEY]`` for the tasks.
    """
    app = Celery(name)
    app.conf.update(
        **broker_config(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=PSEUDO_LABEL_QUEUE,
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_exchange=PSEUDO_LABEL_QUEUE,
        task_default_routing_key=PSEUDO_LABEL_QUEUE,
        task_routes={
            TRAIN_TASK: {"queue": TRAINING_QUEUE},
            TRAIN_SPECIALIST_TASK: {"queue": TRAINING_QUEUE},
        },
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=dt.timedelta(days=7),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "check-retraining": {
                "task": CHECK_RETRAINING_TASK,
                "schedule": dt.timedelta(seconds=settings.retrain_check_interval_s),
            },
            "fail-lost-jobs": {
                "task": FAIL_LOST_JOBS_TASK,
                "schedule": dt.timedelta(seconds=check_interval_s(settings.job_stale_s)),
            },
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    app.conf[SETTINGS_KEY] = settings
    tasks.register(app)
    context.connect_signals()
    return app

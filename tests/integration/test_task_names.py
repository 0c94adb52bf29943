"""Every task name in `worker.names` is registered on the app, and the beat entries name them."""

from __future__ import annotations

from pathlib import Path

from labeling_pipeline.worker import names
from labeling_pipeline.worker.app import create_celery_app
from ml_backend.settings import Settings


def test_every_task_name_is_registered_and_routed(tmp_path: Path) -> None:
    app = create_celery_app(Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path)}).pipeline)
    declared = {value for key, value in vars(names).items() if key.endswith("_TASK")}
    ours = {name for name in app.tasks if name.startswith("unsamv2.")}
    assert declared == ours
    beat_tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert beat_tasks <= declared and names.CHECK_RETRAINING_TASK in beat_tasks
    assert app.conf.task_routes[names.TRAIN_TASK] == {"queue": names.TRAINING_QUEUE}
    assert app.conf.task_routes[names.TRAIN_SPECIALIST_TASK] == {"queue": names.TRAINING_QUEUE}

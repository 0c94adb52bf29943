"""Celery through real worker processes, on Redis and on the embedded filesystem broker."""

from __future__ import annotations

import pytest

from labeling_pipeline.store import MaskRecord, Store
from labeling_pipeline.store.jobs import list_jobs
from labeling_pipeline.store.repository import get_or_create_project, replace_human_masks
from labeling_pipeline.worker.app import create_celery_app
from ml_backend.settings import Settings

from helpers import wait_for


@pytest.fixture(params=["embedded", "redis"])
def broker_env(request, service_env: dict[str, str]) -> dict[str, str]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        db = 1 + request.node.name.__hash__() % 14  # one Redis database per test
        service_env["UNSAMV2_BROKER_URL"] = f"{url}/{db}"
    return service_env


def seed_project_with_masks(store: Store, count: int) -> int:
    rle = {"size": [2, 2], "counts": "04"}
    with store.session() as s:
        project_id = get_or_create_project(s, "p").id
        replace_human_masks(
            s,
            project_id,
            ls_task_id=1,
            annotation_id=1,
            masks=[MaskRecord(f"r{i}", "Car", rle, 2, 2, 4) for i in range(count)],
        )
    return project_id


def test_task_round_trip_through_a_worker(broker_env, start_service) -> None:
    broker_env["UNSAMV2_RETRAIN_MIN_NEW_MASKS"] = "3"
    settings = Settings.from_env(broker_env).pipeline
    store = Store(settings.resolved_database_url)
    project_id = seed_project_with_masks(store, 3)
    worker = start_service(["worker", "--concurrency", "1"], broker_env)
    worker.wait_log("ready", timeout=60)
    app = create_celery_app(settings)
    result = app.send_task("unsamv2.check_retraining").get(timeout=60)
    assert result["due"] == [project_id]
    assert result["training_installed"] is True  # and a training job was queued for it
    assert len(result["queued_jobs"]) == 1
    assert "3 new accepted masks" in result["decisions"][0]["reason"]
    with store.session() as s:
        jobs = list_jobs(s, kind="retrain_check")
        assert len(jobs) == 1 and jobs[0].status == "done" and jobs[0].attempts == 1
    assert app.control.ping(timeout=5), "the worker answers broadcast pings (health checks)"


def test_beat_entry_fires(service_env: dict[str, str], start_service) -> None:
    service_env["UNSAMV2_RETRAIN_CHECK_INTERVAL_S"] = "0.5"
    store = Store(Settings.from_env(service_env).pipeline.resolved_database_url)
    worker = start_service(["worker"], service_env)
    worker.wait_log("ready", timeout=60)
    start_service(["beat"], service_env)

    def checks() -> int:
        with store.session() as s:
            return len([j for j in list_jobs(s, kind="retrain_check") if j.status == "done"])

    assert wait_for(lambda: checks() >= 2, 60, "two beat-triggered checks")

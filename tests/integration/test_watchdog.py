"""Lost jobs: a running job whose worker went silent is failed; a working one is kept alive."""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import signal
import threading
from pathlib import Path

import pytest
from PIL import Image as PILImage

from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.store import Store
from labeling_pipeline.store.images import cache_image_bytes
from labeling_pipeline.store.jobs import create_job, start_job
from labeling_pipeline.store.models import Job, PseudoLabelImage, PseudoLabelRun
from labeling_pipeline.store.repository import add_image, get_or_create_project
from labeling_pipeline.store.stale_jobs import fail_stale_jobs
from labeling_pipeline.worker.app import create_celery_app
from labeling_pipeline.worker.jobs import submit_pseudo_label_run
from labeling_pipeline.worker.names import FAIL_LOST_JOBS_TASK
from labeling_pipeline.worker.watchdog import job_heartbeat
from ml_backend import cli
from ml_backend.settings import Settings

from helpers import wait_for


@pytest.fixture
def settings(tmp_path: Path, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("UNSAMV2_", "LABEL_STUDIO_")):
            monkeypatch.delenv(key)
    env = {"UNSAMV2_DATA_DIR": str(tmp_path / "data"), "UNSAMV2_JOB_STALE_S": "600"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env(env).pipeline


@pytest.fixture
def store(settings) -> Store:
    return Store(settings.resolved_database_url)


def running_job(store: Store, *, silent_s: float, status: str = "running") -> int:
    """A job row whose last sign of life was `silent_s` seconds ago."""
    with store.session() as session:
        job_id = create_job(session, "train").id
        if status == "running":
            start_job(session, job_id, worker_pid=1)
    aged = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=silent_s)
    with store.session() as session:
        job = session.get(Job, job_id)
        job.created_at = aged
        job.started_at = aged if status == "running" else None
        job.updated_at = aged
    return job_id


def job_row(store: Store, job_id: int) -> Job:
    with store.session() as session:
        return session.get(Job, job_id)


def image_status(store: Store, image_id: int) -> str | None:
    with store.session() as session:
        row = session.query(PseudoLabelImage).filter_by(image_id=image_id).one_or_none()
        return row.status if row is not None else None


def one_image_project(store: Store, settings) -> int:
    buffer = io.BytesIO()
    scene = generate_scene(0, SceneConfig(height=96, width=128, min_objects=1, max_objects=2))
    PILImage.fromarray(scene.image).save(buffer, format="PNG")
    cached = cache_image_bytes(buffer.getvalue(), settings.images_dir)
    with store.session() as session:
        project_id = get_or_create_project(session, "lost").id
        add_image(
            session,
            project_id,
            sha256=cached.sha256,
            local_path=str(cached.path),
            width=cached.width,
            height=cached.height,
        )
    return project_id


def test_listing_jobs_fails_those_silent_too_long(store, capsys) -> None:
    lost = running_job(store, silent_s=3600)
    alive = running_job(store, silent_s=60)
    waiting = running_job(store, silent_s=3600, status="queued")
    assert cli.main(["jobs", "--json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[lost]["status"] == "failed"
    assert rows[lost]["message"].startswith("no word from its worker for 3600 s")
    assert "probably killed" in rows[lost]["message"] and "resubmit" in rows[lost]["message"]
    assert rows[alive]["status"] == "running" and rows[waiting]["status"] == "queued"
    assert job_row(store, lost).finished_at is not None


def test_the_backend_jobs_routes_fail_lost_jobs(settings, store, tmp_path) -> None:
    from ml_backend.label_studio.app import create_app
    from ml_backend.runtime import ModelRuntime

    full = Settings.from_env(
        {"UNSAMV2_DATA_DIR": str(settings.data_dir), "UNSAMV2_JOB_STALE_S": "600"}
    )
    runtime = ModelRuntime(full.pipeline, store=store, poll_s=0)
    client = create_app(full, runtime=runtime, store=store, start_runtime=False).test_client()
    lost, alive = running_job(store, silent_s=3600), running_job(store, silent_s=60)
    rows = {row["id"]: row for row in client.get("/jobs").get_json()["jobs"]}
    assert rows[lost]["status"] == "failed" and "probably killed" in rows[lost]["message"]
    assert rows[alive]["status"] == "running"
    other = running_job(store, silent_s=3600)
    assert client.get(f"/jobs/{other}").get_json()["status"] == "failed"


def test_the_beat_task_fails_lost_jobs(settings, store) -> None:
    lost = running_job(store, silent_s=3600)
    alive = running_job(store, silent_s=10)
    app = create_celery_app(settings)
    assert any(e["task"] == FAIL_LOST_JOBS_TASK for e in app.conf.beat_schedule.values())
    assert app.tasks[FAIL_LOST_JOBS_TASK].apply().get() == {"failed_jobs": [lost]}
    assert job_row(store, lost).status == "failed" and job_row(store, alive).status == "running"
    assert app.tasks[FAIL_LOST_JOBS_TASK].apply().get() == {"failed_jobs": []}


def test_the_staleness_limit_is_a_setting(store) -> None:
    job_id = running_job(store, silent_s=120)
    with store.session() as session:
        assert fail_stale_jobs(session, stale_s=300) == []
    with store.session() as session:
        assert [j.id for j in fail_stale_jobs(session, stale_s=60)] == [job_id]


def test_a_heartbeat_keeps_a_working_job_alive_and_stops_with_its_block(store) -> None:
    job_id = running_job(store, silent_s=3600)
    before = job_row(store, job_id).updated_at
    with job_heartbeat(store, job_id, interval_s=0.05):
        wait_for(lambda: job_row(store, job_id).updated_at > before, 30, "a heartbeat")
        with store.session() as session:
            assert fail_stale_jobs(session, stale_s=600) == []
    assert not any(t.name == f"job-{job_id}-heartbeat" for t in threading.enumerate())
    assert job_row(store, job_id).status == "running"


def test_a_killed_worker_s_job_fails_once_silent(service_env, start_service) -> None:
    """Embedded broker: a worker killed as a whole never redelivers; the job must not hang."""
    service_env["UNSAMV2_JOB_STALE_S"] = "3"  # heartbeat every 0.5 s
    settings = Settings.from_env(service_env).pipeline
    store = Store(settings.resolved_database_url)
    project_id = one_image_project(store, settings)
    worker = start_service(["worker", "--concurrency", "1"], service_env)
    worker.wait_log("ready")
    job_id = submit_pseudo_label_run(create_celery_app(settings), store, project_id)
    with store.session() as session:
        out_dir = Path(session.query(PseudoLabelRun).filter_by(job_id=job_id).one().output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".1.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the image task waits here, its heartbeat running
        wait_for(lambda: image_status(store, 1) == "running", 60, "the image task to start")
        last = job_row(store, job_id).updated_at
        wait_for(lambda: job_row(store, job_id).updated_at > last, 30, "heartbeats")
        with store.session() as session:
            assert fail_stale_jobs(session, stale_s=3) == []  # alive: beats within the limit
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        fcntl.flock(lock, fcntl.LOCK_UN)

    def failed() -> bool:
        with store.session() as session:
            fail_stale_jobs(session, stale_s=3)
        return job_row(store, job_id).status == "failed"

    wait_for(failed, 60, "the lost job to be failed")
    assert "no word from its worker" in job_row(store, job_id).message

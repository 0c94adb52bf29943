"""Pseudo-label tasks through real workers: fan-out, and a worker killed mid-task.

A test holds the per-image output lock so the task is reliably in the middle of its work when
its process is killed with SIGKILL; after redelivery exactly one result exists and no partial
file is left.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

import pytest
from pycocotools import mask as mask_utils

from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.store import Store
from labeling_pipeline.store.images import cache_image_bytes
from labeling_pipeline.store.models import Job, PseudoLabelImage, PseudoLabelRun
from labeling_pipeline.store.repository import add_image, get_or_create_project
from labeling_pipeline.worker.app import create_celery_app
from labeling_pipeline.worker.jobs import submit_pseudo_label_run
from ml_backend.settings import Settings

from helpers import wait_for

SMALL = SceneConfig(height=96, width=128, min_objects=1, max_objects=2, clutter_count=6)


def seed_images(store: Store, settings, count: int) -> int:
    import io

    from PIL import Image

    with store.session() as s:
        project_id = get_or_create_project(s, "synthetic").id
    for seed in range(count):
        buffer = io.BytesIO()
        Image.fromarray(generate_scene(seed, SMALL).image).save(buffer, format="PNG")
        cached = cache_image_bytes(buffer.getvalue(), settings.images_dir)
        with store.session() as s:
            add_image(
                s,
                project_id,
                sha256=cached.sha256,
                local_path=str(cached.path),
                width=cached.width,
                height=cached.height,
            )
    return project_id


@pytest.fixture(params=["embedded", "redis"])
def env(request, service_env):
    if request.param == "redis":
        db = 2 + abs(hash(request.node.name)) % 13
        service_env["UNSAMV2_BROKER_URL"] = f"{request.getfixturevalue('redis_url')}/{db}"
    return service_env


def job_row(store: Store, job_id: int) -> Job:
    with store.session() as s:
        return s.get(Job, job_id)


def image_status(store: Store, image_id: int) -> str | None:
    with store.session() as s:
        row = s.query(PseudoLabelImage).filter_by(image_id=image_id).one_or_none()
        return row.status if row is not None else None


def test_project_fans_out_one_task_per_image(env, start_service) -> None:
    settings = Settings.from_env(env).pipeline
    store = Store(settings.resolved_database_url)
    project_id = seed_images(store, settings, 3)
    start_service(["worker", "--concurrency", "2"], env).wait_log("ready")
    job_id = submit_pseudo_label_run(create_celery_app(settings), store, project_id)
    wait_for(lambda: job_row(store, job_id).status == "done", 120, "the pseudo-label run")
    job = job_row(store, job_id)
    assert (job.progress_done, job.progress_total) == (3, 3)
    assert job.result == {"images_done": 3, "images_failed": 0}
    assert job.attempts == 1  # the project task ran once; its image tasks are not tries
    with store.session() as s:
        rows = s.query(PseudoLabelImage).all()
        assert len(rows) == 3 and all(r.status == "done" and r.num_masks > 0 for r in rows)
        paths = [Path(r.json_path) for r in rows]
    for path in paths:  # valid, pycocotools-decodable output
        import json

        for ann in json.loads(path.read_text())["annotations"]:
            rle = {
                "size": ann["segmentation"]["size"],
                "counts": ann["segmentation"]["counts"].encode(),
            }
            assert mask_utils.area(rle) == ann["area"]


def test_killed_worker_process_is_redelivered_once(env, start_service) -> None:
    settings = Settings.from_env(env).pipeline
    store = Store(settings.resolved_database_url)
    project_id = seed_images(store, settings, 1)
    worker = start_service(["worker", "--concurrency", "1"], env)
    worker.wait_log("ready")
    job_id = submit_pseudo_label_run(create_celery_app(settings), store, project_id)
    with store.session() as s:
        run = s.query(PseudoLabelRun).filter_by(job_id=job_id).one()
        out_dir, image_id = Path(run.output_dir), s.query(PseudoLabelImage).count() + 1
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f".{image_id}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the task will wait here, mid-work
        wait_for(lambda: image_status(store, image_id) == "running", 60, "the image task")
        victim = job_row(store, job_id).worker_pid
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: job_row(store, job_id).worker_pid not in (victim, None),
            60,
            "the redelivered task",
        )
        fcntl.flock(lock, fcntl.LOCK_UN)
    wait_for(lambda: job_row(store, job_id).status == "done", 120, "the run to finish")
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == [
        f"{image_id}.json"
    ]
    assert not list(out_dir.glob("*.tmp")) and not list(out_dir.glob(".*.tmp"))
    with store.session() as s:
        assert s.query(PseudoLabelImage).count() == 1
    assert "WorkerLostError" in worker.log() or "exited with 'signal 9" in worker.log()


def test_whole_worker_killed_redis_redelivers_after_visibility_timeout(
    service_env, start_service, redis_url
) -> None:
    """With Redis, a task of a worker that died as a whole comes back to a new worker."""
    service_env["UNSAMV2_BROKER_URL"] = f"{redis_url}/15"
    service_env["UNSAMV2_VISIBILITY_TIMEOUT_S"] = "3"
    settings = Settings.from_env(service_env).pipeline
    store = Store(settings.resolved_database_url)
    project_id = seed_images(store, settings, 1)
    first = start_service(["worker", "--concurrency", "1"], service_env)
    first.wait_log("ready")
    job_id = submit_pseudo_label_run(create_celery_app(settings), store, project_id)
    with store.session() as s:
        out_dir = Path(s.query(PseudoLabelRun).filter_by(job_id=job_id).one().output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".1.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wait_for(lambda: image_status(store, 1) == "running", 60, "the image task to start")
        os.killpg(first.process.pid, signal.SIGKILL)  # main process and children at once
        first.process.wait()
        start_service(["worker", "--concurrency", "1"], service_env).wait_log("ready")
        fcntl.flock(lock, fcntl.LOCK_UN)
    wait_for(lambda: job_row(store, job_id).status == "done", 120, "redelivery to the new worker")
    assert job_row(store, job_id).attempts == 1  # image tasks are not tries of the job
    assert [p.name for p in out_dir.iterdir() if not p.name.startswith(".")] == ["1.json"]

"""`unsamv2 jobs` (list, show, wait, submit) and `unsamv2 images add`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `jobs` and `images`."""
    jobs = subparsers.add_parser("jobs", help="list, inspect and submit background jobs")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true", help="print JSON")
    jobs.set_defaults(run=run_list)
    sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    show = sub.add_parser("show", help="one job")
    show.add_argument("job_id", type=int)
    show.set_defaults(run=run_show)
    wait = sub.add_parser("wait", help="wait until a job finishes; exit 1 if it failed")
    wait.add_argument("job_id", type=int)
    wait.add_argument("--timeout", type=float, default=3600.0)
    wait.set_defaults(run=run_wait)
    submit = sub.add_parser("submit", help="queue a job")
    kinds = submit.add_subparsers(dest="kind", required=True, metavar="KIND")
    pseudo = kinds.add_parser("pseudo-label", help="pseudo-label every image of a project")
    pseudo.add_argument("--project", required=True, help="project id, ls:<id> or name")
    pseudo.add_argument("--features", help="feature extractor spec (default UNSAMV2_FEATURES)")
    pseudo.set_defaults(run=run_submit_pseudo_label)
    train = kinds.add_parser("train", help="fine-tune on a training worker, then publish")
    train.add_argument("--project", required=True, help="project id, ls:<id> or name")
    train.add_argument("--steps", type=int, help="optimiser steps (default 2000)")
    train.set_defaults(run=run_submit_train)
    sync = kinds.add_parser("sync", help="pull a Label Studio project's images and annotations")
    sync.add_argument("--ls-project", type=int, required=True, help="Label Studio project id")
    sync.set_defaults(run=run_submit_sync)

    images = subparsers.add_parser("images", help="register local images in a project")
    images_sub = images.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    add = images_sub.add_parser("add", help="copy images into the cache and register them")
    add.add_argument("--project", required=True, help="project name (created if missing)")
    add.add_argument("paths", type=Path, nargs="+", help="image files or folders")
    add.set_defaults(run=run_images_add)


def _store() -> Any:
    from labeling_pipeline.store import Store
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    return settings, Store(settings.pipeline.resolved_database_url)


def _fail_lost_jobs(settings: Any, store: Any) -> None:
    """Mark failed the running jobs whose worker went silent (as the beat entry does)."""
    from labeling_pipeline.worker.watchdog import fail_lost

    fail_lost(settings.pipeline, store)


def _print_jobs(rows: list[dict[str, Any]]) -> None:
    print(f"{'id':>5} {'kind':<14} {'status':<8} {'progress':>10} {'tries':>5}  message")
    for r in rows:
        progress = f"{r['progress']['done']}/{r['progress']['total']}"
        print(
            f"{r['id']:>5} {r['kind']:<14} {r['status']:<8} {progress:>10} {r['attempts']:>5}  "
            f"{r['message'][:60]}"
        )


def run_list(args: argparse.Namespace) -> int:
    """List recent jobs."""
    from labeling_pipeline.store.jobs import job_as_dict, list_jobs

    settings, store = _store()
    _fail_lost_jobs(settings, store)
    with store.session() as session:
        rows = [job_as_dict(j) for j in list_jobs(session, limit=args.limit)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_jobs(rows)
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Show one job as JSON."""
    from labeling_pipeline.store.jobs import get_job, job_as_dict

    settings, store = _store()
    _fail_lost_jobs(settings, store)
    with store.session() as session:
        print(json.dumps(job_as_dict(get_job(session, args.job_id)), indent=2))
    return 0


def run_wait(args: argparse.Namespace) -> int:
    """Poll a job until it is done (0) or failed (1)."""
    from labeling_pipeline.store.jobs import FINISHED, get_job, job_as_dict

    settings, store = _store()
    deadline = time.monotonic() + args.timeout
    while True:
        _fail_lost_jobs(settings, store)
        with store.session() as session:
            row = job_as_dict(get_job(session, args.job_id))
        if row["status"] in FINISHED or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(json.dumps(row, indent=2))
    return 0 if row["status"] == "done" else 1


def _submit(kind: str, **kwargs: Any) -> int:
    from labeling_pipeline.worker import jobs
    from labeling_pipeline.worker.app import create_celery_app

    settings, store = _store()
    app = create_celery_app(settings.pipeline)
    if kind == "sync":
        job_id = jobs.submit_sync(app, store, kwargs["ls_project"])
    else:
        from labeling_pipeline.store.repository import find_project

        with store.session() as session:
            project_id = find_project(session, kwargs["project"]).id
        if kind == "train":
            config = {"steps": kwargs["steps"]} if kwargs["steps"] else {}
            job_id = jobs.submit_training(
                app, store, project_id, reason="unsamv2 jobs submit", config=config
            )
        else:
            job_id = jobs.submit_pseudo_label_run(
                app, store, project_id, features=kwargs["features"]
            )
    print(f"queued job {job_id} (follow it with `unsamv2 jobs show {job_id}`)")
    return 0


def run_submit_pseudo_label(args: argparse.Namespace) -> int:
    """Queue a pseudo-label run."""
    return _submit("pseudo-label", project=args.project, features=args.features)


def run_submit_train(args: argparse.Namespace) -> int:
    """Queue a training run."""
    return _submit("train", project=args.project, steps=args.steps)


def run_submit_sync(args: argparse.Namespace) -> int:
    """Queue a Label Studio sync."""
    return _submit("sync", ls_project=args.ls_project)


def run_images_add(args: argparse.Namespace) -> int:
    """Copy images into the cache and register them in a project."""
    from core_model.errors import InvalidImageError
    from labeling_pipeline.store import NotFoundError
    from labeling_pipeline.store.images import cache_image_file
    from labeling_pipeline.store.repository import add_image, get_or_create_project

    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        raise NotFoundError(f"no such file or folder: {', '.join(missing)}; nothing added")
    settings, store = _store()
    files = [
        p
        for path in args.paths
        for p in (sorted(path.rglob("*")) if path.is_dir() else [path])
        if p.is_file()
    ]
    added = skipped = 0
    with store.session() as session:
        project_id = get_or_create_project(session, args.project).id
    for path in files:
        try:
            cached = cache_image_file(path, settings.pipeline.images_dir)
        except InvalidImageError as exc:
            print(f"skipped {path}: {exc}")
            skipped += 1
            continue
        with store.session() as session:
            add_image(
                session,
                project_id,
                sha256=cached.sha256,
                local_path=str(cached.path),
                width=cached.width,
                height=cached.height,
                source_url=str(path.resolve()),
            )
        added += 1
    print(f"project {args.project!r} (id {project_id}): {added} images added, {skipped} skipped")
    return 0

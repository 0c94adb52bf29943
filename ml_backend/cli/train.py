"""`unsamv2 train` (fine-tune now, in this process) and `unsamv2 models list|export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def parse_setting(text: str) -> tuple[str, Any]:
    """Parse KEY=VALUE; VALUE is read as JSON when it parses, else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_parser(subparsers: Any) -> None:
    """Register `train` and `models`."""
    train = subparsers.add_parser(
        "train", help="fine-tune on a project's pseudo-labels and accepted masks, then publish"
    )
    train.add_argument("--project", required=True, help="project id, ls:<id> or name")
    train.add_argument("--steps", type=int, help="optimiser steps (default 2000)")
    train.add_argument(
        "--set",
        dest="settings",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training setting, e.g. --set lr=3e-4",
    )
    train.add_argument(
        "--features", help="pseudo-label feature extractor (default UNSAMV2_FEATURES)"
    )
    train.set_defaults(run=run_train)

    models = subparsers.add_parser("models", help="published model versions")
    sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="versions, newest first (* = current)")
    listing.set_defaults(run=run_list)
    export = sub.add_parser("export", help="write a version as an official UnSAMv2 checkpoint")
    export.add_argument("name", help="version name (or 'current')")
    export.add_argument("out", type=Path)
    export.set_defaults(run=run_export)


def _settings_and_store() -> tuple[Any, Any]:
    from labeling_pipeline.store import Store
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    return settings.pipeline, Store(settings.pipeline.resolved_database_url)


def run_train(args: argparse.Namespace) -> int:
    """Create a training job and run it here."""
    from labeling_pipeline.pseudo_labels.extractors import build_feature_extractor
    from labeling_pipeline.store.jobs import create_job
    from labeling_pipeline.store.repository import find_project
    from labeling_pipeline.training.config import TrainConfig
    from labeling_pipeline.training.project import base_checkpoint, train_project
    from labeling_pipeline.worker.watchdog import heartbeat_interval_s, job_heartbeat

    settings, store = _settings_and_store()
    config = dict(args.settings)
    if args.steps is not None:
        config["steps"] = args.steps
    TrainConfig.from_mapping(config)  # refuse bad settings before any work
    base_checkpoint(settings)  # and a missing base checkpoint, before a job exists
    with store.session() as session:
        project_id = find_project(session, args.project).id
        job_id = create_job(
            session,
            "train",
            project_id=project_id,
            params={"reason": "unsamv2 train", "config": config, "features": args.features},
        ).id
    print(f"training job {job_id} (progress: `unsamv2 jobs show {job_id}`)", flush=True)
    interval_s = heartbeat_interval_s(settings.job_stale_s)
    with job_heartbeat(store, job_id, interval_s=interval_s):  # alive while this process works
        summary = train_project(
            settings,
            store,
            job_id,
            extractor_for=lambda spec: build_feature_extractor(spec, device=settings.device),
            show_progress=True,
        )
    print(json.dumps(summary, indent=2))
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the versions."""
    from labeling_pipeline.store.repository import current_model_version, list_model_versions

    _, store = _settings_and_store()
    with store.session() as session:
        current = current_model_version(session)
        versions = list_model_versions(session)
        if not versions:
            print(
                "no model versions published yet (`unsamv2 train --project P` or a training "
                "job publishes one; until then the backend serves the base checkpoint)"
            )
        for version in versions:
            mark = "*" if current is not None and version.id == current.id else " "
            print(
                f"{mark} {version.name}  {version.model}  {version.created_at:%Y-%m-%d %H:%M}  "
                f"{version.path}"
            )
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Build a version and save it in the official layout."""
    from core_model.build import build_model
    from core_model.checkpoint import save_official_checkpoint
    from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
    from labeling_pipeline.store.repository import find_model_version

    settings, store = _settings_and_store()
    with store.session() as session:
        version = find_model_version(session, args.name)
        model_name, checkpoint = version.model, Path(version.path) / CHECKPOINT_FILE
    model = build_model(model_name, checkpoint, device=settings.device)
    save_official_checkpoint(model, args.out)
    print(f"{args.name}: official checkpoint written to {args.out}")
    return 0

"""`unsamv2 train`: fine-tune now, in this process, then gate (`unsamv2 models` lists versions)."""

from __future__ import annotations

import argparse
import json
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
    """Register `train`."""
    train = subparsers.add_parser(
        "train",
        help="fine-tune on a project's pseudo-labels and accepted masks; publish if it passes "
        "the held-out gate",
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
    train.add_argument(
        "--gate",
        dest="gate",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="held-out gate setting, e.g. --gate tolerance=0.05 (metric, min_masks, ...)",
    )
    train.add_argument(
        "--publish",
        action="store_true",
        help="publish even if the gate rejects the version or has too few masks to decide",
    )
    train.add_argument("--scope", help="lineage to train (default: the project's own)")
    train.set_defaults(run=run_train)


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
    from labeling_pipeline.store.versions import check_scope
    from labeling_pipeline.training.config import TrainConfig
    from labeling_pipeline.training.project import base_checkpoint, gate_config, train_project
    from labeling_pipeline.worker.watchdog import heartbeat_interval_s, job_heartbeat

    settings, store = _settings_and_store()
    config = dict(args.settings)
    if args.steps is not None:
        config["steps"] = args.steps
    TrainConfig.from_mapping(config)  # refuse bad settings before any work
    gate_config(settings, dict(args.gate))
    scope = check_scope(args.scope) if args.scope else None
    base_checkpoint(settings)  # and a missing base checkpoint, before a job exists
    with store.session() as session:
        project_id = find_project(session, args.project).id
        job_id = create_job(
            session,
            "train",
            project_id=project_id,
            params={
                "reason": "unsamv2 train",
                "config": config,
                "features": args.features,
                "gate": dict(args.gate),
                "publish": args.publish,
                "scope": scope,
            },
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

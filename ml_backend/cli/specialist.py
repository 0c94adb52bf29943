"""`unsamv2 specialist`: train, evaluate, run and list a project's task specialists.

- `train --project P --label L [--label L2 ...]`: train on the project's accepted masks of the
  label(s) (one label: binary; several: one class each), score the held-out images and publish
  only if the gate passes; `--queue` sends it to the worker's ``training`` queue instead;
- `evaluate VERSION`: score a specialist version on its project's held-out images;
- `predict VERSION IMAGE...`: write one PNG mask per image and print its regions;
- `list [--project P]`: specialist versions, newest first (* = current of its lineage);
- `nuclio --project P --labels A[,B] --out DIR [--gpu]`: write the Nuclio ``function.yaml``
  (and ``function-gpu.yaml``) serving the current specialist of those labels as a CVAT detector.

Base weights: `--hiera` a SAM 2.0/2.1 checkpoint of the variant's Hiera size, `--dino` a DINOv2
``save_pretrained`` folder or a timm ``model.safetensors``. Without them the encoders are random,
which is only useful for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `specialist`."""
    from core_model.specialist.config import CPU_VARIANT, SPECIALIST_VARIANTS

    parser = subparsers.add_parser(
        "specialist",
        help="task specialist (SAM2-UNeXT): train, evaluate, predict, list",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="specialist_command", required=True, metavar="ACTION")
    train = sub.add_parser("train", help="train on a project's accepted masks, gate, publish")
    train.add_argument("--project", required=True, help="project id, ls:<id> or name")
    train.add_argument("--label", action="append", required=True, help="label (repeat for C)")
    train.add_argument("--variant", default=CPU_VARIANT, choices=sorted(SPECIALIST_VARIANTS))
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=1)
    train.add_argument("--accumulation", type=int, default=1, help="micro-batches per step")
    train.add_argument("--lr", type=float, default=2e-4)
    train.add_argument("--hiera", help="SAM 2.0/2.1 checkpoint (trunk weights)")
    train.add_argument("--dino", help="DINOv2 save_pretrained folder or timm safetensors file")
    train.add_argument("--min-miou", type=float, default=0.5, help="gate: held-out mIoU (0.5)")
    train.add_argument("--min-dice", type=float, default=0.6, help="gate: held-out Dice (0.6)")
    train.add_argument("--min-images", type=int, help="fewest images with the label (8)")
    train.add_argument("--queue", action="store_true", help="run on the worker instead")
    train.set_defaults(run=run_train)
    evaluate = sub.add_parser("evaluate", help="score a version on its held-out images")
    evaluate.add_argument("version", help="specialist version name")
    evaluate.set_defaults(run=run_evaluate)
    predict = sub.add_parser("predict", help="segment images with a specialist version")
    predict.add_argument("version", help="specialist version name")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--out", type=Path, default=Path("specialist-masks"))
    predict.add_argument("--threshold", type=float, default=0.5)
    predict.add_argument("--min-area", type=int, default=64, help="smallest region in pixels")
    predict.set_defaults(run=run_predict)
    listing = sub.add_parser("list", help="specialist versions (* = current)")
    listing.add_argument("--project", help="only this project (id, ls:<id> or name)")
    listing.set_defaults(run=run_list)
    nuclio = sub.add_parser("nuclio", help="write a Nuclio function.yaml for CVAT")
    nuclio.add_argument("--project", required=True, help="project id, ls:<id> or name")
    nuclio.add_argument("--labels", required=True, help="the specialist's labels, A or A,B")
    nuclio.add_argument("--out", type=Path, required=True, help="folder for the files")
    nuclio.add_argument("--gpu", action="store_true", help="also write function-gpu.yaml")
    nuclio.add_argument("--host-data-dir", type=Path, help="the data folder on the Docker host")
    nuclio.set_defaults(run=run_nuclio)


def _settings_and_store() -> tuple[Any, Any]:
    from labeling_pipeline.store import Store
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    return settings.pipeline, Store(settings.pipeline.resolved_database_url)


def _train_params(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    config = {
        "variant": args.variant,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "accumulation": args.accumulation,
        "lr": args.lr,
    }
    return config, {"min_miou": args.min_miou, "min_dice": args.min_dice}


def run_train(args: argparse.Namespace) -> int:
    """Train (here or on the worker) and print the outcome."""
    from labeling_pipeline.specialist.jobs import create_specialist_job, run_specialist_job

    settings, store = _settings_and_store()
    config, gate = _train_params(args)
    job_id = create_specialist_job(
        store,
        args.project,
        args.label,
        config=config,
        gate=gate,
        hiera=str(Path(args.hiera).resolve()) if args.hiera else None,
        dino=str(Path(args.dino).resolve()) if args.dino else None,
        min_images=args.min_images,
    )
    if args.queue:
        return _send(settings, store, job_id)
    try:
        result = run_specialist_job(settings, store, job_id, show_progress=True)
    except Exception as exc:
        from labeling_pipeline.store.jobs import fail_job

        with store.session() as session:
            fail_job(session, job_id, str(exc))
        raise
    print(json.dumps(result, indent=2))
    return 0 if result["published"] else 1


def _send(settings: Any, store: Any, job_id: int) -> int:
    from labeling_pipeline.store.jobs import fail_job, get_job
    from labeling_pipeline.worker.app import create_celery_app
    from labeling_pipeline.worker.names import TRAIN_SPECIALIST_TASK, TRAINING_QUEUE

    app = create_celery_app(settings)
    try:
        message = app.send_task(TRAIN_SPECIALIST_TASK, args=[job_id], queue=TRAINING_QUEUE)
    except Exception as exc:  # kombu raises many connection errors
        with store.session() as session:
            fail_job(session, job_id, f"cannot queue the task: {exc}")
        raise OSError(f"job {job_id}: cannot reach the task broker: {exc}") from exc
    with store.session() as session:
        get_job(session, job_id).celery_task_id = message.id
    print(f"queued specialist training as job {job_id} (see `unsamv2 jobs`)")
    return 0


def _version(store: Any, name: str) -> tuple[Path, dict[str, Any]]:
    from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
    from labeling_pipeline.store.versions import get_version

    with store.session() as session:
        version = get_version(session, name)
        if not version.scope.startswith("specialist:"):
            raise ValueError(f"{name} is not a specialist version (scope {version.scope})")
        return Path(version.path) / CHECKPOINT_FILE, dict(version.metadata_ or {})


def run_evaluate(args: argparse.Namespace) -> int:
    """Score a version on its project's held-out images."""
    from core_model.specialist import get_variant, load_specialist
    from labeling_pipeline.specialist.data import prepare
    from labeling_pipeline.specialist.gate import SpecialistGate, score_probabilities
    from labeling_pipeline.specialist.service import project_data, split
    from labeling_pipeline.specialist.trainer import predict_prepared

    _, store = _settings_and_store()
    path, meta = _version(store, args.version)
    loaded = load_specialist(path)
    gate = SpecialistGate.from_mapping(meta.get("gate_settings"))
    data = project_data(store, int(meta["project_id"]), loaded.labels, min_images=1)
    _, held = split(data, gate)
    prepared = prepare(held, data.labels, get_variant(str(meta["variant"])).sam_size)
    probs = predict_prepared(loaded.model, prepared)
    scores = score_probabilities(probs, prepared.full_targets, threshold=gate.threshold)
    print(json.dumps({"version": args.version, **scores.to_dict()}, indent=2))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Write a PNG mask per image (255 = foreground) and print its regions."""
    import numpy as np
    from PIL import Image

    from core_model.imageio import load_image_rgb
    from core_model.specialist import load_specialist, predict_probabilities, regions
    from core_model.specialist.predict import foreground, uncertain_share

    _, store = _settings_and_store()
    path, _ = _version(store, args.version)
    loaded = load_specialist(path)
    args.out.mkdir(parents=True, exist_ok=True)
    for image_path in args.images:
        prob = predict_probabilities(loaded.model, load_image_rgb(image_path))
        found = regions(prob, threshold=args.threshold, min_area_px=args.min_area)
        mask = foreground(prob, threshold=args.threshold).any(axis=0)
        out = args.out / f"{image_path.stem}.png"
        Image.fromarray((mask * 255).astype(np.uint8)).save(out)
        scores = ", ".join(f"{r.score:.2f}" for r in found) or "-"
        print(
            f"{image_path}: {len(found)} region(s), scores {scores}, "
            f"uncertain {uncertain_share(prob):.3f} -> {out}"
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the specialist versions."""
    from labeling_pipeline.specialist.service import list_specialists
    from labeling_pipeline.store.repository import find_project

    _, store = _settings_and_store()
    project_id = None
    if args.project:
        with store.session() as session:
            project_id = find_project(session, args.project).id
    rows = list_specialists(store, project_id=project_id)
    if not rows:
        print("no specialists")
        return 0
    for row in rows:
        mark = "*" if row["current"] else " "
        miou = "-" if row["miou"] is None else f"{row['miou']:.3f}"
        print(
            f"{mark} {row['name']:<24} {row['scope']:<28} {row['status']:<9} mIoU {miou:>5} "
            f"{row['model']}"
        )
    return 0


def run_nuclio(args: argparse.Namespace) -> int:
    """Write the function file(s) of a current specialist; nothing on bad input."""
    from ml_backend.cvat.nuclio.specialist_yaml import (
        event_timeout_s,
        find_specialist,
        plan_deployment,
        write_function_files,
    )

    settings, store = _settings_and_store()
    function = find_specialist(store, args.project, args.labels.split(","))
    deployment = plan_deployment(
        store,
        function,
        settings.data_dir,
        host_data_dir=args.host_data_dir,
        database_url=settings.database_url,
    )
    for path in write_function_files(args.out, deployment, gpu=args.gpu):
        gpu = path.name == "function-gpu.yaml"
        print(
            f"{path}: {function.name} (labels {', '.join(function.labels)}; version "
            f"{function.version}; eventTimeout {event_timeout_s(deployment.variant, gpu=gpu)} s)"
        )
    return 0

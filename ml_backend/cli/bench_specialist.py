"""`unsamv2 bench specialist`: the task specialist on a synthetic task, and its speed.

Quality: generated part/whole scenes; the task is "every object" against textured background
clutter (`--template any`, the default), or "every object of one template" (e.g. `rings`: other
objects are negatives too, a much harder shape task). The specialist is trained on
the accepted masks of `--train` scenes and scored on `--test` other scenes (mIoU, Dice, MAE,
S-measure, probability threshold 0.5); a plain U-Net with the same decoder but no SAM 2 / DINOv2
features is trained on the same data as the baseline. Weights are random here (no pretrained
encoders on this machine): the figures measure architecture and recipe, not pretrained features.

Speed (`--speed`): pre-annotation seconds per 1024x768 image and training seconds per epoch of
100 images (estimated from a few timed steps) for `--speed-variant`.
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ml_backend.cli.arg_types import parse_size


def add_parser(benches: Any) -> None:
    """Register `bench specialist`."""
    from core_model.specialist.config import CPU_VARIANT, SPECIALIST_VARIANTS

    p = benches.add_parser(
        "specialist",
        help="task specialist: synthetic task quality vs a plain U-Net, and speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--variant", default="bench-tiny", choices=sorted(SPECIALIST_VARIANTS))
    p.add_argument("--train", type=int, default=40, help="training scenes (40)")
    p.add_argument("--test", type=int, default=20, help="held-out scenes (20)")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--template", default="any", help="the task: every object of this template")
    p.add_argument("--size", default="320x256", help="scene WIDTHxHEIGHT")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain U-Net")
    p.add_argument("--speed", action="store_true", help="also time prediction and training")
    p.add_argument("--speed-variant", default=CPU_VARIANT, choices=sorted(SPECIALIST_VARIANTS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_specialist_bench)


def run_specialist_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print a table."""
    import torch

    from labeling_pipeline.specialist.benchmark import (
        TaskBenchConfig,
        predict_speed,
        run_task_benchmark,
        train_speed,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = parse_size(args.size, minimum=64)
    config = TaskBenchConfig(
        variant=args.variant,
        train_scenes=args.train,
        test_scenes=args.test,
        height=height,
        width=width,
        template=args.template,
        epochs=args.epochs,
        baseline=not args.no_baseline,
    )
    rows = run_task_benchmark(config, show_progress=True)
    print(
        f"task: every '{args.template}' object; {args.train} training / {args.test} held-out scenes"
    )
    print(f"{'model':<46} {'mIoU':>6} {'Dice':>6} {'MAE':>6} {'S':>6} {'params':>9} {'train s':>8}")
    for row in rows:
        print(
            f"{row['model']:<46} {row['miou']:>6.3f} {row['dice']:>6.3f} {row['mae']:>6.3f} "
            f"{row['s_measure']:>6.3f} {row['trainable_params']:>9} {row['train_s']:>8.1f}"
        )
    result: dict[str, Any] = {
        "config": asdict(config),
        "rows": rows,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if args.speed:
        result["predict"] = predict_speed(args.speed_variant)
        result["train"] = train_speed(args.speed_variant)
        print(json.dumps({"predict": result["predict"], "train": result["train"]}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0

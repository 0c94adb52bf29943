"""`unsamv2 bench synthetic`: the synthetic part/whole benchmark, end to end on CPU.

Scenes -> weight-free pseudo-labels -> two tiny models trained from the same random
initialisation (with and without the granularity input) -> NoC80/NoC90/1-IoU on held-out scenes
against their true wholes and parts, plus how often mask area grows with granularity at nested
click points. Writes report.md / report.json and the training curves into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(benches: Any) -> None:
    """Register `bench synthetic`."""
    p = benches.add_parser(
        "synthetic", help="train and evaluate tiny models on generated scenes", description=__doc__
    )
    p.add_argument("--out", type=Path, default=Path("out/synthetic-benchmark"))
    p.add_argument("--steps", type=int, default=1500, help="training steps per model")
    p.add_argument("--train-scenes", type=int, default=48)
    p.add_argument("--test-scenes", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--style",
        choices=("simple", "harder"),
        default="simple",
        help="scene style of training and held-out images",
    )
    p.add_argument(
        "--size", type=int, default=320, help="harder style: long side of every scene in pixels"
    )
    p.set_defaults(run=run_synthetic)


def run_synthetic(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table."""
    from labeling_pipeline.evaluation.synthetic_benchmark import (
        SyntheticBenchmarkConfig,
        run_synthetic_benchmark,
    )
    from labeling_pipeline.evaluation.synthetic_harder import HarderSceneConfig

    config = SyntheticBenchmarkConfig(
        train_scenes=args.train_scenes,
        test_scenes=args.test_scenes,
        steps=args.steps,
        seed=args.seed,
        style=args.style,
        harder_scene=HarderSceneConfig(long_side_px=(args.size, args.size)),
    )
    run_synthetic_benchmark(args.out, config, progress=True, log=print)
    print((args.out / "report.md").read_text(), end="")
    return 0

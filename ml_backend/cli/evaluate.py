"""`unsamv2 evaluate`: NoC80/NoC90/1-IoU (simulated clicks) and AR@1000 on a dataset.

Writes `report.md`, `report.json` and PNG charts into `--out`. The interactive protocol and the
AR@1000 protocol are documented in `labeling_pipeline.evaluation` (and in the report itself).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SEARCH_METHODS = {"instance": "granularity", "click": "granularity-oracle"}
BASELINE_METHODS = {"sam2": "sam2-best-of-3", "sam2-single": "sam2-single"}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register the subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="interactive (NoC80/NoC90/1-IoU) and whole-image (AR@1000) evaluation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        required=True,
        metavar="coco:JSON:IMAGES_DIR|folder:PATH",
        help="COCO-format instances/parts, or a folder with images/ and masks/ (GrabCut style)",
    )
    p.add_argument("--config", default="small", help="model variant or YAML (default: small)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="UnSAMv2, SAM-2.1 or fine-tuned file")
    weights.add_argument(
        "--random-weights", action="store_true", help="random weights (pipeline check only)"
    )
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--max-clicks", type=_positive_int, default=20, help="click budget (20)")
    p.add_argument(
        "--iou-thresholds",
        type=float,
        nargs="+",
        default=[0.8, 0.9],
        metavar="T",
        help="NoC targets; sequences stop at the largest (default 0.8 0.9)",
    )
    p.add_argument(
        "--granularity-search",
        choices=sorted(SEARCH_METHODS),
        action="append",
        help="instance: best g per instance (default); click: per-click oracle; repeatable",
    )
    p.add_argument(
        "--granularities",
        type=float,
        nargs="+",
        metavar="G",
        help="granularity grid of the search, the oracle and AR (default 0.1 0.2 ... 1.0)",
    )
    p.add_argument(
        "--baseline",
        choices=sorted(BASELINE_METHODS),
        action="append",
        default=[],
        help="sam2: SAM-2 best of three masks per click; sam2-single: its single-mask output",
    )
    p.add_argument(
        "--baseline-checkpoint",
        type=Path,
        help="plain SAM-2.1 checkpoint for the baselines (default: this model's SAM-2 tokens)",
    )
    p.add_argument("--ar", action="store_true", help="also compute class-agnostic AR@1000")
    p.add_argument("--ar-points-per-side", type=_positive_int, default=32, help="AMG grid (32)")
    p.add_argument("--ar-pred-iou-thresh", type=float, default=0.8, help="AMG IoU filter (0.8)")
    p.add_argument(
        "--ar-stability-thresh", type=float, default=0.95, help="AMG stability filter (0.95)"
    )
    p.add_argument("--no-interactive", action="store_true", help="skip the click evaluation")
    p.add_argument("--limit", type=_positive_int, help="first N instances (and N images for AR)")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(run=run)


def _build_predictor(config: str, checkpoint: Path | None, device: str, seed: int) -> Any:
    import torch

    from core_model.build import build_model
    from core_model.predictor import GranularityPredictor

    if checkpoint is None:
        torch.manual_seed(seed)
    return GranularityPredictor(build_model(config, checkpoint, device=device))


def _model_metadata(prefix: str, predictor: Any, checkpoint: Path | None) -> dict[str, Any]:
    info = predictor.model.info
    return {
        f"{prefix}config": info.config_name,
        f"{prefix}checkpoint": str(checkpoint) if checkpoint else "random weights",
        f"{prefix}checkpoint_kind": info.checkpoint_kind,
        f"{prefix}version": info.version,
        f"{prefix}granularity_mode": info.granularity_mode,
    }


def _grid(args: argparse.Namespace) -> tuple[float, ...]:
    from labeling_pipeline.evaluation import GRANULARITY_GRID

    return tuple(args.granularities) if args.granularities else GRANULARITY_GRID


def _interactive_runs(args: argparse.Namespace, predictor: Any, baseline: Any) -> list[Any]:
    from labeling_pipeline.evaluation import InteractiveConfig

    methods = [SEARCH_METHODS[s] for s in dict.fromkeys(args.granularity_search or ["instance"])]
    runs = [(predictor, m) for m in methods]
    runs += [(baseline, BASELINE_METHODS[b]) for b in dict.fromkeys(args.baseline)]
    settings = {
        "max_clicks": args.max_clicks,
        "iou_thresholds": tuple(args.iou_thresholds),
        "granularities": _grid(args),
    }
    return [(p, InteractiveConfig(method=m, **settings)) for p, m in runs]


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report and print a summary; return 0."""
    from core_model.whole_image import WholeImageConfig
    from labeling_pipeline.evaluation import (
        ARConfig,
        evaluate_methods,
        open_dataset,
        run_ar_evaluation,
        write_report,
    )

    dataset = open_dataset(args.dataset)
    checkpoint = None if args.random_weights else args.checkpoint
    predictor = _build_predictor(args.config, checkpoint, args.device, args.seed)
    metadata: dict[str, Any] = {"dataset": args.dataset, "dataset_instances": len(dataset)}
    metadata |= _model_metadata("model_", predictor, checkpoint)
    if predictor.model.info.granularity_mode != "granularity":
        logger.warning("model has no trained granularity modules: SAM-2 multimask fallback")
    baseline = predictor
    if args.baseline and args.baseline_checkpoint is not None:
        baseline = _build_predictor(args.config, args.baseline_checkpoint, args.device, args.seed)
        metadata |= _model_metadata("baseline_", baseline, args.baseline_checkpoint)
    elif args.baseline:
        # with LoRA in the checkpoint the stock tokens no longer give stock SAM-2 masks
        lora = predictor.model.info.checkpoint_kind in ("official", "finetuned")
        metadata["baseline_model"] = "SAM-2 tokens of the evaluated model" + (
            " (LoRA-adapted decoder: pass --baseline-checkpoint for stock SAM-2)" if lora else ""
        )
    metadata |= {"device": args.device, "max_clicks": args.max_clicks, "limit": args.limit}
    metadata["granularities"] = " ".join(f"{g:g}" for g in _grid(args))
    results: list[Any] = []
    started = time.perf_counter()
    if not args.no_interactive:
        runs = _interactive_runs(args, predictor, baseline)

        def progress(index: int, method: str, result: Any) -> None:
            logger.info(
                "%s #%d (%s): %d clicks", method, index + 1, result.instance_id, len(result.ious)
            )

        samples = itertools.islice(dataset, args.limit)
        results = evaluate_methods(runs, samples, on_instance=progress)
    ar = None
    if args.ar:
        ar_config = ARConfig(
            granularities=_grid(args),
            whole_image=WholeImageConfig(
                points_per_side=args.ar_points_per_side,
                pred_iou_thresh=args.ar_pred_iou_thresh,
                stability_score_thresh=args.ar_stability_thresh,
                max_masks=1000,
            ),
        )
        images = itertools.islice(dataset.images(), args.limit)
        ar = run_ar_evaluation(predictor, images, config=ar_config)
    metadata["elapsed_s"] = round(time.perf_counter() - started, 2)
    paths = write_report(args.out, results, ar, metadata=metadata)
    for r in results:
        s = r.summary
        nocs = ", ".join(f"{k} {v:.2f}" for k, v in s.noc.items())
        print(f"{r.method}: {s.count} instances, {nocs}, 1-IoU {s.one_click_iou:.3f}")
    if ar is not None:
        print(f"AR@1000 {ar.ar1000:.3f} over {ar.images} images")
    print(f"report: {paths.markdown}, {paths.json}")
    return 0

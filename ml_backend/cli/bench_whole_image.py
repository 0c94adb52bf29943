"""`unsamv2 bench whole-image`: seconds per frame of the whole-image segmenter, old and new path.

On one model with random weights (Hiera-S by default) and one synthetic frame (1024x768 by
default), the image embedding is computed once (its time is printed apart) and every
configuration (grid side x granularities) is segmented from the cached embedding by:

* ``first``: the first algorithm (`core_model.whole_image_reference.reference_run`: every grid
  point decoded by the unshared decoder in row-major batches of 64, box NMS, upsampling);
* ``shared``: `WholeImageSegmenter` without coverage skipping (the shared-image decoder, same
  masks up to float rounding);
* ``new``: `WholeImageSegmenter` as served (shared decoder plus coverage skipping, decoded in
  ``--precision``: by default bfloat16 on CPUs with native bfloat16 matmuls, see
  `core_model.low_precision`);
* ``new f32``: the same in float32, timed when ``new`` runs in bfloat16.

Random weights give noisy masks whose boxes nearly all span the frame, so the filters are
relaxed (predicted IoU and stability 0) and box NMS is set high enough (``--nms``) that masks
are kept. The agreement column is the tolerance of the README: the fraction of the first
path's masks that have a new-path mask of the same granularity at mask IoU >= 0.9, and the
other way round. The first path is slow: it is timed only where the grid has at most
``--first-max-points`` clicks (the table says "not timed" elsewhere). Timings on a shared
machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core_model.low_precision import PRECISION_SETTINGS
from ml_backend.cli.arg_types import parse_size
from ml_backend.cli.bench_images import bench_image

GRANULARITY_SETS = {1: (1.0,), 3: (0.2, 0.5, 1.0)}


@dataclass(frozen=True)
class WholeImageBenchResult:
    """One configuration (seconds per frame after the embedding)."""

    points_per_side: int
    granularities: int
    new_s: float
    new_masks: int
    new_points_decoded: int
    new_points_skipped: int
    precision: str
    new_f32_s: float | None
    f32_worst_matched: float | None
    shared_s: float | None
    first_s: float | None
    first_masks: int | None
    speedup: float | None
    first_matched: float | None
    new_matched: float | None
    shared_worst_matched: float | None


def add_parser(benches: Any) -> None:
    """Register `bench whole-image` on the `bench` sub-parsers."""
    p = benches.add_parser(
        "whole-image",
        help="seconds per frame of whole-image masks: first algorithm vs the current one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="small", help="model variant (random weights)")
    p.add_argument("--size", type=parse_size, default=(1024, 768), metavar="WxH", help="frame size")
    p.add_argument("--grids", type=int, nargs="+", default=[16, 32], help="points per side")
    p.add_argument(
        "--granularities", type=int, nargs="+", default=[1, 3], choices=sorted(GRANULARITY_SETS)
    )
    p.add_argument("--nms", type=float, default=0.98, help="box NMS threshold")
    p.add_argument(
        "--precision",
        choices=PRECISION_SETTINGS,
        default="auto",
        help="decoder precision of the new path (auto: bfloat16 on CPUs with native bfloat16)",
    )
    p.add_argument(
        "--first-max-points",
        type=int,
        default=1024,
        help="time the first algorithm only on grids with at most this many clicks in all",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_whole_image)


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_config(
    predictor: Any, embedding: Any, config: Any, side: int, count: int, first_max_points: int
) -> WholeImageBenchResult:
    """Time one grid side and granularity count with all paths on a cached embedding."""
    from core_model.low_precision import resolve_precision
    from core_model.whole_image import WholeImageSegmenter
    from core_model.whole_image_reference import compare_masks, reference_run

    values = GRANULARITY_SETS[count]
    cfg = replace(config, points_per_side=side)
    precision = resolve_precision(cfg.decode_precision, predictor.device)
    new_s, new = _timed(
        lambda: WholeImageSegmenter(predictor, cfg).run(embedding, granularities=values)
    )
    f32 = replace(cfg, decode_precision="float32")
    new_f32_s = f32_worst = None
    if precision != "float32":
        new_f32_s, new_f32 = _timed(
            lambda: WholeImageSegmenter(predictor, f32).run(embedding, granularities=values)
        )
        f32_worst = compare_masks(new_f32.masks, new.masks).worst
    shared_s = first_s = speedup = first_matched = new_matched = shared_worst = None
    first_masks = None
    if side * side * count <= first_max_points:
        plain = replace(f32, skip_covered_points=False)
        shared_s, shared = _timed(
            lambda: WholeImageSegmenter(predictor, plain).run(embedding, granularities=values)
        )
        first_s, first = _timed(
            lambda: reference_run(predictor, cfg, embedding, granularities=values)
        )
        agreement = compare_masks(first.masks, new.masks)
        first_matched, new_matched = agreement.reference_matched, agreement.candidate_matched
        shared_worst = compare_masks(first.masks, shared.masks).worst
        first_masks, speedup = len(first.masks), first_s / new_s
    return WholeImageBenchResult(
        points_per_side=side,
        granularities=count,
        new_s=new_s,
        new_masks=len(new.masks),
        new_points_decoded=new.points_decoded,
        new_points_skipped=new.points_skipped,
        precision=precision,
        new_f32_s=new_f32_s,
        f32_worst_matched=f32_worst,
        shared_s=shared_s,
        first_s=first_s,
        first_masks=first_masks,
        speedup=speedup,
        first_matched=first_matched,
        new_matched=new_matched,
        shared_worst_matched=shared_worst,
    )


def _row(r: WholeImageBenchResult) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "not timed" if value is None else format(value, fmt)

    clicks = f"{r.new_points_decoded}/{r.new_points_skipped}"
    agree = (
        "-"
        if r.first_matched is None or r.new_matched is None
        else f"{r.first_matched:.2f}/{r.new_matched:.2f}"
    )
    return (
        f"{r.points_per_side:>2}x{r.points_per_side:<2} {r.granularities:>3} "
        f"{num(r.first_s, '.1f'):>9} {'-' if r.first_masks is None else r.first_masks:>5} "
        f"{num(r.shared_s, '.1f'):>9} {r.precision:>9} {r.new_s:>8.1f} "
        f"{num(r.new_f32_s, '.1f'):>9} {r.new_masks:>5} {clicks:>11} "
        f"{num(r.speedup, '.1f'):>9} {agree:>9} "
        f"{'-' if r.shared_worst_matched is None else format(r.shared_worst_matched, '.2f'):>6} "
        f"{'-' if r.f32_worst_matched is None else format(r.f32_worst_matched, '.2f'):>6}"
    )


def run_whole_image(args: argparse.Namespace) -> int:
    """Run `bench whole-image` and print a table."""
    import torch

    from core_model.build import build_model
    from core_model.predictor import GranularityPredictor
    from core_model.whole_image import WholeImageConfig

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    width, height = args.size
    torch.manual_seed(0)
    model = build_model(args.config, device=args.device)
    predictor = GranularityPredictor(model)
    device_name = (
        torch.cuda.get_device_name(0)
        if predictor.device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU"
    )
    config = WholeImageConfig(
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=args.nms,
        decode_precision=args.precision,
    )
    embed_s, embedding = _timed(lambda: predictor.embed(bench_image(width, height)))
    _warm_up(predictor, embedding, config)
    print(
        f"bench whole-image: model {args.config} (random weights), {width}x{height}, device "
        f"{args.device} ({device_name}), torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; embedding {embed_s:.2f} s (not counted); filters: predicted IoU 0, "
        f"stability 0, box NMS {args.nms}; seconds per frame after the embedding"
    )
    print(
        f"{'grid':>5} {'g':>3} {'first s':>9} {'masks':>5} {'shared s':>9} {'precision':>9} "
        f"{'new s':>8} {'new f32 s':>9} {'masks':>5} {'dec/skip':>11} {'first/new':>9} "
        f"{'agree':>9} {'shared':>6} {'vs f32':>6}"
    )
    results = []
    for side in args.grids:
        for count in args.granularities:
            r = bench_config(predictor, embedding, config, side, count, args.first_max_points)
            results.append(r)
            print(_row(r), flush=True)
    print(
        "first: first algorithm; shared: shared-image decoder, no coverage skipping; new: as "
        "served, in the precision shown; new f32: the same in float32; "
        "dec/skip: grid clicks decoded/skipped by the new path; agree: fraction of "
        "first masks matched by a new mask (mask IoU >= 0.9, same granularity) / of new masks "
        "matched by a first mask; shared: the same for the shared path (worse of the two); "
        "vs f32: the same between new and new f32; "
        f"'not timed': grid over {args.first_max_points} clicks, the first path is too slow"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": args.config,
            "size": [width, height],
            "device": args.device,
            "device_name": device_name,
            "threads": torch.get_num_threads(),
            "embed_s": embed_s,
            "box_nms_thresh": args.nms,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _warm_up(predictor: Any, embedding: Any, config: Any) -> None:
    """Decode one small grid so first-call allocations are not timed."""
    from core_model.whole_image import WholeImageSegmenter

    WholeImageSegmenter(predictor, replace(config, points_per_side=4)).run(embedding)

"""`unsamv2 bench encoder`: image-encoder time against the machine's sgemm floor.

The floor is the time the encoder's arithmetic would take at the speed of large float32
matrix products on this machine: encoder FLOPs (counted with `torch.utils.flop_counter`, SAM-2's
stock modules at the model's input size, attention included) divided by the best measured
sgemm throughput (square `torch.mm` of 1024..3072, same thread count, before and after the
timed runs). Each encoder path is timed alternately with the others, so a change of machine
load hits all alike; the table gives median and best time, time / floor, the speed-up of the
median against the stock path, and, for one fixed click decoded from each path's features, the
largest low-resolution logit difference and the number of mask pixels that differ from the
stock path's.

Paths: ``stock`` (SAM-2's modules, `encode_image(fast=False)`) and ``fast`` (the inference
forward of `core_model.modeling.fast_encoder`, the default). They are timed with glibc's
default malloc settings (`core_model.allocator.release_freed_memory`, whatever the command
line applied at start); with ``--malloc-keep`` both are timed again after
`core_model.allocator.keep_freed_memory` (what `unsamv2` applies to every command unless
``UNSAMV2_KEEP_FREED_MEMORY=false``): a process setting, so it is measured last.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core_model import allocator
from ml_backend.cli.arg_types import parse_size
from ml_backend.cli.bench_images import bench_image


def add_parser(benches: Any) -> None:
    """Register `bench encoder`."""
    p = benches.add_parser(
        "encoder", help="image-encoder time vs the sgemm floor", description=__doc__
    )
    p.add_argument("--config", default="small", help="model variant (random weights)")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    p.add_argument(
        "--size",
        type=parse_size,
        default=(1024, 768),
        metavar="WxH",
        help="image WIDTHxHEIGHT (resized to the model's S x S input)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed encoder runs per path")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument(
        "--sgemm-sizes",
        type=int,
        nargs="+",
        default=[1024, 2048, 3072],
        metavar="N",
        help="sides of the square matmuls that measure the sgemm throughput",
    )
    p.add_argument(
        "--malloc-keep", action="store_true", help="also time both paths with keep_freed_memory"
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_encoder_bench)


def attention_flops(*shapes: Any, **_: Any) -> int:
    """Count the FLOPs of a CPU flash attention call from its (B, H, L, E) q, k, v shapes."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(shapes[0], shapes[1], shapes[2]))  # type: ignore[no-untyped-call]


def fused_linear_flops(*shapes: Any, **_: Any) -> int:
    """Count the FLOPs of a oneDNN linear: x (..., K), weight (N, K).

    Both overloads: (x, weight, bias, attr, ...) and, with a binary epilogue,
    (x, other, weight, bias, attr).
    """
    x_shape = shapes[0]
    w_shape = shapes[1] if isinstance(shapes[3], str) else shapes[2]
    return 2 * int(np.prod(x_shape[:-1])) * int(w_shape[0]) * int(w_shape[1])


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Return total FLOPs of `fn()` and FLOPs per aten operator."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping: dict[Any, Any] = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops,
    }
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        mapping[torch.ops.mkldnn._linear_pointwise] = fused_linear_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def measure_sgemm(sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 3) -> float:
    """Return the best float32 `torch.mm` throughput in FLOP/s over square sizes (N x N)."""
    import torch

    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def _click_outputs(model: Any, images: Any, fast: bool, original_hw: tuple[int, int]) -> Any:
    """Encode with one path and decode a fixed click at the image centre, granularity 0.5."""
    import torch

    from core_model.preprocess import to_model_frame, upsample_masks

    height, width = original_hw
    embed, high_res = model.encode_image(images, fast=fast)
    coords = to_model_frame(
        np.array([[width / 2, height / 2]], np.float32), original_hw, int(model.image_size)
    )
    out = model.decode_granularity(
        embed,
        high_res,
        coords[None],
        torch.ones(1, 1, dtype=torch.int32),
        torch.tensor([[0.5]]),
    )
    logits = out.low_res_logits[0].float()
    return logits.numpy(), upsample_masks(logits, original_hw, threshold=0.0)


def run_encoder_bench(args: argparse.Namespace) -> int:
    """Run `bench encoder` and print its table."""
    import torch

    from core_model.build import build_model
    from core_model.preprocess import to_model_input

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(args.config)
    width, height = args.size
    images = to_model_input(bench_image(width, height), int(model.image_size), torch.device("cpu"))
    with torch.inference_mode():
        report = _measure(model, images, (height, width), args)
    _print_report(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _measure(
    model: Any, images: Any, original_hw: tuple[int, int], args: argparse.Namespace
) -> dict[str, Any]:
    import torch

    stock_flops, per_op = count_flops(lambda: model.encode_image(images, fast=False))
    fast_flops, _ = count_flops(lambda: model.encode_image(images, fast=True))
    sgemm = [measure_sgemm(tuple(args.sgemm_sizes))]
    reference = _click_outputs(model, images, False, original_hw)
    paths: dict[str, dict[str, Any]] = {}
    rounds = [("stock", False), ("fast", True)]
    allocator.release_freed_memory()
    _time_paths(model, images, rounds, args.repeats, paths)
    if args.malloc_keep:
        if allocator.keep_freed_memory():
            _time_paths(
                model,
                images,
                [("stock + malloc-keep", False), ("fast + malloc-keep", True)],
                args.repeats,
                paths,
            )
        else:
            print("keep_freed_memory: not available here (no glibc mallopt); rows skipped")
    sgemm.append(measure_sgemm(tuple(args.sgemm_sizes)))
    floor_s = stock_flops / max(sgemm)
    for name, row in paths.items():
        logits, masks = _click_outputs(model, images, row["fast"], original_hw)
        row["max_abs_logit_delta"] = float(np.abs(logits - reference[0]).max())
        row["mask_pixels_differing"] = int((masks != reference[1]).sum())
        row["time_over_floor"] = row["median_s"] / floor_s
        row["speedup"] = paths["stock"]["median_s"] / row["median_s"]
        paths[name] = row
    return {
        "config": args.config,
        "seed": args.seed,
        "image_hw": list(original_hw),
        "input_px": int(model.image_size),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "stock_gflop": stock_flops / 1e9,
        "fast_gflop": fast_flops / 1e9,
        "stock_gflop_per_op": {k: v / 1e9 for k, v in per_op.items()},
        "sgemm_gflops": [s / 1e9 for s in sgemm],
        "floor_s": floor_s,
        "paths": paths,
    }


def _time_paths(
    model: Any,
    images: Any,
    rounds: list[tuple[str, bool]],
    repeats: int,
    paths: dict[str, dict[str, Any]],
) -> None:
    """Time each path `repeats` times, alternating paths, after one warm-up run each."""
    times: dict[str, list[float]] = {name: [] for name, _ in rounds}
    for _, fast in rounds:
        model.encode_image(images, fast=fast)
    for _ in range(repeats):
        for name, fast in rounds:
            start = time.perf_counter()
            model.encode_image(images, fast=fast)
            times[name].append(time.perf_counter() - start)
    for name, fast in rounds:
        paths[name] = {
            "fast": fast,
            "median_s": statistics.median(times[name]),
            "best_s": min(times[name]),
            "times_s": times[name],
        }


def _print_report(r: dict[str, Any]) -> None:
    ops = ", ".join(f"{k.split('.')[-1]} {v:.1f}" for k, v in r["stock_gflop_per_op"].items())
    h, w = r["image_hw"]
    print(
        f"bench encoder: model {r['config']} (random weights, seed {r['seed']}), image {w}x{h} "
        f"-> {r['input_px']} px, torch {r['torch']}, {r['threads']} threads, {r['cpu']} CPU"
    )
    print(
        f"encoder FLOPs: stock {r['stock_gflop']:.1f} GFLOP ({ops}); "
        f"fast path {r['fast_gflop']:.1f} GFLOP"
    )
    sgemm = " / ".join(f"{s:.1f}" for s in r["sgemm_gflops"])
    print(
        f"sgemm: {sgemm} GFLOP/s (fp32 torch.mm, before / after); "
        f"floor = stock FLOPs / best sgemm = {r['floor_s']:.3f} s"
    )
    print(
        f"{'path':<20} {'median':>8} {'best':>8} {'time/floor':>11} {'speed-up':>9} "
        f"{'max|dlogit|':>12} {'mask px diff':>13}"
    )
    for name, row in r["paths"].items():
        print(
            f"{name:<20} {row['median_s']:>7.3f}s {row['best_s']:>7.3f}s "
            f"{row['time_over_floor']:>10.2f}x {row['speedup']:>8.2f}x "
            f"{row['max_abs_logit_delta']:>12.2e} {row['mask_pixels_differing']:>13d}"
        )

"""`unsamv2 bench ...`: speed measurements printed as ratios measured in one run.

`bench click` compares, on the same model and images, the per-click latency of the cached path
(embedding computed once per image, every click decodes only) with the naive path that
re-embeds the image on every click (as Label Studio's stock SAM-2 example does). Latencies
include prompt conversion, decoding, upsampling to the original size and thresholding. The
cached clicks are timed twice, alternately: as served (on CPU the decoder reuses the image's
cached image-side terms, `core_model.click_terms`) and with the model's own decoder on every
click (``click_terms_images=0``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.cli import (
    bench_backend,
    bench_encoder,
    bench_pseudo_label,
    bench_pseudo_quality,
    bench_specialist,
    bench_synthetic,
    bench_train,
    bench_video,
    bench_whole_image,
)
from ml_backend.cli.arg_types import parse_size
from ml_backend.cli.bench_images import bench_image


@dataclass(frozen=True)
class ClickBenchResult:
    """Timings for one image size (seconds unless stated)."""

    width: int
    height: int
    embed_s: float
    embedding_bytes: int
    cached_p50_s: float
    cached_p95_s: float
    decoder_p50_s: float
    decoder_p95_s: float
    naive_p50_s: float
    naive_p95_s: float
    speedup_p50: float
    clicks: int
    naive_clicks: int


def add_parser(subparsers: Any) -> None:
    """Register `bench` and its benchmarks."""
    bench = subparsers.add_parser("bench", help="speed benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    p = benches.add_parser(
        "click",
        help="per-click latency: cached embedding vs re-embedding on every click",
        description=__doc__,
    )
    p.add_argument("--config", default="small", help="model variant (random weights)")
    p.add_argument(
        "--sizes", type=parse_size, nargs="+", default=[(1024, 768), (4000, 3000)], metavar="WxH"
    )
    p.add_argument("--clicks", type=int, default=30, help="timed cached clicks per size")
    p.add_argument("--naive-clicks", type=int, default=3, help="timed naive clicks per size")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_click)
    bench_pseudo_label.add_parser(benches)
    bench_pseudo_quality.add_parser(benches)
    bench_train.add_parser(benches)
    bench_synthetic.add_parser(benches)
    bench_specialist.add_parser(benches)
    bench_backend.add_parser(benches)
    bench_whole_image.add_parser(benches)
    bench_encoder.add_parser(benches)
    bench_video.add_parser(benches)


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_click_size(
    predictor: Any,
    naive: Any,
    plain: Any,
    width: int,
    height: int,
    *,
    clicks: int,
    naive_clicks: int,
) -> ClickBenchResult:
    """Measure one image size.

    `naive` is a predictor whose cache stores nothing; `plain` shares `predictor`'s embedding
    cache and decodes every click with the model's decoder.
    """
    from core_model.types import Prompts

    rng = np.random.default_rng(1)
    image = bench_image(width, height)

    def click() -> Prompts:
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        return Prompts.from_arrays([[x, y]], [1])

    start = time.perf_counter()
    embedding = predictor.embed(image)
    embed_s = time.perf_counter() - start
    for _ in range(3):  # warm-up: first decoder calls allocate
        predictor.predict(embedding, click(), granularity=0.5)

    def cached_with(served: Any) -> None:
        emb = served.embed(image)  # a cache hit, counted in the latency (hashing included)
        served.predict(emb, click(), granularity=float(rng.uniform(0.1, 1.0)))

    timings: dict[str, list[float]] = {"served": [], "decoder": []}
    for _ in range(clicks):  # alternately, so a change of machine load hits both
        timings["served"] += _timed(lambda: cached_with(predictor), 1)
        timings["decoder"] += _timed(lambda: cached_with(plain), 1)

    def naive_click() -> None:
        emb = naive.embed(image)
        naive.predict(emb, click(), granularity=float(rng.uniform(0.1, 1.0)))

    naive_times = _timed(naive_click, naive_clicks)
    c50, c95 = np.percentile(timings["served"], [50, 95])
    d50, d95 = np.percentile(timings["decoder"], [50, 95])
    n50, n95 = np.percentile(naive_times, [50, 95])
    return ClickBenchResult(
        width=width,
        height=height,
        embed_s=embed_s,
        embedding_bytes=embedding.nbytes,
        cached_p50_s=float(c50),
        cached_p95_s=float(c95),
        decoder_p50_s=float(d50),
        decoder_p95_s=float(d95),
        naive_p50_s=float(n50),
        naive_p95_s=float(n95),
        speedup_p50=float(n50 / c50),
        clicks=clicks,
        naive_clicks=naive_clicks,
    )


def run_click(args: argparse.Namespace) -> int:
    """Run `bench click` and print a table."""
    import torch

    from core_model.build import build_model
    from core_model.cache import LRUEmbeddingCache
    from core_model.predictor import GranularityPredictor

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.config, device=args.device)
    predictor = GranularityPredictor(model)
    naive = GranularityPredictor(model, cache=LRUEmbeddingCache(0))
    plain = GranularityPredictor(model, cache=predictor.cache, click_terms_images=0)
    device_name = (
        torch.cuda.get_device_name(0)
        if model.image_encoder.trunk.pos_embed.is_cuda
        else f"{platform.processor() or platform.machine()} CPU"
    )
    print(
        f"bench click: model {args.config} (random weights), device {args.device} "
        f"({device_name}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = (
        f"{'image':>11} {'embed':>8} {'emb MiB':>8} {'cached p50':>11} {'p95':>8} "
        f"{'decoder p50':>12} {'p95':>8} {'naive p50':>10} {'p95':>8} {'speed-up':>9}"
    )
    print(header)
    results = []
    for width, height in args.sizes:
        r = bench_click_size(
            predictor,
            naive,
            plain,
            width,
            height,
            clicks=args.clicks,
            naive_clicks=args.naive_clicks,
        )
        results.append(r)
        print(
            f"{width:>5}x{height:<5} {r.embed_s:>7.2f}s {r.embedding_bytes / 2**20:>8.1f} "
            f"{r.cached_p50_s * 1e3:>9.1f}ms {r.cached_p95_s * 1e3:>6.1f}ms "
            f"{r.decoder_p50_s * 1e3:>10.1f}ms {r.decoder_p95_s * 1e3:>6.1f}ms "
            f"{r.naive_p50_s:>9.2f}s {r.naive_p95_s:>7.2f}s {r.speedup_p50:>8.1f}x"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": args.config,
            "device": args.device,
            "device_name": device_name,
            "threads": torch.get_num_threads(),
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0

"""`unsamv2 bench pseudo-label`: seconds per image of the pseudo-label pipeline, per extractor.

Runs the whole in-memory pipeline (divide, relations, conquer, NMS, GrabCut refinement,
granularity) on generated part/whole scenes of `--size` pixels on the long side, once per
feature extractor, in one process so the figures compare. ``dinov3-vitb16-random`` and
``dinov3-vits16-random`` build DINOv3 at its real size (patch 16, 4 registers, 12 layers;
hidden 768 / 384) with random weights, so the timing is real while the masks are not; ``color``
is the weight-free extractor; ``dinov3:PATH`` / ``dinov2:PATH`` load real weights. One warm-up
image per extractor is not timed. Feature-extraction time is reported separately.

Random weights discover no objects, so by default every scene's objects are also given as
external proposals (as detector masks would be): the conquer stage then runs once per object
for every extractor, and the figures compare the same workload (``--no-proposals`` to time the
N-cut divide stage alone when it finds nothing).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from labeling_pipeline.evaluation.synthetic import SyntheticScene

RANDOM_DINOV3 = {"dinov3-vitb16-random": "vitb16", "dinov3-vits16-random": "vits16"}


@dataclass(frozen=True)
class PseudoLabelBenchResult:
    """Timings of one extractor (seconds per image unless stated)."""

    features: str
    images: int
    width: int
    height: int
    seconds_per_image: float
    feature_seconds_per_image: float
    feature_calls_per_image: float
    masks_per_image: float


class _TimedExtractor:
    """Wraps an extractor and accumulates the time spent in `extract`."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.patch_size = inner.patch_size
        self.seconds = 0.0
        self.calls = 0

    def extract(self, image: npt.NDArray[np.uint8]) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.extract(image)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def add_parser(benches: Any) -> None:
    """Register `bench pseudo-label` on the `bench` sub-parsers."""
    p = benches.add_parser(
        "pseudo-label",
        help="seconds per image of the pseudo-label pipeline, per feature extractor",
        description=__doc__,
    )
    p.add_argument(
        "--features",
        nargs="+",
        default=["color", "dinov3-vitb16-random"],
        metavar="SPEC",
        help="extractors: color, dinov3-vitb16-random, dinov3-vits16-random, dinov3:PATH, ...",
    )
    p.add_argument("--images", type=int, default=2, help="timed images per extractor")
    p.add_argument("--size", type=int, default=1024, help="long side of the scenes (pixels)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-proposals",
        action="store_true",
        help="do not give the scenes' objects as external proposals (see above)",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_pseudo_label_bench)


def build_bench_extractor(spec: str, *, device: str) -> Any:
    """Return an extractor for a spec, including the random-weight DINOv3 specs."""
    if spec in RANDOM_DINOV3:
        import torch
        from transformers import DINOv3ViTModel

        from labeling_pipeline.pseudo_labels.dino_features import (
            TransformersViTExtractor,
            dinov3_vit_config,
        )

        torch.manual_seed(0)
        model: torch.nn.Module = DINOv3ViTModel(dinov3_vit_config(RANDOM_DINOV3[spec]))
        model.to(device).eval()
        return TransformersViTExtractor(model, name=spec, device=device)
    from labeling_pipeline.pseudo_labels import build_feature_extractor

    return build_feature_extractor(spec, device=device)


def bench_extractor(
    spec: str, scenes: list[SyntheticScene], *, device: str, proposals: bool = True
) -> PseudoLabelBenchResult:
    """Time the pipeline with one extractor over `scenes` (the first one is a warm-up)."""
    from labeling_pipeline.pseudo_labels import Proposal, pseudo_label_image

    extractor = _TimedExtractor(build_bench_extractor(spec, device=device))
    times, masks = [], []
    for index, scene in enumerate(scenes):
        given = [Proposal(o.mask, 1.0, "external") for o in scene.objects] if proposals else []
        if index == 0:
            pseudo_label_image(scene.image, extractor, proposals=given)
            extractor.seconds, extractor.calls = 0.0, 0
            continue
        start = time.perf_counter()
        masks.append(len(pseudo_label_image(scene.image, extractor, proposals=given)))
        times.append(time.perf_counter() - start)
    count = len(times)
    return PseudoLabelBenchResult(
        features=spec,
        images=count,
        width=int(scenes[0].image.shape[1]),
        height=int(scenes[0].image.shape[0]),
        seconds_per_image=statistics.fmean(times),
        feature_seconds_per_image=extractor.seconds / count,
        feature_calls_per_image=extractor.calls / count,
        masks_per_image=statistics.fmean(masks),
    )


def run_pseudo_label_bench(args: argparse.Namespace) -> int:
    """Run `bench pseudo-label` and print a table."""
    import torch

    from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene

    if args.images < 1 or args.size < 64:
        raise SystemExit("bench pseudo-label: need --images >= 1 and --size >= 64")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    scene_config = SceneConfig(height=args.size * 3 // 4, width=args.size, clutter_count=80)
    scenes = [generate_scene(seed, scene_config) for seed in range(args.images + 1)]
    cpu = f"{platform.processor() or platform.machine()} CPU"
    print(
        f"bench pseudo-label: {args.images} timed image(s) of {args.size}x{args.size * 3 // 4} "
        f"(+1 warm-up), device {args.device} ({cpu}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, objects given as proposals: {not args.no_proposals}"
    )
    print(f"{'features':<22} {'s/image':>8} {'features s':>11} {'calls':>6} {'masks':>6}")
    results = []
    for spec in args.features:
        r = bench_extractor(spec, scenes, device=args.device, proposals=not args.no_proposals)
        results.append(r)
        print(
            f"{spec:<22} {r.seconds_per_image:>8.2f} {r.feature_seconds_per_image:>11.2f} "
            f"{r.feature_calls_per_image:>6.1f} {r.masks_per_image:>6.1f}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "device": args.device,
            "threads": torch.get_num_threads(),
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0

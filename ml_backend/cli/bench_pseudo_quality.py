"""`unsamv2 bench pseudo-label-quality`: how good the pseudo-labels are on generated scenes.

Generates `--scenes` scenes of one style (``simple``: `evaluation.synthetic`; ``harder``:
`evaluation.synthetic_harder`) from `--seed`, runs the in-memory pipeline with a per-stage
trace, and prints per kind (whole / part) recall at IoU 0.5 and 0.8, mean IoU and the
per-stage recall at 0.8 (divide, refined instances, raw conquer regions, final), then part
recall by size, the granularity order (a part below its whole), masks and seconds per image,
and the images that needed a fallback (`evaluation.synthetic_quality` defines the figures).
Seconds are wall time of the pipeline (not the scene generation) in this process, after one
untimed warm-up run on the first scene.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

STYLES = ("harder", "simple")


def add_parser(benches: Any) -> None:
    """Register `bench pseudo-label-quality` on the `bench` sub-parsers."""
    p = benches.add_parser(
        "pseudo-label-quality",
        help="recall, IoU and granularity order of pseudo-labels on generated scenes",
        description=__doc__,
    )
    p.add_argument("--style", choices=STYLES, default="harder")
    p.add_argument("--scenes", type=int, default=8, help="number of generated scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene")
    p.add_argument(
        "--size",
        type=int,
        default=0,
        help="harder style: fix the long side (0: 480-1024 at random)",
    )
    p.add_argument("--features", default="color", help="extractor spec (color, dinov2:PATH, ...)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument(
        "--previews",
        type=Path,
        help="also write one PNG per scene: image, ground truth, pseudo-labels",
    )
    p.set_defaults(run=run_pseudo_quality_bench)


def _scene(style: str, seed: int, size: int = 0) -> Any:
    if style == "harder":
        from labeling_pipeline.evaluation.synthetic_harder import (
            HarderSceneConfig,
            generate_harder_scene,
        )

        config = HarderSceneConfig(long_side_px=(size, size)) if size else None
        return generate_harder_scene(seed, config)
    from labeling_pipeline.evaluation.synthetic import generate_scene

    return generate_scene(seed)


def measure_quality(
    style: str,
    scenes: int,
    seed: int,
    *,
    features: str = "color",
    device: str = "cpu",
    size: int = 0,
    previews: Path | None = None,
) -> dict[str, object]:
    """Run the pipeline on generated scenes and return the summary figures.

    With `previews`, one PNG per scene (`scene-<seed>.png`, `evaluation.scene_preview`) is
    written there.
    """
    from labeling_pipeline.evaluation.synthetic_quality import QualityTotals, score_scene
    from labeling_pipeline.pseudo_labels import pseudo_label_image
    from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
    from ml_backend.cli.bench_pseudo_label import build_bench_extractor

    extractor = build_bench_extractor(features, device=device)
    if scenes > 0:  # one untimed run first: thread pools, lazy imports and caches start warm
        pseudo_label_image(_scene(style, seed, size).image, extractor)
    totals = QualityTotals()
    for index in range(scenes):
        scene = _scene(style, seed + index, size)
        trace = StageTrace()
        start = time.perf_counter()
        masks = pseudo_label_image(scene.image, extractor, trace=trace)
        totals.seconds_per_image.append(time.perf_counter() - start)
        totals.masks_per_image.append(len(masks))
        totals.images_without_masks += int(not masks)
        if trace.fallback:
            totals.fallbacks.append(f"seed {seed + index}: {trace.fallback}")
        totals.regions.extend(score_scene(scene, masks, trace))
        if previews is not None:
            _write_preview(previews / f"scene-{seed + index}.png", scene, masks)
    return totals.summary()


def _write_preview(path: Path, scene: Any, masks: Any) -> None:
    from PIL import Image

    from labeling_pipeline.evaluation.scene_preview import scene_preview

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene_preview(scene, masks)).save(path)


def _print(summary: dict[str, Any]) -> None:
    print(
        f"{'kind':<6} {'n':>5} {'R@0.5':>6} {'R@0.8':>6} {'mIoU':>6} | stage R@0.8: "
        "divide instances conquer final"
    )
    for kind in ("whole", "part"):
        f = summary[kind]
        stages = " ".join(f"{f['stage_recall@0.8'][s]:>6.3f}" for s in f["stage_recall@0.8"])
        print(
            f"{kind:<6} {f['count']:>5} {f['recall@0.5']:>6.3f} {f['recall@0.8']:>6.3f} "
            f"{f['mean_iou']:>6.3f} | {stages}"
        )
    sizes = ", ".join(
        f"{name} {v['recall@0.8']:.3f} ({v['count']})"
        for name, v in summary["part_recall@0.8_by_size"].items()
    )
    print(f"part recall@0.8 by size: {sizes}")
    print(
        f"granularity order {summary['granularity_order']:.3f} ({summary['granularity_pairs']} "
        f"pairs), {summary['masks_per_image']:.1f} masks/image, "
        f"{summary['seconds_per_image']:.2f} s/image, "
        f"{summary['images_without_masks']} image(s) without masks"
    )
    for line in summary["fallbacks"]:
        print(f"fallback: {line}")


def run_pseudo_quality_bench(args: argparse.Namespace) -> int:
    """Run `bench pseudo-label-quality` and print the figures."""
    if args.scenes < 1 or (args.size and args.size < 128):
        raise SystemExit("bench pseudo-label-quality: need --scenes >= 1 and --size >= 128")
    print(
        f"bench pseudo-label-quality: style {args.style}, {args.scenes} scene(s) from seed "
        f"{args.seed}, features {args.features}"
    )
    summary = measure_quality(
        args.style,
        args.scenes,
        args.seed,
        features=args.features,
        device=args.device,
        size=args.size,
        previews=args.previews,
    )
    _print(summary)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0

"""`unsamv2 pseudo-label`: part/whole pseudo-labels for a folder of unlabeled images.

Writes one JSON per image (official UnSAMv2 schema, COCO RLE) under ``--out``, mirroring the
folder structure, plus ``granularity_histogram.png`` over every JSON of the run and, with
``--previews``, overlay PNGs under ``--out/previews``. A rerun skips images whose JSON exists.
Broken, blank or oversized images are skipped with a reason; the run still exits with 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from core_model.errors import UnSAMv2Error


def add_parser(subparsers: Any) -> None:
    """Register the subcommand."""
    p = subparsers.add_parser(
        "pseudo-label",
        help="granularity-aware divide-and-conquer pseudo-labels for a folder of images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of images (recursive)")
    p.add_argument("--out", type=Path, required=True, help="output folder of the JSON files")
    p.add_argument(
        "--features",
        default=None,
        metavar="SPEC",
        help="color[:PATCH] (weight-free), dinov3:PATH or dinov2:PATH (a folder written by "
        "save_pretrained; nothing is downloaded), auto:WEIGHTS_DIR (best DINO model there, else "
        "color). Default: UNSAMV2_FEATURES, else auto in the weights folder",
    )
    p.add_argument("--device", default="cpu", help="torch device for DINO features (cpu)")
    p.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="process images downscaled to this long side (masks are written at full size)",
    )
    p.add_argument("--long-side", type=int, help="feature resolution (768 DINO, 384 color)")
    p.add_argument("--config", type=Path, help="JSON file with PseudoLabelConfig overrides")
    p.add_argument("--previews", action="store_true", help="write overlay PNGs to OUT/previews")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _config(args: argparse.Namespace) -> Any:
    from labeling_pipeline.pseudo_labels import PseudoLabelConfig

    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnSAMv2Error(f"cannot read config {args.config}: {exc}") from None
        if not isinstance(values, dict):
            raise UnSAMv2Error(f"config {args.config} must hold a JSON object")
    values["max_image_side"] = args.max_side
    return PseudoLabelConfig.from_mapping(values)


def _summary(results: list[Any], elapsed: float, features: str) -> list[str]:
    done = [r for r in results if r.status == "done"]
    existing = [r for r in results if r.status == "existing"]
    skipped = [r for r in results if r.status == "skipped"]
    lines = [
        f"pseudo-label: {len(results)} images in {elapsed:.1f} s (features {features})",
        f"  done {len(done)}, already done {len(existing)}, skipped {len(skipped)}",
    ]
    finished = done + existing
    if finished:
        counts = [r.num_masks for r in finished]
        lines.append(
            f"  masks per image: mean {statistics.fmean(counts):.1f} "
            f"(min {min(counts)}, max {max(counts)}; {sum(counts)} in all)"
        )
    if done:
        seconds = statistics.fmean(r.seconds for r in done)
        lines.append(f"  seconds per image: {seconds:.2f} (mean over the {len(done)} done now)")
    if skipped:
        lines.append("  skipped:")
        lines.extend(f"    {r.image_path}: {r.reason}" for r in skipped)
    notes = [r for r in done if r.reason]
    if notes:
        lines.append("  notes:")
        lines.extend(f"    {r.image_path.name}: {r.reason}" for r in notes)
    return lines


def _write_histogram(out: Path, results: list[Any]) -> Path:
    from PIL import Image

    from labeling_pipeline.pseudo_labels.visualize import granularity_histogram

    values = [g for r in results if r.ok for g in r.granularities]
    path = out / "granularity_histogram.png"
    Image.fromarray(granularity_histogram(values)).save(path)
    return path


def run(args: argparse.Namespace) -> int:
    """Pseudo-label the folder, print the summary; return 0 when the run completed."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from labeling_pipeline.pseudo_labels import (
        build_feature_extractor,
        generate_pseudo_labels,
        list_images,
    )

    if not args.images.is_dir():
        raise UnSAMv2Error(f"{args.images} is not a folder")
    images = list_images(args.images)
    if not images:
        raise UnSAMv2Error(f"no images found in {args.images}")
    config = _config(args)
    if args.features is None:
        from ml_backend.settings import Settings

        args.features = Settings.from_env().pipeline.features
    extractor = build_feature_extractor(args.features, device=args.device, long_side=args.long_side)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = tqdm(total=len(images), unit="img", file=sys.stderr, disable=args.no_progress)
    results = []
    with logging_redirect_tqdm(), bar:  # log lines print above the bar, not through it
        for result in generate_pseudo_labels(
            images,
            extractor,
            out_dir=args.out,
            config=config,
            root=args.images,
            previews_dir=args.out / "previews" if args.previews else None,
        ):
            results.append(result)
            bar.set_postfix_str(f"{result.image_path.name}: {result.status}", refresh=False)
            bar.update(1)
    histogram = _write_histogram(args.out, results)
    for line in _summary(results, time.perf_counter() - start, args.features):
        print(line)
    warning = str(getattr(extractor, "warning", "") or "")
    if warning:
        print(f"  warning: {warning}")
    print(f"  wrote {args.out} (JSON per image) and {histogram.name}")
    return 0

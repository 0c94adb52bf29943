"""`unsamv2 segment`: click prompts and granularities in, mask and overlay PNGs out."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.imageio import load_image_rgb
from core_model.types import MaskPrediction, Point, Prompts, as_granularity_tuple

logger = logging.getLogger(__name__)

_COLOURS = ((30, 144, 255), (255, 99, 71), (50, 205, 50), (238, 130, 238), (255, 215, 0))


def parse_point(text: str) -> Point:
    """Parse "X,Y" or "X,Y,L" (pixels; L = 1 positive, 0 negative)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"point must be X,Y[,0|1], got {text!r}") from None
    if len(values) not in (2, 3) or (len(values) == 3 and values[2] not in (0.0, 1.0)):
        raise argparse.ArgumentTypeError(f"point must be X,Y[,0|1], got {text!r}")
    label = int(values[2]) if len(values) == 3 else 1
    return Point(values[0], values[1], label)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """Parse "X0,Y0,X1,Y1" pixels."""
    try:
        x0, y0, x1, y1 = (float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"box must be X0,Y0,X1,Y1, got {text!r}") from None
    return x0, y0, x1, y1


def add_parser(subparsers: Any) -> None:
    """Register the subcommand."""
    p = subparsers.add_parser(
        "segment",
        help="segment one object from clicks at one or more granularities",
        description="Write a 0/255 mask PNG and an overlay PNG per granularity.",
    )
    p.add_argument("image", type=Path, help="image file")
    p.add_argument(
        "--point",
        type=parse_point,
        action="append",
        default=[],
        metavar="X,Y[,L]",
        help="click in pixels, label 1 (default) or 0; repeatable",
    )
    p.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box prompt in pixels")
    p.add_argument(
        "--granularity",
        type=float,
        nargs="+",
        default=[1.0],
        metavar="G",
        help="granularity in [0.1, 1.0] (fine parts .. whole); several values write "
        "one mask and overlay each",
    )
    p.add_argument("--out", type=Path, required=True, help="mask PNG path (overlay beside it)")
    p.add_argument("--config", default="small", help="model variant or YAML (default: small)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="UnSAMv2, SAM-2.1 or fine-tuned file")
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="no checkpoint: random weights (pipeline demo; masks are noise)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--refine", action="store_true", help="second mask-refinement pass")
    p.set_defaults(run=run)


def overlay(
    image: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], prompts: Prompts, colour_index: int
) -> npt.NDArray[np.uint8]:
    """Return an RGB picture: the mask tinted and outlined, clicks and box drawn."""
    import cv2

    colour = np.array(_COLOURS[colour_index % len(_COLOURS)], dtype=np.float32)
    out = image.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * colour
    picture = np.ascontiguousarray(out.round().astype(np.uint8))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, tuple(int(c) for c in colour), 2)
    radius = max(3, round(max(image.shape[:2]) / 150))
    for p in prompts.points:
        fill = (0, 200, 0) if p.label == 1 else (220, 0, 0)
        centre = (round(p.x), round(p.y))
        cv2.circle(picture, centre, radius + 1, (255, 255, 255), -1)
        cv2.circle(picture, centre, radius, fill, -1)
    if prompts.box is not None:
        b = prompts.box
        cv2.rectangle(
            picture, (round(b.x0), round(b.y0)), (round(b.x1), round(b.y1)), (255, 255, 0), 2
        )
    return picture


def output_paths(out: Path, granularity: float, several: bool) -> tuple[Path, Path]:
    """Return (mask path, overlay path) for one granularity."""
    stem = f"{out.stem}_g{granularity:.2f}" if several else out.stem
    suffix = out.suffix or ".png"
    return out.with_name(stem + suffix), out.with_name(stem + "_overlay" + suffix)


def run(args: argparse.Namespace) -> int:
    """Segment and write the files; return 0."""
    import torch
    from PIL import Image

    from core_model.build import build_model
    from core_model.predictor import GranularityPredictor

    granularities = as_granularity_tuple(args.granularity)
    box = None
    if args.box is not None:
        from core_model.types import Box

        box = Box(*args.box)
    prompts = Prompts(points=tuple(args.point), box=box)
    image = load_image_rgb(args.image)
    if args.random_weights:
        torch.manual_seed(args.seed)
    model = build_model(
        args.config, None if args.random_weights else args.checkpoint, device=args.device
    )
    predictor = GranularityPredictor(model)
    embedding = predictor.embed(image)
    result: MaskPrediction = predictor.predict_many(
        embedding, prompts, granularities, refine=args.refine
    )
    if result.mode != "granularity":
        logger.warning("model has no trained granularity modules: used SAM-2 multimask fallback")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    several = len(granularities) > 1
    for i, granularity in enumerate(granularities):
        mask_path, overlay_path = output_paths(args.out, granularity, several)
        mask = result.masks[i]
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        Image.fromarray(overlay(image, mask, prompts, i)).save(overlay_path)
        print(
            f"granularity {granularity:.2f}: score {result.scores[i]:.3f}, "
            f"area {int(mask.sum())} px -> {mask_path}, {overlay_path}"
        )
    return 0

"""`unsamv2 segment-video`: clicks on one frame at a granularity, tracked through a clip.

The object is prompted on ``--frame`` and SAM-2's memory carries the mask forwards (default),
backwards (``--reverse``) or both ways (``--both``), with the granularity given again on every
frame. Output folder (see `labeling_pipeline.export.video_files`): ``masks/<frame>_obj<id>.png``
(0/255 per frame and object), ``overlay.mp4`` and ``annotations.json`` (COCO RLE per frame with
object id, granularity and visibility score).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core_model.types import Box, Prompts
from ml_backend.cli.segment import parse_box, parse_point

logger = logging.getLogger(__name__)

#: Overlay frame rate for frame folders (they carry none) unless --fps is given.
FOLDER_FPS = 25.0


def add_parser(subparsers: Any) -> None:
    """Register the subcommand."""
    p = subparsers.add_parser(
        "segment-video",
        help="track one object through a video at a granularity (masks, overlay MP4, COCO)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("clip", type=Path, help="video file, or a folder of JPEG/PNG frames")
    p.add_argument("--frame", type=int, default=0, help="frame the prompts are on (default 0)")
    p.add_argument(
        "--point",
        type=parse_point,
        action="append",
        default=[],
        metavar="X,Y[,L]",
        help="click in frame pixels, label 1 (default) or 0; repeatable",
    )
    p.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box prompt in pixels")
    p.add_argument(
        "--granularity",
        type=float,
        default=1.0,
        metavar="G",
        help="granularity in [0.1, 1.0] (fine parts .. whole), kept while tracking",
    )
    p.add_argument("--object", type=int, default=1, metavar="ID", help="object id (default 1)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--reverse", action="store_true", help="track backwards only")
    direction.add_argument("--both", action="store_true", help="track forwards, then backwards")
    p.add_argument(
        "--max-frames", type=int, metavar="K", help="track at most K frames beyond --frame"
    )
    p.add_argument("--max-side", type=int, metavar="PX", help="downscale video frames to this")
    p.add_argument(
        "--fps", type=float, help=f"overlay frame rate (default: the video's, or {FOLDER_FPS:g})"
    )
    p.add_argument(
        "--config", "--model", dest="config", default="small", help="model variant or YAML"
    )
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="UnSAMv2, SAM-2.1 or fine-tuned file")
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="no checkpoint: random weights (pipeline demo; masks are noise)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def quiet_video_decoder(verbose: bool) -> None:
    """Keep FFmpeg's and OpenCV's own messages off stderr unless `verbose`.

    A broken file is then reported once, as the command's one-line error.
    """
    if verbose:
        return
    import cv2

    from ml_backend.settings import quiet_video_decoder as quiet_ffmpeg

    quiet_ffmpeg()
    cv2.setLogLevel(0)


def open_clip(path: Path, *, max_side: int | None) -> Any:
    """Open a video file or a frame folder as a `FrameSource`."""
    from core_model.video.frames import FrameFolder
    from core_model.video.video_file import VideoFile

    if path.is_dir():
        return FrameFolder(path)
    return VideoFile(path, max_side=max_side)


def run(args: argparse.Namespace) -> int:
    """Track the object and write the files; return 0."""
    quiet_video_decoder(args.verbose)
    from core_model.types import validate_granularity
    from core_model.video.frames import check_frame_index

    granularity = validate_granularity(args.granularity)
    prompts = Prompts(points=tuple(args.point), box=None if args.box is None else Box(*args.box))
    if args.max_frames is not None and args.max_frames < 0:
        raise ValueError(f"--max-frames must be 0 or more, got {args.max_frames}")
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    source = open_clip(args.clip, max_side=args.max_side)
    try:
        check_frame_index(args.frame, source.num_frames)
        prompts.check_inside(*source.size)
        return _track_and_write(args, source, prompts, granularity)
    finally:
        source.close()


def _track_and_write(
    args: argparse.Namespace, source: Any, prompts: Prompts, granularity: float
) -> int:
    import torch
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from core_model.build import build_model
    from core_model.video.predictor import VideoPredictor
    from labeling_pipeline.export.video_files import VideoMaskWriter

    if args.random_weights:
        torch.manual_seed(args.seed)
    model = build_model(
        args.config, None if args.random_weights else args.checkpoint, device=args.device
    )
    session = VideoPredictor(model).open(source)
    writer = VideoMaskWriter(args.out, size=source.size, granularities={args.object: granularity})
    total = _frames_to_track(args, source.num_frames)
    bar = tqdm(total=total, unit="frame", file=sys.stderr, disable=args.no_progress)
    start = time.perf_counter()
    with logging_redirect_tqdm(), bar:
        session.add_prompts(args.frame, args.object, prompts, granularity)
        for result in _propagate(session, args):
            writer.add(result.frame, result.obj_ids, result.masks(), result.object_scores)
            bar.update()
    seconds = time.perf_counter() - start
    session.close()
    fps = args.fps or getattr(source, "fps", None) or FOLDER_FPS
    timestamp = getattr(source, "timestamp_ms", None)
    outputs = writer.finish(
        source.frame, fps=fps, info=_info(args, source, granularity), timestamp_ms=timestamp
    )
    print(
        f"object {args.object} at granularity {granularity:.2f}: {outputs.frames} frames "
        f"({outputs.frames / seconds:.2f} frames/s), {outputs.annotation_count} visible masks -> "
        f"{outputs.masks_dir}, {outputs.overlay}, {outputs.annotations}"
    )
    return 0


def _frames_to_track(args: argparse.Namespace, num_frames: int) -> int:
    """Return how many distinct frames the chosen direction(s) visit."""
    limit = num_frames if args.max_frames is None else int(args.max_frames)
    frame = int(args.frame)
    forward = min(limit, num_frames - 1 - frame)
    backward = min(limit, frame)
    if args.both:
        return 1 + forward + backward
    return 1 + (backward if args.reverse else forward)


def _propagate(session: Any, args: argparse.Namespace) -> Iterator[Any]:
    """Yield each tracked frame's result once (``--both`` visits the prompted frame twice)."""
    directions = (False, True) if args.both else (args.reverse,)
    for i, reverse in enumerate(directions):
        for result in session.propagate(
            start=args.frame, reverse=reverse, max_frames=args.max_frames
        ):
            if i > 0 and result.frame == args.frame:
                continue
            yield result


def _info(args: argparse.Namespace, source: Any, granularity: float) -> dict[str, Any]:
    info: dict[str, Any] = {
        "description": "unsamv2 segment-video",
        "clip": args.clip.name,
        "num_frames": source.num_frames,
        "prompt_frame": args.frame,
        "granularity": granularity,
        "model": args.config,
        "weights": "random" if args.random_weights else args.checkpoint.name,
    }
    if getattr(source, "fps", None):
        info["fps"] = source.fps
    vfr = getattr(source, "variable_frame_rate", None)
    if vfr is not None:
        info["variable_frame_rate"] = vfr
    return info

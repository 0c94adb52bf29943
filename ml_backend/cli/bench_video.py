"""`unsamv2 bench video`: propagation frames/s and whether memory stays flat on a long clip.

One model with random weights (Hiera-S by default) tracks one object, clicked on frame 0 at
granularity 0.5, forwards through a synthetic clip (1024x576 by default) whose frames are drawn
on demand (a disc and a square moving over a gradient; no frame is kept). Printed after the
early checkpoint (``--early``, 50 frames) and after the last frame: frames/s since the prompt
frame, the process's resident memory (RSS) and the session's own tensors (memories, masks,
cached features); then the ratio of late to early RSS. Propagation must keep RSS flat: the issue
target is a ratio within 10 % at 50 and 300 frames. Random weights make masks noise, so this
measures speed and memory, never quality. Timings on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.errors import FrameIndexError
from ml_backend.cli.arg_types import parse_size
from ml_backend.cli.bench_images import bench_image

GRANULARITY = 0.5


class SyntheticClip:
    """A `FrameSource` whose frame ``i`` is drawn when asked for (nothing is stored).

    A disc and a square move across a fixed gradient background (drawn once), so consecutive
    frames differ as in a real clip.

    Args:
        num_frames: Frames in the clip.
        width: Frame width in pixels.
        height: Frame height in pixels.
    """

    def __init__(self, num_frames: int, width: int, height: int) -> None:
        self._num_frames = num_frames
        self._size = (height, width)
        self._background = bench_image(width, height)

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return self._num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self._size

    def object_centre(self, index: int) -> tuple[float, float]:
        """Return the (x, y) pixel centre of the disc on frame `index`."""
        height, width = self._size
        travel = max(width // 2, 1)
        return width / 4 + (3 * index) % travel, height / 2

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Return frame `index` as (H, W, 3) uint8 RGB."""
        if not 0 <= index < self._num_frames:
            raise FrameIndexError(f"frame {index} does not exist: {self._num_frames} frames")
        height, width = self._size
        image = self._background.copy()
        cx, cy = self.object_centre(index)
        radius = max(2, min(height, width) // 8)
        yy, xx = np.ogrid[:height, :width]
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < radius * radius] = (230, 40, 40)
        side = max(2, radius)
        x0 = int((width - side) - (2 * index) % max(width // 3, 1)) - side
        y0 = height // 5
        image[y0 : y0 + side, max(x0, 0) : max(x0, 0) + side] = (40, 40, 230)
        return image

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class VideoBenchPoint:
    """Measurements after `frames` tracked frames (the prompt frame not counted)."""

    frames: int
    seconds: float
    frames_per_s: float
    rss_mib: float
    session_mib: float


def add_parser(benches: Any) -> None:
    """Register `bench video` on the `bench` sub-parsers."""
    p = benches.add_parser(
        "video",
        help="propagation frames/s and RSS after 50 and after 300 frames",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="small", help="model variant (random weights)")
    p.add_argument("--frames", type=int, default=300, help="frames tracked after the prompt")
    p.add_argument("--early", type=int, default=50, help="early checkpoint (frames)")
    p.add_argument("--size", type=parse_size, default=(1024, 576), metavar="WxH", help="frame size")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_video)


def rss_mib() -> float:
    """Return this process's resident memory in MiB (psutil if installed, else /proc)."""
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise OSError("cannot read the resident memory: no psutil and no /proc") from None
    return float(psutil.Process().memory_info().rss) / 2**20


def run_video(args: argparse.Namespace) -> int:
    """Run `bench video` and print the measurements."""
    import torch

    from core_model.build import build_model
    from core_model.types import Point, Prompts
    from core_model.video.predictor import VideoPredictor

    if args.frames < 1 or not 1 <= args.early <= args.frames:
        raise ValueError("need --frames >= 1 and 1 <= --early <= --frames")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    width, height = args.size
    torch.manual_seed(0)
    model = build_model(args.config, device=device)
    clip = SyntheticClip(args.frames + 1, width, height)
    session = VideoPredictor(model).open(clip)
    device_name = (
        torch.cuda.get_device_name(0)
        if torch.device(device).type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU"
    )
    print(
        f"bench video: model {args.config} (random weights), {width}x{height}, device {device} "
        f"({device_name}), torch {torch.__version__}, {torch.get_num_threads()} threads; one "
        f"object clicked on frame 0 at granularity {GRANULARITY}, {args.frames} frames forwards",
        flush=True,
    )
    click = Point(*clip.object_centre(0), 1)
    session.add_prompts(0, 1, Prompts(points=(click,)), GRANULARITY)
    points = _propagate(session, device, checkpoints=(args.early, args.frames))
    for p in points:
        print(
            f"after {p.frames} frames: {p.frames_per_s:.2f} frames/s, RSS {p.rss_mib:.0f} MiB, "
            f"session {p.session_mib:.1f} MiB",
            flush=True,
        )
    ratio = points[-1].rss_mib / points[0].rss_mib
    print(f"RSS ratio {points[-1].frames}/{points[0].frames} frames: {ratio:.3f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": args.config,
            "size": [width, height],
            "device": device,
            "device_name": device_name,
            "threads": torch.get_num_threads(),
            "granularity": GRANULARITY,
            "points": [asdict(p) for p in points],
            "rss_ratio": ratio,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _propagate(session: Any, device: str, checkpoints: tuple[int, int]) -> list[VideoBenchPoint]:
    """Track forwards from frame 0; measure at each checkpoint (frames after the prompt)."""
    import torch

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    points: list[VideoBenchPoint] = []
    start = 0.0
    for result in session.propagate(start=0, max_frames=checkpoints[-1]):
        if result.frame == 0:  # the prompt frame: its memory is encoded here; start the clock
            sync()
            start = time.perf_counter()
            continue
        result.masks()  # upsampled to video size, as a caller would
        if result.frame in checkpoints and not any(p.frames == result.frame for p in points):
            sync()
            seconds = time.perf_counter() - start
            points.append(
                VideoBenchPoint(
                    frames=result.frame,
                    seconds=seconds,
                    frames_per_s=result.frame / seconds,
                    rss_mib=rss_mib(),
                    session_mib=session.memory_bytes() / 2**20,
                )
            )
    return points

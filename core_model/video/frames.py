"""Frame sources: random access to the frames of one clip, decoded only when asked for.

A source never holds a whole clip: `FrameFolder` reads one file per request, `FrameList` keeps
what its owner pushed (and may drop old frames), video files have their own reader
(`core_model.video.video_file`). `to_video_model_input` is the official video predictor's frame
preprocessing (it differs from the image predictor's: Pillow's bicubic resize).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch

from core_model.errors import FrameIndexError, InvalidImageError, VideoReadError
from core_model.imageio import MAX_IMAGE_PIXELS
from core_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, check_image

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_NUMBER = re.compile(r"\d+")


@runtime_checkable
class FrameSource(Protocol):
    """Random access to the frames of one clip (all frames have one size)."""

    @property
    def num_frames(self) -> int:
        """Number of frames known to exist."""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every frame."""

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Return frame `index` as (H, W, 3) uint8 RGB.

        Raises:
            FrameIndexError: `index` is negative or past the last frame.
            VideoReadError: the frame cannot be decoded.
        """

    def close(self) -> None:
        """Release files or decoders (idempotent)."""


def check_frame_index(index: int, num_frames: int) -> int:
    """Return `index` if 0 <= index < num_frames, else raise `FrameIndexError`."""
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise FrameIndexError(f"frame index must be an integer, got {index!r}")
    if not 0 <= int(index) < num_frames:
        raise FrameIndexError(
            f"frame {index} does not exist: the clip has {num_frames} frames (0..{num_frames - 1})"
        )
    return int(index)


def _frame_order(path: Path) -> tuple[int, int, str]:
    numbers = _NUMBER.findall(path.stem)
    return (0, int(numbers[-1]), path.name) if numbers else (1, 0, path.name)


class FrameFolder:
    """Frames stored as image files (JPEG or PNG) in one folder.

    Files are ordered by the last number in their name (``00012.jpg``, ``frame_12.png``), then
    by name. Every frame must have the size of the first one.

    Args:
        folder: The folder.
        max_pixels: Largest accepted frame (H * W).

    Raises:
        VideoReadError: not a folder, no frame files, or a first frame that cannot be read.
    """

    def __init__(self, folder: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise VideoReadError(f"{root} is not a folder of frames")
        self._files = sorted(
            (p for p in root.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
            key=_frame_order,
        )
        if not self._files:
            raise VideoReadError(f"{root} holds no {'/'.join(FRAME_SUFFIXES)} frame files")
        self._max_pixels = max_pixels
        first = self._read(0)
        self._size = (int(first.shape[0]), int(first.shape[1]))

    @property
    def num_frames(self) -> int:
        """Number of frame files."""
        return len(self._files)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the first frame, which every frame must share."""
        return self._size

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Return frame `index` as (H, W, 3) uint8 RGB (see `FrameSource.frame`)."""
        image = self._read(check_frame_index(index, len(self._files)))
        if (image.shape[0], image.shape[1]) != self._size:
            raise VideoReadError(
                f"{self._files[index].name} is {image.shape[1]}x{image.shape[0]}, but the clip's "
                f"frames are {self._size[1]}x{self._size[0]}"
            )
        return image

    def _read(self, index: int) -> npt.NDArray[np.uint8]:
        from PIL import Image

        path = self._files[index]
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width * height > self._max_pixels:
                    raise VideoReadError(
                        f"{path.name} has {width}x{height} pixels, more than the limit "
                        f"{self._max_pixels}"
                    )
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
        except VideoReadError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise VideoReadError(f"cannot read frame {path.name}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release: files are opened per frame."""


class FrameList:
    """Frames held in memory, given at once or pushed one by one (a live stream, a tracker).

    Args:
        frames: Initial frames, each (H, W, 3) uint8 RGB.
        size: (height, width) every frame must have; taken from the first frame if None.
        keep_last: Keep at most this many of the most recent frames (None: keep all); reading a
            dropped frame raises `FrameIndexError`, so a bounded list suits forward tracking.
        max_pixels: Largest accepted frame (H * W).
    """

    def __init__(
        self,
        frames: Sequence[npt.NDArray[np.uint8]] = (),
        *,
        size: tuple[int, int] | None = None,
        keep_last: int | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self._frames: dict[int, npt.NDArray[np.uint8]] = {}
        self._count = 0
        self._size = size
        self._keep_last = keep_last
        self._max_pixels = max_pixels
        for frame in frames:
            self.push(frame)

    @property
    def num_frames(self) -> int:
        """Number of frames pushed so far (dropped ones included)."""
        return self._count

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames.

        Raises:
            FrameIndexError: no frame was given and no size was set.
        """
        if self._size is None:
            raise FrameIndexError("the clip has no frames yet")
        return self._size

    def push(self, frame: npt.NDArray[np.uint8]) -> int:
        """Append a frame and return its index.

        Raises:
            InvalidImageError: not (H, W, 3) uint8, too large, or another size than the clip's.
        """
        hw = check_image(frame, max_pixels=self._max_pixels)
        if self._size is None:
            self._size = hw
        elif hw != self._size:
            raise InvalidImageError(
                f"frame is {hw[1]}x{hw[0]}, but the clip's frames are "
                f"{self._size[1]}x{self._size[0]}"
            )
        index = self._count
        self._frames[index] = frame
        self._count += 1
        if self._keep_last is not None:
            self._frames.pop(index - self._keep_last, None)
        return index

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Return frame `index` (see `FrameSource.frame`)."""
        check_frame_index(index, self._count)
        try:
            return self._frames[index]
        except KeyError:
            raise FrameIndexError(
                f"frame {index} was dropped: only the last {self._keep_last} frames are kept"
            ) from None

    def close(self) -> None:
        """Drop the frames."""
        self._frames.clear()


def to_video_model_input(
    frame: npt.NDArray[np.uint8], image_size: int, device: torch.device
) -> torch.Tensor:
    """Preprocess one frame as SAM-2's video predictor does.

    Pillow's default (bicubic) resize of the uint8 RGB frame to image_size x image_size, scaling
    to [0, 1] in float64, then ImageNet mean/std in float32 (`sam2.utils.misc` loads frames so;
    the image predictor resizes bilinearly with antialiasing instead).

    Args:
        frame: (H, W, 3) uint8 RGB.
        image_size: The model's square input side S.
        device: Where the result lives.

    Returns:
        (1, 3, S, S) float32.
    """
    from PIL import Image

    resized = np.asarray(Image.fromarray(frame).resize((image_size, image_size)))
    x = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0).to(device)

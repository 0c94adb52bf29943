"""Video files as a frame source: lazy decoding with OpenCV's FFmpeg backend.

Frame count: a container's frame count is often wrong (variable frame rate, files cut short,
streams without an index), so by default `VideoFile` counts the frames by decoding the stream
once when it opens, with ``grab()`` only (no colour conversion, nothing kept but one timestamp
per frame). This costs about 1 ms per 1024x576 MPEG-4 frame on one CPU core (about 0.3 s for a
300-frame clip, a couple of minutes for an hour of video); in exchange `num_frames` is exact,
every frame below it decodes, and the real presentation time of every frame is known. With
``count_frames=False`` the container's count is trusted instead (opening is instant): when a
read finds that the stream ends earlier, `num_frames` shrinks to the frames that exist and the
read raises `FrameIndexError`.

Reading: one capture stays open at the position after the last frame read, so sequential
reads decode one frame each. Short jumps forward are decoded through (``grab()``); jumps
backwards or far forward seek with FFmpeg. A seek whose landing frame does not have the
timestamp recorded while counting (inexact seeking in some containers) falls back, for the
rest of the file's life, to reopening and decoding forward from the first frame: slower, never
wrong.

Frame rate: `fps` is the container's nominal rate. For a variable-frame-rate file it is only
nominal: frame ``i`` is the ``i``-th decoded frame, and `timestamp_ms` gives its real time.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.errors import FrameIndexError, VideoReadError
from core_model.imageio import MAX_IMAGE_PIXELS
from core_model.video.frames import check_frame_index

logger = logging.getLogger(__name__)

#: Frames decoded through rather than seeked over when jumping forward.
SEEK_AHEAD_FRAMES = 32
#: Frame rate assumed when neither the container nor the timestamps give one.
DEFAULT_FPS = 25.0
#: With `max_side`, a decoded source frame may have at most this many times `max_pixels`.
DOWNSCALE_SOURCE_FACTOR = 4


class VideoFile:
    """Random access to the frames of one video file, decoded on demand.

    Implements `core_model.video.frames.FrameSource`. Thread-safe (one lock around the decoder).

    Args:
        path: The video file (any container and codec OpenCV's FFmpeg build reads).
        max_pixels: Largest frame (H * W) returned. Larger frames are refused unless
            `max_side` brings them under it (the source may then have up to
            ``DOWNSCALE_SOURCE_FACTOR`` times more pixels).
        max_side: If given, frames are downscaled (aspect kept, area interpolation) so that
            their longer side is at most this many pixels.
        count_frames: Count frames by decoding once at open (exact; see the module docstring)
            rather than trusting the container's count.

    Raises:
        VideoReadError: missing or unreadable file, not a video, no decodable frame, or frames
            over the pixel limit. Messages name the file, never its folder.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_pixels: int = MAX_IMAGE_PIXELS,
        max_side: int | None = None,
        count_frames: bool = True,
    ) -> None:
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be at least 1, got {max_side}")
        self.path = Path(path)
        self.name = self.path.name
        self._max_pixels = max_pixels
        self._max_side = max_side
        self._lock = threading.Lock()
        self._capture: Any = None
        self._next = 0  # index of the frame the open capture decodes next
        self._seek_trusted = True
        self._last: tuple[int, npt.NDArray[np.uint8]] | None = None
        self._timestamps: npt.NDArray[np.float64] | None = None
        capture = self._open()
        try:
            self.metadata_frames = max(0, int(capture.get(_cv2().CAP_PROP_FRAME_COUNT) or 0))
            fps = float(capture.get(_cv2().CAP_PROP_FPS) or 0.0)
            self._check_source_size(capture)
        except BaseException:
            capture.release()
            raise
        if count_frames or self.metadata_frames == 0:
            self._num_frames = self._count(capture)
        else:
            self._num_frames = self.metadata_frames
            self._capture = capture
        self.fps = self._nominal_fps(fps)
        first = self._decode(0)  # the real frame size (rotation applied) and a decodable start
        self._size = (int(first.shape[0]), int(first.shape[1]))
        self._last = (0, first)

    # ------------------------------------------------------------------ FrameSource

    @property
    def num_frames(self) -> int:
        """Number of frames (exact when counted; see the module docstring)."""
        return self._num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the returned frames (after `max_side` downscaling)."""
        return self._size

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Return frame `index` as (H, W, 3) uint8 RGB.

        Raises:
            FrameIndexError: `index` is negative or past the last frame (in the uncounted mode
                also when the stream turns out to end before `index`; `num_frames` then
                shrinks).
            VideoReadError: the frame cannot be decoded, or it differs in size from the first.
        """
        check_frame_index(index, self._num_frames)
        with self._lock:
            if self._last is not None and self._last[0] == index:
                return self._last[1].copy()
            image = self._decode(int(index))
            if image.shape[:2] != self._size:
                raise VideoReadError(
                    f"frame {index} of {self.name} is {image.shape[1]}x{image.shape[0]}, but the "
                    f"first frame is {self._size[1]}x{self._size[0]}"
                )
            self._last = (int(index), image)
            return image.copy()

    def close(self) -> None:
        """Release the decoder (idempotent); a later `frame` call reopens the file."""
        with self._lock:
            self._release()
            self._last = None

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ timing

    @property
    def timestamps_ms(self) -> npt.NDArray[np.float64] | None:
        """(N,) float64 presentation time of every frame in milliseconds, if counted."""
        return None if self._timestamps is None else self._timestamps[: self._num_frames]

    def timestamp_ms(self, index: int) -> float:
        """Return the time of frame `index` in ms (recorded when counted, else index / fps)."""
        check_frame_index(index, self._num_frames)
        if self._timestamps is not None:
            return float(self._timestamps[index])
        return 1000.0 * index / self.fps

    @property
    def variable_frame_rate(self) -> bool | None:
        """Whether frame intervals differ by more than 2 % (None when frames were not counted)."""
        stamps = self.timestamps_ms
        if stamps is None:
            return None
        steps = np.diff(stamps)
        if steps.size < 2:
            return False
        median = float(np.median(steps))
        return bool(median <= 0 or float(steps.max() - steps.min()) > 0.02 * median)

    # ------------------------------------------------------------------ internals

    def _open(self) -> Any:
        cv2 = _cv2()
        if not self.path.is_file():
            raise VideoReadError(f"cannot open video {self.name}: no such file")
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise VideoReadError(
                f"cannot read video {self.name}: not a video file, or a broken or truncated "
                "container"
            )
        return capture

    def _check_source_size(self, capture: Any) -> None:
        cv2 = _cv2()
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        out_height, out_width = self._scaled_hw(height, width)
        source_limit = self._max_pixels * (1 if self._max_side is None else DOWNSCALE_SOURCE_FACTOR)
        if width * height > source_limit or out_width * out_height > self._max_pixels:
            hint = "" if self._max_side is not None else " (pass a maximum side to downscale)"
            raise VideoReadError(
                f"video {self.name} has {width}x{height} frames, more than the limit of "
                f"{self._max_pixels} pixels{hint}"
            )

    def _scaled_hw(self, height: int, width: int) -> tuple[int, int]:
        side = max(height, width)
        if self._max_side is None or side <= self._max_side:
            return height, width
        scale = self._max_side / side
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _count(self, capture: Any) -> int:
        """Decode the stream once with ``grab()``; keep timestamps; release the capture."""
        cv2 = _cv2()
        stamps: list[float] = []
        try:
            while capture.grab():
                stamps.append(float(capture.get(cv2.CAP_PROP_POS_MSEC)))
        finally:
            capture.release()
        if not stamps:
            raise VideoReadError(f"video {self.name} has no decodable frame")
        if self.metadata_frames and len(stamps) != self.metadata_frames:
            logger.warning(
                "video %s: %d frames decode, the container lists %d (truncated file or variable "
                "frame rate); using %d",
                self.name,
                len(stamps),
                self.metadata_frames,
                len(stamps),
            )
        self._timestamps = np.asarray(stamps, dtype=np.float64)
        return len(stamps)

    def _nominal_fps(self, fps: float) -> float:
        if math.isfinite(fps) and fps > 0:
            return fps
        stamps = self.timestamps_ms
        if stamps is not None and stamps.size > 1 and stamps[-1] > stamps[0]:
            return float((stamps.size - 1) * 1000.0 / (stamps[-1] - stamps[0]))
        logger.warning("video %s gives no frame rate; assuming %.0f fps", self.name, DEFAULT_FPS)
        return DEFAULT_FPS

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _rewind(self) -> Any:
        self._release()
        self._capture = self._open()
        self._next = 0
        return self._capture

    def _decode(self, index: int) -> npt.NDArray[np.uint8]:
        """Decode frame `index` (must be < num_frames) as RGB at the output size."""
        jump = index - self._next
        if self._capture is not None and 0 <= jump <= SEEK_AHEAD_FRAMES:
            bgr = self._forward_read(index, rewind=False)
        elif index <= SEEK_AHEAD_FRAMES or not self._seek_trusted:
            bgr = self._forward_read(index, rewind=True)
        else:
            if self._capture is None:
                self._rewind()
            bgr = self._seek_read(index)
        return self._to_rgb(bgr)

    def _seek_read(self, index: int) -> npt.NDArray[np.uint8]:
        cv2 = _cv2()
        capture = self._capture
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = capture.read()
        landed = float(capture.get(cv2.CAP_PROP_POS_MSEC))
        exact = self._timestamps is None or abs(landed - self._timestamps[index]) < 0.5
        if ok and exact:
            self._next = index + 1
            return np.asarray(bgr, dtype=np.uint8)
        if ok:
            logger.info("video %s: inexact seeking; decoding forward from frame 0", self.name)
            self._seek_trusted = False
        return self._forward_read(index, rewind=True)

    def _forward_read(self, index: int, *, rewind: bool) -> npt.NDArray[np.uint8]:
        capture = self._rewind() if rewind else self._capture
        while self._next < index:
            if not capture.grab():
                self._stream_ended(self._next, index)
            self._next += 1
        ok, bgr = capture.read()
        if not ok:
            self._stream_ended(index, index)
        self._next = index + 1
        return np.asarray(bgr, dtype=np.uint8)

    def _stream_ended(self, end: int, index: int) -> None:
        """Handle a stream that stops at frame `end` while frame `index` was wanted."""
        self._release()
        if self._timestamps is not None:  # counted frames decoded once: this one must too
            raise VideoReadError(f"cannot decode frame {index} of video {self.name}")
        if end == 0:
            raise VideoReadError(f"video {self.name} has no decodable frame")
        logger.warning(
            "video %s ends after %d frames, the container lists %d",
            self.name,
            end,
            self._num_frames,
        )
        self._num_frames = end
        raise FrameIndexError(
            f"frame {index} does not exist: video {self.name} ends after {end} frames"
        )

    def _to_rgb(self, bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        cv2 = _cv2()
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        height, width = self._scaled_hw(*rgb.shape[:2])
        if (height, width) != rgb.shape[:2]:
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        if height * width > self._max_pixels:
            raise VideoReadError(
                f"video {self.name} has {width}x{height} frames, more than the limit of "
                f"{self._max_pixels} pixels"
            )
        return np.ascontiguousarray(rgb, dtype=np.uint8)


def _cv2() -> Any:
    import cv2

    return cv2

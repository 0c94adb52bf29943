"""`VideoFile`: counted frames, RGB order, seeking, and broken or oversized files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from core_model.errors import FrameIndexError, VideoReadError
from core_model.video.frames import FrameSource
from core_model.video.video_file import SEEK_AHEAD_FRAMES, VideoFile

FPS = 20.0


def frame_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of clip frame `index`: red encodes the index, blue stays low."""
    return (8 + 3 * index, 180, 40)


def write_clip(path: Path, count: int, *, width: int = 128, height: int = 96) -> Path:
    """Write `count` uniform frames of `frame_colour` (OpenCV takes BGR)."""
    fourcc = "mp4v" if path.suffix == ".mp4" else "MJPG"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), FPS, (width, height))
    assert writer.isOpened()
    for i in range(count):
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[:] = frame_colour(i)
        rgb[: 4 + i % 20, :8] = 255  # a bar whose height differs between neighbouring frames
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_counts_frames_and_returns_rgb(tmp_path: Path, suffix: str) -> None:
    video = VideoFile(write_clip(tmp_path / f"clip{suffix}", 12))
    assert isinstance(video, FrameSource)
    assert video.num_frames == video.metadata_frames == 12
    assert video.size == (96, 128)
    assert video.fps == pytest.approx(FPS)
    for i in (0, 5, 11):
        frame = video.frame(i)
        assert frame.dtype == np.uint8 and frame.shape == (96, 128, 3)
        colour = np.median(frame[48:, 64:].reshape(-1, 3), axis=0)
        np.testing.assert_allclose(colour, frame_colour(i), atol=6)
    stamps = video.timestamps_ms
    assert stamps is not None and stamps.shape == (12,)
    np.testing.assert_allclose(np.diff(stamps), 1000.0 / FPS, atol=1.0)
    assert video.timestamp_ms(3) == pytest.approx(150.0, abs=1.0)
    assert video.variable_frame_rate is False
    video.close()


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_random_access_returns_the_sequential_frames(tmp_path: Path, suffix: str) -> None:
    count = SEEK_AHEAD_FRAMES * 2 + 10
    path = write_clip(tmp_path / f"long{suffix}", count, width=64, height=48)
    with VideoFile(path) as video:
        sequential = [video.frame(i) for i in range(count)]
    jumps = [count - 1, 3, count - 20, 0, 40, 40, 41, 2, count - 2]  # back, far ahead, repeat
    with VideoFile(path) as video:
        for i in jumps:
            np.testing.assert_array_equal(video.frame(i), sequential[i], err_msg=f"frame {i}")


def test_inexact_seeking_falls_back_to_decoding_forward(tmp_path: Path) -> None:
    count = SEEK_AHEAD_FRAMES * 2 + 10
    path = write_clip(tmp_path / "long.mp4", count, width=64, height=48)
    with VideoFile(path) as video:
        expected = video.frame(count - 5)
    video = VideoFile(path)
    assert video._timestamps is not None
    video._timestamps += 7.0  # every seek now lands on a frame with another time than recorded
    np.testing.assert_array_equal(video.frame(count - 5), expected)
    assert video._seek_trusted is False
    np.testing.assert_array_equal(video.frame(count - 5), expected)
    video.close()


def test_frame_index_past_the_end_or_negative(tmp_path: Path) -> None:
    video = VideoFile(write_clip(tmp_path / "clip.mp4", 5))
    for index in (5, 100, -1):
        with pytest.raises(FrameIndexError, match="5 frames"):
            video.frame(index)
    assert video.frame(4).shape == (96, 128, 3)


def test_truncated_mp4_without_its_index_is_refused(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", 30)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VideoReadError, match=r"clip\.mp4"):
        VideoFile(path)


def test_truncated_avi_shrinks_to_the_frames_that_decode(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.avi", 40)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    video = VideoFile(path)
    assert video.metadata_frames == 40
    assert 10 < video.num_frames < 40
    last = video.num_frames - 1
    assert video.frame(last).shape == (96, 128, 3)
    with pytest.raises(FrameIndexError):
        video.frame(last + 1)


def test_uncounted_mode_finds_the_real_end_on_read(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.avi", 40)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    real = VideoFile(path).num_frames
    video = VideoFile(path, count_frames=False)
    assert video.num_frames == 40 and video.timestamps_ms is None
    with pytest.raises(FrameIndexError, match="ends after"):
        video.frame(39)
    assert video.num_frames == real
    assert video.frame(real - 1).shape == (96, 128, 3)
    assert video.timestamp_ms(2) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "content", [b"", b"not a video at all" * 100, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500]
)
def test_garbage_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match=r"clip\.mp4"):
        VideoFile(path)


def test_missing_file_folder_and_empty_video_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no such file"):
        VideoFile(tmp_path / "missing.mp4")
    with pytest.raises(VideoReadError):
        VideoFile(tmp_path)
    empty = write_clip(tmp_path / "empty.avi", 0)
    with pytest.raises(VideoReadError, match="empty.avi"):
        VideoFile(empty)


def test_frames_over_the_pixel_limit_are_refused_or_downscaled(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", 3)
    with pytest.raises(VideoReadError, match="128x96"):
        VideoFile(path, max_pixels=128 * 96 - 1)
    small = VideoFile(path, max_pixels=128 * 96 - 1, max_side=64)
    assert small.size == (48, 64)
    frame = small.frame(2)
    assert frame.shape == (48, 64, 3)
    np.testing.assert_allclose(
        np.median(frame[24:, 32:].reshape(-1, 3), axis=0), frame_colour(2), atol=6
    )
    with pytest.raises(VideoReadError):  # even downscaled, the source may not be unbounded
        VideoFile(path, max_pixels=100, max_side=8)


def test_close_releases_and_a_later_read_reopens(tmp_path: Path) -> None:
    video = VideoFile(write_clip(tmp_path / "clip.avi", 6))
    first = video.frame(4)
    video.close()
    video.close()
    np.testing.assert_array_equal(video.frame(4), first)
    video.frame(4)[:] = 0  # callers get copies
    np.testing.assert_array_equal(video.frame(4), first)

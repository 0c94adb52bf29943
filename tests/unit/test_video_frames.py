"""Frame sources, the video preprocessing and hole filling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core_model.errors import FrameIndexError, InvalidImageError, VideoReadError
from core_model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from core_model.video.frames import FrameFolder, FrameList, FrameSource, to_video_model_input
from core_model.video.tracking import fill_small_holes


def write_frames(folder: Path, names: list[str], size=(24, 32)) -> list[np.ndarray]:
    frames = []
    for i, name in enumerate(names):
        frame = np.full((*size, 3), i * 10, dtype=np.uint8)
        Image.fromarray(frame).save(folder / name)
        frames.append(frame)
    return frames


def test_folder_orders_frames_by_number(tmp_path: Path) -> None:
    names = ["frame_10.png", "frame_2.png", "frame_1.png", "notes.txt"]
    (tmp_path / "notes.txt").write_text("not a frame")
    write_frames(tmp_path, names[:3])
    source = FrameFolder(tmp_path)
    assert isinstance(source, FrameSource)
    assert source.num_frames == 3 and source.size == (24, 32)
    assert [int(source.frame(i)[0, 0, 0]) for i in range(3)] == [20, 10, 0]
    with pytest.raises(FrameIndexError, match="frame 3 does not exist"):
        source.frame(3)
    with pytest.raises(FrameIndexError):
        source.frame(-1)


def test_folder_refuses_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="not a folder"):
        FrameFolder(tmp_path / "missing")
    with pytest.raises(VideoReadError, match="no .jpg"):
        FrameFolder(tmp_path)
    write_frames(tmp_path, ["0.png"])
    write_frames(tmp_path, ["1.png"], size=(10, 10))
    (tmp_path / "2.jpg").write_bytes(b"not a jpeg")
    source = FrameFolder(tmp_path)
    with pytest.raises(VideoReadError, match="but the clip's frames are 32x24"):
        source.frame(1)
    with pytest.raises(VideoReadError, match="cannot read frame 2.jpg"):
        source.frame(2)
    with pytest.raises(VideoReadError, match="more than the limit"):
        FrameFolder(tmp_path, max_pixels=100)


def test_frame_list_push_and_bound() -> None:
    source = FrameList(keep_last=2)
    with pytest.raises(FrameIndexError, match="no frames yet"):
        _ = source.size
    frames = [np.full((4, 5, 3), i, dtype=np.uint8) for i in range(3)]
    assert [source.push(f) for f in frames] == [0, 1, 2]
    assert source.num_frames == 3 and source.size == (4, 5)
    assert int(source.frame(2)[0, 0, 0]) == 2
    with pytest.raises(FrameIndexError, match="dropped"):
        source.frame(0)
    with pytest.raises(InvalidImageError, match="clip's frames are 5x4"):
        source.push(np.zeros((5, 5, 3), dtype=np.uint8))
    with pytest.raises(InvalidImageError):
        source.push(np.zeros((4, 5), dtype=np.uint8))


def test_video_preprocessing_is_bicubic_resize_then_imagenet_norm() -> None:
    frame = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    x = to_video_model_input(frame, 16, torch.device("cpu"))
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    resized = np.asarray(Image.fromarray(frame).resize((16, 16), Image.Resampling.BICUBIC))
    expected = (resized / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_fill_small_holes_fills_only_small_background_components() -> None:
    logits = torch.full((1, 1, 12, 12), 5.0)
    logits[0, 0, 2, 2] = -3.0  # a 1-pixel hole
    logits[0, 0, 6:10, 6:10] = -3.0  # a 16-pixel hole
    filled = fill_small_holes(logits, 8)
    assert filled[0, 0, 2, 2] == pytest.approx(0.1)
    assert (filled[0, 0, 6:10, 6:10] == -3.0).all()
    assert torch.equal(fill_small_holes(logits, 0), logits)
    diagonal = torch.full((1, 1, 6, 6), 5.0)
    diagonal[0, 0, 1, 1] = diagonal[0, 0, 2, 2] = -1.0  # 8-connected: one hole of area 2
    assert (fill_small_holes(diagonal, 1)[0, 0, 1:3, 1:3].diagonal() == -1.0).all()
    assert (fill_small_holes(diagonal, 2)[0, 0, 1:3, 1:3].diagonal() == 0.1).all()

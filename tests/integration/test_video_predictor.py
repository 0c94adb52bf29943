"""The video predictor's own rules on the tiny random-weight model.

Equality with the official video predictor is `test_official_video_parity.py`; here: dropping
outputs outside the memory windows never changes a result, objects are independent, the state
stays bounded on long clips, and bad input gets the project's errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from core_model.errors import (
    FrameIndexError,
    GranularityError,
    InvalidMaskError,
    InvalidPromptError,
)
from core_model.types import Prompts
from core_model.video.frames import FrameList
from core_model.video.memory import NON_COND, ObjectTrack
from core_model.video.predictor import VideoPredictor


def clip(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """A noisy clip with a red rectangle moving right one pixel per frame."""
    rng = np.random.default_rng(3)
    frames = []
    for i in range(count):
        frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        x = 5 + i % (width - 30)
        frame[10:35, x : x + 20] = [200, 40, 40]
        frames.append(frame)
    return frames


CLICK = Prompts.from_arrays([[15.0, 20.0]], [1])


def run(predictor: VideoPredictor, frames: list[np.ndarray], **propagate) -> list:
    session = predictor.open(FrameList(frames))
    session.add_prompts(3, 1, CLICK, 0.4)
    return list(session.propagate(**propagate))


def test_dropping_far_outputs_changes_nothing(tiny_model, monkeypatch) -> None:
    frames = clip(40)
    predictor = VideoPredictor(tiny_model, fill_hole_area=0)
    session = predictor.open(FrameList(frames))
    session.add_prompts(20, 1, CLICK, 0.6)
    forward = list(session.propagate())
    backward = list(session.propagate(reverse=True))
    kept = set(session._tracks[1].memory[NON_COND])
    assert len(kept) < 39  # outputs were dropped on this 40-frame clip

    monkeypatch.setattr(ObjectTrack, "forget_far_frames", lambda self, current, window: 0)
    session = predictor.open(FrameList(frames))
    session.add_prompts(20, 1, CLICK, 0.6)
    full_forward = list(session.propagate())
    full_backward = list(session.propagate(reverse=True))
    assert len(session._tracks[1].memory[NON_COND]) == 39
    for a, b in zip(forward + backward, full_forward + full_backward, strict=True):
        assert a.frame == b.frame
        np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)


def test_memory_stays_bounded_on_a_long_clip(tiny_model) -> None:
    predictor = VideoPredictor(tiny_model)
    session = predictor.open(FrameList(clip(60)))
    session.add_prompts(0, 1, CLICK, 0.5)
    sizes = {}
    for result in session.propagate():
        if result.frame in (40, 59):  # past 2 windows: prompt window + current window
            sizes[result.frame] = session.memory_bytes()
    window = predictor.memory_window
    assert len(session._tracks[1].memory[NON_COND]) <= 2 * window
    assert sizes[59] == sizes[40]


def test_objects_are_independent_and_removable(tiny_model) -> None:
    frames = clip(8)
    predictor = VideoPredictor(tiny_model)
    alone = run(predictor, frames)

    session = predictor.open(FrameList(frames))
    session.add_prompts(3, 1, CLICK, 0.4)
    session.add_prompts(3, 7, Prompts.from_arrays(box=[30, 5, 60, 40]), 0.9)
    both = list(session.propagate())
    assert both[0].obj_ids == (1, 7)
    for a, b in zip(alone, both, strict=True):
        np.testing.assert_allclose(a.low_res_logits[0], b.low_res_logits[0], atol=1e-5)
    assert not np.allclose(both[-1].low_res_logits[0], both[-1].low_res_logits[1])

    session.remove_object(7)
    assert session.obj_ids == (1,)
    again = list(session.propagate())
    np.testing.assert_allclose(again[-1].low_res_logits, alone[-1].low_res_logits, atol=1e-5)
    session.reset()
    assert session.obj_ids == ()
    with pytest.raises(InvalidPromptError, match="no object has prompts"):
        list(session.propagate())


def test_granularity_changes_the_tracked_mask(tiny_model) -> None:
    frames = clip(5)
    predictor = VideoPredictor(tiny_model)
    masks = {}
    for g in (0.1, 1.0):
        session = predictor.open(FrameList(frames))
        session.add_prompts(0, 1, CLICK, g)
        masks[g] = [r.low_res_logits[0] for r in session.propagate()]
    assert all(not np.allclose(a, b) for a, b in zip(masks[0.1], masks[1.0], strict=True))


def test_results_frames_and_shapes(tiny_model) -> None:
    predictor = VideoPredictor(tiny_model)
    session = predictor.open(FrameList(clip(10)))
    first = session.add_prompts(4, 2, CLICK, 0.5)
    assert first.frame == 4 and first.obj_ids == (2,)
    assert first.low_res_logits.shape == (1, 64, 64) and first.masks().shape == (1, 48, 64)
    forward = [r.frame for r in session.propagate(max_frames=3)]
    backward = [r.frame for r in session.propagate(reverse=True)]
    assert forward == [4, 5, 6, 7] and backward == [4, 3, 2, 1, 0]
    boxes = first.boxes()
    mask = first.masks()[0]
    if mask.any():
        ys, xs = np.nonzero(mask)
        assert boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    else:
        assert np.isnan(boxes[0]).all()


def test_mask_prompt_is_the_frame_output(tiny_model) -> None:
    predictor = VideoPredictor(tiny_model, fill_hole_area=0)
    session = predictor.open(FrameList(clip(4)))
    mask = np.zeros((48, 64), dtype=bool)
    mask[10:35, 5:25] = True
    result = session.add_mask(0, 3, mask, granularity=0.7)
    assert result.object_scores[0] == pytest.approx(10.0)
    iou = (result.masks()[0] & mask).sum() / (result.masks()[0] | mask).sum()
    assert iou > 0.9
    assert len(list(session.propagate())) == 4


def test_correction_on_a_tracked_frame(tiny_model) -> None:
    predictor = VideoPredictor(tiny_model)
    session = predictor.open(FrameList(clip(6)))
    session.add_prompts(0, 1, CLICK, 0.5)
    before = {r.frame: r.low_res_logits for r in session.propagate()}
    fix = session.add_prompts(3, 1, Prompts.from_arrays([[40.0, 40.0]], [0]), 0.5, clear_old=False)
    assert not np.allclose(fix.low_res_logits, before[3])


def test_bad_input_is_refused(tiny_model) -> None:
    predictor = VideoPredictor(tiny_model)
    session = predictor.open(FrameList(clip(3)))
    with pytest.raises(FrameIndexError, match="frame 3 does not exist"):
        session.add_prompts(3, 1, CLICK, 0.5)
    with pytest.raises(InvalidPromptError, match="outside"):
        session.add_prompts(0, 1, Prompts.from_arrays([[65.0, 10.0]], [1]), 0.5)
    with pytest.raises(GranularityError):
        session.add_prompts(0, 1, CLICK, float("nan"))
    with pytest.raises(InvalidMaskError, match="shape"):
        session.add_mask(0, 1, np.ones((10, 10), dtype=bool))
    with pytest.raises(InvalidPromptError, match="box replaces"):
        session.add_prompts(0, 1, Prompts.from_arrays(box=[1, 1, 9, 9]), 0.5, clear_old=False)
    with pytest.raises(InvalidPromptError, match="object id"):
        session.add_prompts(0, "a", CLICK, 0.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidPromptError, match="no object with id"):
        session.remove_object(9)
    session.add_prompts(0, 1, CLICK, 0.5)
    with pytest.raises(FrameIndexError):
        list(session.propagate(start=5))


def test_pushed_frames_track_online(tiny_model) -> None:
    frames = clip(6)
    source = FrameList([frames[0]], keep_last=3)
    session = VideoPredictor(tiny_model).open(source)
    session.add_prompts(0, 1, CLICK, 0.5)
    seen = [r.frame for r in session.propagate()]
    for frame in frames[1:]:
        index = source.push(frame)
        seen += [r.frame for r in session.propagate(start=index, max_frames=0)]
    assert seen == [0, 1, 2, 3, 4, 5]
    with pytest.raises(FrameIndexError, match="dropped"):
        source.frame(1)

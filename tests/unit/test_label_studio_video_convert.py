"""Video labeling configs, keyframe decoding and track encoding (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from core_model.errors import GranularityError
from labeling_pipeline.label_studio.config import LabelConfigError, parse_label_config
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.video_convert import (
    MAX_PROMPT_KEYFRAMES,
    Keyframe,
    keyframe_box_pct,
    keyframe_box_px,
    mask_box_pct,
    parse_video_results,
    track_sequence,
    video_box_result,
)
from ml_backend.label_studio.video_predict import _config_fps, is_video_config

VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video">
    <Label value="Car" level="1.0"/><Label value="Car part" level="0.3"/><Label value="Other"/>
  </Labels>
  <Video name="video" value="$clip" frameRate="$fps"/>
  <VideoRectangle name="box" toName="video"/>
  <Number name="granularity" toName="video" perRegion="true" min="0.1" max="1.0"/>
  <TextArea name="granularity_text" toName="video" perRegion="true"/>
</View>"""
CONFIG = parse_label_config(VIDEO_CONFIG)


def keyframe(frame: int, x: float = 10.0, *, enabled: bool = True, **extra) -> dict:
    return {
        "frame": frame,
        "enabled": enabled,
        "rotation": 0,
        "x": x,
        "y": 20.0,
        "width": 30.0,
        "height": 40.0,
        "time": frame / 25,
        **extra,
    }


def region(region_id: str = "r1", frames=(3,), label: str = "Other", **value) -> dict:
    return {
        "id": region_id,
        "type": "videorectangle",
        "from_name": "box",
        "to_name": "video",
        "origin": "manual",
        "value": {
            "framesCount": 50,
            "duration": 2.0,
            "labels": [label],
            "sequence": [keyframe(f) for f in frames],
            **value,
        },
    }


def test_video_config_parses_tags_controls_and_levels() -> None:
    assert is_video_config(CONFIG)
    video = CONFIG.videos["video"]
    assert (video.data_key, video.framerate) == ("clip", "$fps")
    assert [(b.name, b.to_name) for b in CONFIG.video_boxes] == [("box", "video")]
    assert CONFIG.video_labels["videoLabels"]["Car part"].level == 0.3
    assert CONFIG.numbers == {"granularity"} and CONFIG.textareas == {"granularity_text"}
    image = parse_label_config('<View><Image name="i" value="$i"/></View>')
    assert not is_video_config(image) and image.videos == {}
    # a VideoRectangle on something that is not a Video is not a video control
    stray = parse_label_config(
        '<View><Image name="i" value="$i"/><VideoRectangle name="b" toName="i"/></View>'
    )
    assert not is_video_config(stray)


def test_frame_rate_comes_from_the_tag_or_task_data() -> None:
    video = CONFIG.videos["video"]
    assert _config_fps(video, {"fps": 12.5}) == 12.5
    assert _config_fps(video, {"fps": "0.5"}) == 2.0  # below 1: seconds per frame
    assert _config_fps(video, {}) == 24.0  # missing value: Label Studio's default
    assert _config_fps(video, {"fps": "fast"}) is None
    plain = parse_label_config(
        '<View><Video name="v" value="$v"/><VideoRectangle name="b" toName="v"/></View>'
    )
    assert _config_fps(plain.videos["v"], {}) == 24.0


def test_keyframes_and_granularity_resolution() -> None:
    objects = parse_video_results(
        [region("a", frames=(7, 3), label="Car part"), region("b", label="Other")],
        CONFIG,
        default_granularity=0.6,
    )
    first, second = objects
    assert [k.frame for k in first.keyframes] == [3, 7] and first.first_frame == 3
    assert (first.granularity, first.granularity_source) == (0.3, "level")
    assert (second.granularity, second.granularity_source) == (0.6, "default")
    assert (first.frames_count, first.duration, first.labels) == (50, 2.0, ("Car part",))
    slider = {"id": "a", "type": "number", "from_name": "granularity", "value": {"number": 0.45}}
    typed = {
        "id": "a",
        "type": "textarea",
        "from_name": "granularity_text",
        "value": {"text": ["0,8"]},
    }
    other = {"id": "b", "type": "number", "from_name": "granularity", "value": {"number": 0.9}}
    (obj,) = parse_video_results(
        [region("a", label="Car"), slider], CONFIG, default_granularity=0.5
    )
    assert (obj.granularity, obj.granularity_source) == (0.45, "number")
    (obj,) = parse_video_results(
        [region("a", label="Car"), slider, typed, other], CONFIG, default_granularity=0.5
    )
    assert (obj.granularity, obj.granularity_source) == (0.8, "textarea")
    with pytest.raises(GranularityError):
        parse_video_results(
            [region("a"), {**typed, "value": {"text": ["7"]}}], CONFIG, default_granularity=0.5
        )


def test_disabled_keyframes_are_not_prompts_and_other_results_are_ignored() -> None:
    item = region("a", frames=(2, 9))
    item["value"]["sequence"][1]["enabled"] = False
    keypoint = {"id": "k", "type": "keypointlabels", "value": {"x": 1, "y": 1}}
    (obj,) = parse_video_results([keypoint, item], CONFIG, default_granularity=0.5)
    assert [k.frame for k in obj.keyframes] == [2]
    assert parse_video_results([keypoint], CONFIG, default_granularity=0.5) == []


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([{**region(), "value": {"sequence": "no"}}], "sequence"),
        ([{**region(), "value": {"sequence": [keyframe(0)]}}], "frame"),
        ([{**region(), "value": {"sequence": [keyframe(2, x=float("nan"))]}}], "x"),
        (
            [{**region(), "value": {"sequence": [keyframe(2, enabled=False)]}}],
            "no enabled keyframe",
        ),
        ([{**region(), "value": {"sequence": []}}], "no enabled keyframe"),
        ([region(frames=range(1, MAX_PROMPT_KEYFRAMES + 2))], "drawn keyframes"),
        ([region(str(i)) for i in range(11)], "more than 10"),
    ],
)
def test_bad_regions_are_clear_errors(results, message) -> None:
    with pytest.raises(BadRequestError, match=message):
        parse_video_results(results, CONFIG, default_granularity=0.5)


def test_regions_with_too_many_drawn_keyframes_can_be_left_out() -> None:
    track = region("t", frames=range(1, MAX_PROMPT_KEYFRAMES + 2))
    objects = parse_video_results(
        [track, region("k", frames=(4,))], CONFIG, default_granularity=0.5, skip_tracks=True
    )
    assert [obj.region_id for obj in objects] == ["k"]


def test_unknown_control_is_a_config_error() -> None:
    with pytest.raises(LabelConfigError, match="VideoRectangle"):
        parse_video_results([{**region(), "from_name": "nope"}], CONFIG, default_granularity=0.5)


def test_keyframe_boxes_in_pixels_clipped_and_rotated() -> None:
    box = keyframe_box_px(Keyframe(**keyframe(1)), 100, 200)
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((20, 20, 80, 60))
    outside = Keyframe(**keyframe(1, x=90.0))  # 90 + 30 > 100: clipped at the right edge
    assert keyframe_box_pct(outside) == pytest.approx((90, 20, 100, 60))
    turned = Keyframe(**{**keyframe(1), "rotation": 90})  # turned about its top-left corner
    assert keyframe_box_pct(turned) == pytest.approx((0, 20, 10, 50))
    with pytest.raises(BadRequestError, match="no area"):
        keyframe_box_px(Keyframe(**keyframe(1, x=120.0)), 100, 200)


def test_mask_box_in_percent() -> None:
    mask = np.zeros((10, 20), bool)
    assert mask_box_pct(mask) is None
    mask[2:5, 4:14] = True
    assert mask_box_pct(mask) == pytest.approx((20, 20, 50, 30))


def test_track_sequence_keeps_keyframes_ends_and_restarts_spans() -> None:
    (obj,) = parse_video_results([region(frames=(2,))], CONFIG, default_granularity=0.5)
    seen = (1.0, 2.0, 3.0, 4.0)
    boxes = [(2, (5.0, 5.0, 5.0, 5.0)), (3, seen), (4, None), (5, None), (6, seen), (7, seen)]
    sequence = track_sequence(obj, boxes, fps=25.0, cut_off=False)
    assert [(e["frame"], e["enabled"]) for e in sequence] == [
        (2, True),
        (3, False),  # lost on frame 4: the span ends after frame 3
        (6, True),  # found again
        (7, True),
    ]
    assert sequence[0]["x"] == 10.0 and sequence[0]["width"] == 30.0  # the annotator's box
    assert sequence[1] == {
        "frame": 3,
        "enabled": False,
        "rotation": 0.0,
        "x": 1.0,
        "y": 2.0,
        "width": 3.0,
        "height": 4.0,
        "time": 0.12,
        "model_box": [1.0, 2.0, 3.0, 4.0],
    }
    cut = track_sequence(obj, boxes, fps=25.0, cut_off=True)
    assert cut[-1]["enabled"] is False and cut[:-1] == sequence[:-1]


def test_a_track_sent_back_is_prompted_by_its_drawn_and_moved_keyframes_only() -> None:
    (obj,) = parse_video_results([region(frames=(2,))], CONFIG, default_granularity=0.5)
    boxes = [(frame, (1.0 + frame, 2.0, 3.0, 4.0)) for frame in range(2, 40)]
    track = region(label="Car part")
    track["value"]["sequence"] = track_sequence(obj, boxes, fps=25.0, cut_off=True)
    (again,) = parse_video_results([track], CONFIG, default_granularity=0.5)
    assert [k.frame for k in again.keyframes] == [2]  # more than 20 keyframes, one drawn
    moved = track["value"]["sequence"][10]
    moved["x"] += 2.5  # the annotator corrects the box on frame 12 (extra fields stay)
    (corrected,) = parse_video_results([track], CONFIG, default_granularity=0.5)
    assert [k.frame for k in corrected.keyframes] == [2, 12]
    redone = track_sequence(
        corrected, [(2, None), (12, None), (13, (1, 1, 1, 1))], fps=25.0, cut_off=False
    )
    assert "model_box" not in redone[1] and redone[1]["x"] == moved["x"]  # kept as drawn
    del track["value"]["sequence"][0]  # the drawn keyframe deleted: the first one prompts
    (first,) = parse_video_results([track], CONFIG, default_granularity=0.5)
    assert [k.frame for k in first.keyframes] == [3, 12]


def test_video_box_result_keeps_region_identity() -> None:
    (obj,) = parse_video_results([region("keep-me", label="Car")], CONFIG, default_granularity=0.5)
    result = video_box_result(obj, [{"frame": 3}], frames_count=50, duration=2.0, score=0.91234)
    assert result["id"] == "keep-me" and result["type"] == "videorectangle"
    assert (result["from_name"], result["to_name"], result["score"]) == ("box", "video", 0.9123)
    assert result["value"] == {
        "framesCount": 50,
        "duration": 2.0,
        "sequence": [{"frame": 3}],
        "labels": ["Car"],
    }

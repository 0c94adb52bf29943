"""Labeling-config parsing, context decoding, result encoding (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from core_model.errors import GranularityError
from labeling_pipeline.label_studio.config import LabelConfigError, parse_label_config
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.convert import brush_result, parse_context, result_id
from ml_backend.label_studio.label_config import build_label_config, shipped_config
from ml_backend.label_studio.project_settings import parse_extra_params, project_settings
from ml_backend.label_studio.prompt_memory import PromptMemory

CONFIG = parse_label_config(build_label_config(["Car", "Person"], [0.2, 0.5, 1.0]))


def click(region_id: str, x: float, y: float, label: str = "Car @0.5", positive: bool = True):
    return {
        "id": region_id,
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 400,
        "original_height": 300,
        "is_positive": positive,
        "value": {"x": x, "y": y, "width": 0.26, "keypointlabels": [label]},
    }


def number(region_id: str, value: float):
    return {
        "id": region_id,
        "type": "number",
        "from_name": "granularity",
        "to_name": "image",
        "value": {"number": value},
    }


def text(region_id: str, value: str):
    return {
        "id": region_id,
        "type": "textarea",
        "from_name": "granularity_text",
        "to_name": "image",
        "value": {"text": [value]},
    }


def test_shipped_config_is_the_generated_one_and_parses() -> None:
    assert shipped_config() == build_label_config(["Car", "Person"], [0.2, 0.5, 1.0])
    config = parse_label_config(shipped_config())
    assert config.images == {"image": "image"}
    assert config.brush_for("image").labels == ("Car", "Person")
    label = config.click_controls["click"]["Person @0.2"]
    assert (label.target, label.level) == ("Person", 0.2)
    assert config.numbers == {"granularity"} and config.textareas == {"granularity_text"}
    assert "granularity=" not in shipped_config().replace('name="granularity', "")


def test_reserved_attribute_and_bad_levels_are_refused() -> None:
    with pytest.raises(LabelConfigError, match="reserves"):
        parse_label_config(
            '<View><KeyPointLabels name="k" toName="i">'
            '<Label value="A" granularity="word"/></KeyPointLabels></View>'
        )
    with pytest.raises(LabelConfigError, match="level"):
        parse_label_config(
            '<View><KeyPointLabels name="k" toName="i">'
            '<Label value="A" level="3"/></KeyPointLabels></View>'
        )
    with pytest.raises(LabelConfigError, match="XML"):
        parse_label_config("<View>")
    with pytest.raises(LabelConfigError):
        build_label_config(["Car", "Car"], [0.5])


@pytest.mark.parametrize(
    ("extra", "expected", "source"),
    [
        ([], 0.5, "level"),
        ([number("a", 0.8)], 0.8, "number"),
        ([number("a", 0.8), text("a", "0,35")], 0.35, "textarea"),
        ([number("b", 0.8), number("a", 0.3)], 0.3, "number"),  # the last value wins
        ([number("zz", 0.9)], 0.5, "level"),  # a control of another region does not count
    ],
)
def test_granularity_resolution_order(extra, expected, source) -> None:
    group = parse_context(
        [click("a", 10, 20), click("b", 30, 40, positive=False), *extra],
        CONFIG,
        default_granularity=0.6,
    )
    assert group is not None
    assert (group.granularity, group.granularity_source) == (pytest.approx(expected), source)
    assert group.points_pct == ((10, 20, 1), (30, 40, 0))
    assert group.label.target == "Car" and group.anchor_id == "a"
    assert group.original_hw == (300, 400)


def test_default_granularity_when_the_label_has_no_level() -> None:
    config = parse_label_config(
        '<View><Image name="image" value="$img"/><BrushLabels name="m" toName="image">'
        '<Label value="Car"/></BrushLabels><KeyPointLabels name="click" toName="image">'
        '<Label value="Car"/></KeyPointLabels></View>'
    )
    group = parse_context([click("a", 1, 2, label="Car")], config, default_granularity=0.7)
    assert (group.granularity, group.granularity_source) == (0.7, "default")
    assert config.images == {"image": "img"}


def test_prompts_in_pixels_and_boxes() -> None:
    group = parse_context([click("a", 50, 25)], CONFIG, default_granularity=0.5)
    prompts = group.prompts(300, 400, box_pct=(10, 10, 60, 90))
    assert (prompts.points[0].x, prompts.points[0].y) == (200, 75)
    assert (prompts.box.x0, prompts.box.y1) == (40, 270)
    rect = {
        "id": "r",
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "image",
        "value": {
            "x": 10,
            "y": 20,
            "width": 30,
            "height": 40,
            "rotation": 0,
            "rectanglelabels": ["Person"],
        },
    }
    boxed = parse_context([rect], CONFIG, default_granularity=0.4)
    assert boxed.box_pct == (10, 20, 40, 60) and boxed.points_pct == ()
    assert boxed.label.target == "Person"


@pytest.mark.parametrize(
    ("results", "error"),
    [
        ([click("a", 1, 2), text("a", "fine")], GranularityError),
        ([click("a", 1, 2), text("a", "1.7")], GranularityError),
        ([click("a", 1, 2, label="Bike @0.5")], LabelConfigError),
        ([{**click("a", 1, 2), "from_name": "other"}], LabelConfigError),
        ([{**click("a", "x", 2)}], BadRequestError),
        ([{**click("a", 1, 2), "value": {"x": 1, "y": 2}}], BadRequestError),
    ],
)
def test_bad_contexts(results, error) -> None:
    with pytest.raises(error):
        parse_context(results, CONFIG, default_granularity=0.5)


def test_contexts_without_smart_regions() -> None:
    assert parse_context([], CONFIG, default_granularity=0.5) is None
    assert parse_context([number("a", 0.3)], CONFIG, default_granularity=0.5) is None


def test_brush_result_is_decodable_0_255_with_a_stable_id() -> None:
    mask = np.zeros((30, 40), bool)
    mask[5:10, 3:20] = True
    result = brush_result(
        mask,
        region_id=result_id(7, "a"),
        from_name="mask",
        to_name="image",
        label="Car",
        score=0.91234,
    )
    assert result["id"] == result_id(7, "a") != result_id(7, "b")
    assert (result["original_width"], result["original_height"]) == (40, 30)
    alpha = decode_rle(result["value"]["rle"]).reshape(30, 40, 4)[:, :, 3]
    np.testing.assert_array_equal(alpha, mask.astype(np.uint8) * 255)
    assert result["value"]["brushlabels"] == ["Car"] and result["score"] == 0.9123


def test_extra_params_are_validated() -> None:
    options = parse_extra_params(
        {"default_granularity": 0.3, "preannotate": True, "max_regions": 5}
    )
    settings = project_settings(options, default_granularity=0.5)
    assert (settings.default_granularity, settings.preannotate, settings.max_regions) == (
        0.3,
        True,
        5,
    )
    assert parse_extra_params(None) == {}
    for bad in (
        {"colour": 1},
        {"preannotate": "yes"},
        {"max_regions": 0},
        {"default_granularity": 2},
        [1],
    ):
        with pytest.raises((BadRequestError, GranularityError)):
            parse_extra_params(bad)


def test_prompt_memory_keeps_boxes_per_task_annotator_and_label() -> None:
    memory = PromptMemory(ttl_s=60, max_entries=2)
    memory.remember("1", "u", (1, 2, 3, 4), "Car")
    assert memory.box_for("1", "u", "Car") == (1, 2, 3, 4)
    assert memory.box_for("1", "u", "Person") is None
    assert memory.box_for("1", "other", "Car") is None
    memory.remember("2", "u", (0, 0, 1, 1), "Car")
    memory.remember("3", "u", (0, 0, 1, 1), "Car")  # bounded: task 1 is evicted
    assert memory.box_for("1", "u", "Car") is None
    expired = PromptMemory(ttl_s=0)
    expired.remember("1", "u", (1, 2, 3, 4), "Car")
    assert expired.box_for("1", "u", "Car") is None


def test_a_labeling_config_with_a_dtd_is_refused() -> None:
    """Entity expansion (billion laughs) never runs: configs come from requests."""
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<View><Image name="image" value="$image"/><Header value="&b;"/></View>'
    )
    with pytest.raises(LabelConfigError, match="not valid XML"):
        parse_label_config(bomb)

"""Bounds below the routes: the segmenter's deadline, the config cache, granularity text, boxes."""

from __future__ import annotations

import pytest

from core_model.errors import GranularityError
from core_model.predictor import GranularityPredictor
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from labeling_pipeline.label_studio import config as config_module
from labeling_pipeline.label_studio.config import (
    MAX_LABEL_CONFIG_CHARS,
    LabelConfigError,
    parse_label_config,
)
from ml_backend.label_studio.convert import parse_granularity_text
from ml_backend.label_studio.prompt_memory import PromptMemory


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return GranularityPredictor(tiny_model)


def test_segmenter_stops_when_asked_and_reports_the_decoded_part(predictor) -> None:
    from request_backend import scene

    config = WholeImageConfig(points_per_side=8, points_per_batch=16, pred_iou_thresh=0.0)
    segmenter = WholeImageSegmenter(predictor, config)
    embedding = predictor.embed(scene())
    calls = []

    def stop_after_two_batches() -> bool:
        calls.append(1)
        return len(calls) > 2

    run = segmenter.run(embedding, should_stop=stop_after_two_batches)
    assert (run.points_decoded, run.points_total, run.complete) == (32, 64, False)
    full = segmenter.run(embedding)
    assert (full.points_decoded, full.complete) == (64, True)
    assert len(run.masks) <= len(full.masks)
    assert len(segmenter.segment(embedding)) == len(full.masks)


def test_segmenter_deadline_of_zero_decodes_nothing(predictor) -> None:
    from request_backend import scene

    config = WholeImageConfig(points_per_side=8, deadline_s=0.0)
    run = WholeImageSegmenter(predictor, config).run(predictor.embed(scene()))
    assert run.masks == [] and run.points_decoded == 0 and not run.complete
    with pytest.raises(ValueError, match="deadline_s"):
        WholeImageConfig(deadline_s=-1.0)


def _config(tag: int, padding: int) -> str:
    return f'<View><Image name="i{tag}" value="$image"/><!-- {"x" * padding} --></View>'


def test_label_config_size_is_bounded_and_the_cache_counts_bytes() -> None:
    with pytest.raises(LabelConfigError, match="more than"):
        parse_label_config(_config(0, MAX_LABEL_CONFIG_CHARS))
    for tag in range(60):  # 60 x 200 KB = 12 MB of distinct configs
        assert parse_label_config(_config(tag, 200_000)).images == {f"i{tag}": "image"}
    assert config_module._CACHE.size_bytes() <= config_module.CONFIG_CACHE_BYTES
    assert parse_label_config(_config(59, 200_000)) is parse_label_config(_config(59, 200_000))


@pytest.mark.parametrize(
    ("text", "value"), [("0.3", 0.3), (" 0,3 ", 0.3), ("1", 1.0), (".5", 0.5), ("0,25", 0.25)]
)
def test_granularity_text_accepts_decimal_points_and_commas(text, value) -> None:
    assert parse_granularity_text(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text", ["", "fine", "0.3,0.5", "0,3,5", "0.3.1", "-0.3", "+0.3", "1e-1", "nan", "inf", "٠٫٣"]
)
def test_granularity_text_refuses_anything_else(text) -> None:
    with pytest.raises(GranularityError):
        parse_granularity_text(text)


def test_granularity_text_out_of_range_is_refused() -> None:
    with pytest.raises(GranularityError, match="lie in"):
        parse_granularity_text("0,05")


def test_remembered_box_applies_only_while_positive_clicks_lie_inside() -> None:
    memory = PromptMemory(margin_pct=2.0)
    box = (20.0, 20.0, 40.0, 40.0)
    memory.remember("1", "u", box, "Car")
    assert memory.box_for("1", "u", "Car", points_pct=[(30, 30, 1)]) == box
    assert memory.box_for("1", "u", "Car", points_pct=[(41, 39, 1)]) == box  # within the margin
    # a negative click outside does not matter: it marks background
    assert memory.box_for("1", "u", "Car", points_pct=[(30, 30, 1), (80, 80, 0)]) == box
    # a positive click far outside: the annotator moved on; the box is forgotten for good
    assert memory.box_for("1", "u", "Car", points_pct=[(30, 30, 1), (80, 80, 1)]) is None
    assert memory.box_for("1", "u", "Car", points_pct=[(30, 30, 1)]) is None

"""Held-out split by image and the gate's decision rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labeling_pipeline.training.gate import GateConfig, GateError, Scores, decide
from labeling_pipeline.training.holdout import HoldoutError, split_holdout


@dataclass
class Row:
    id: int
    sha256: str


def rows(n: int) -> list[Row]:
    return [Row(i + 1, f"{i:064x}") for i in range(n)]


def test_the_split_is_by_image_deterministic_and_order_free() -> None:
    images = rows(50)
    masks = {im.id: 3 for im in images}
    a = split_holdout(images, masks, fraction=0.2)
    b = split_holdout(list(reversed(images)), masks, fraction=0.2)
    assert a.held_out == b.held_out and 3 <= len(a.held_out) <= 20
    assert set(a.train).isdisjoint(a.held_out) and len(a.train) + len(a.held_out) == 50


def test_an_image_keeps_its_side_as_the_project_grows() -> None:
    small, large = rows(30), rows(60)
    before = split_holdout(small, {im.id: 1 for im in small}).held_out
    after = split_holdout(large, {im.id: 1 for im in large}).held_out
    assert before <= after


def test_only_images_with_masks_are_held_out_at_least_one_and_never_all() -> None:
    images = rows(5)
    split = split_holdout(images, {2: 1}, fraction=0.0)
    assert split.held_out == {2} and split.eligible == 1 and 2 not in split.train
    both = split_holdout(images, {1: 1, 2: 4}, fraction=0.99)
    assert len(both.held_out) == 1  # one image with masks stays for training
    assert split_holdout(images, {}, fraction=0.5).held_out == frozenset()


@given(st.integers(0, 40), st.floats(0.0, 0.95), st.integers(0, 3))
def test_split_invariants(n: int, fraction: float, minimum: int) -> None:
    images = rows(n)
    masks = {im.id: 1 for im in images if im.id % 2}
    split = split_holdout(images, masks, fraction=fraction, min_images=minimum)
    assert split.held_out <= set(masks)
    assert len(split.held_out) >= min(minimum, split.eligible, max(split.eligible - 1, 1))
    if split.eligible >= 2:
        assert len(split.held_out) < split.eligible


def test_bad_split_settings_are_refused() -> None:
    with pytest.raises(HoldoutError):
        split_holdout(rows(3), {}, fraction=1.0)


def scores(count: int, **metrics: float) -> Scores:
    values = {"NoC85": 5.0, "NoC90": 7.0, "1-IoU": 0.5, "annotator_iou": 0.6}
    values.update(metrics)
    values.setdefault("annotator_count", float(count))
    return Scores(count, values, (0.5,) * 3)


def test_the_candidate_passes_within_the_tolerance_and_is_rejected_beyond() -> None:
    config = GateConfig(tolerance=0.02, min_masks=5)
    assert decide(scores(10, annotator_iou=0.59), scores(10), config).decision == "publish"
    worse = decide(scores(10, annotator_iou=0.55), scores(10), config)
    assert worse.decision == "reject" and math.isclose(worse.improvement, -0.05)
    assert "rejected" in worse.reason


def test_noc_metrics_are_lower_is_better() -> None:
    config = GateConfig(metric="NoC90", tolerance=0.5, min_masks=5)
    assert decide(scores(10, NoC90=7.4), scores(10), config).decision == "publish"
    assert decide(scores(10, NoC90=8.0), scores(10), config).decision == "reject"


def test_too_few_masks_cannot_decide_and_missing_granularities_fall_back_to_1_iou() -> None:
    config = GateConfig(min_masks=5)
    assert decide(scores(4), scores(4), config).decision == "undecided"
    fallback = decide(
        scores(10, annotator_count=2, **{"1-IoU": 0.2}), scores(10, annotator_count=2), config
    )
    assert fallback.metric == "1-IoU" and fallback.decision == "reject"


def test_gate_settings_are_checked() -> None:
    with pytest.raises(GateError, match="unknown gate settings"):
        GateConfig.from_mapping({"tolerence": 0.1})
    with pytest.raises(GateError):
        GateConfig(metric="AP")
    with pytest.raises(GateError):
        GateConfig(tolerance=-1)
    assert GateConfig.from_mapping({"granularities": [0.5]}).granularities == (0.5,)

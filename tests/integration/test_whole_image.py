"""WholeImageSegmenter on the tiny random model (thresholds opened up: random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_model.errors import GranularityError
from core_model.predictor import GranularityPredictor
from core_model.whole_image import (
    WholeImageConfig,
    WholeImageSegmenter,
    grid_points,
    stability_scores,
)

OPEN = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=6, points_per_batch=7)


def test_grid_points_are_cell_centres() -> None:
    points = grid_points(100, 200, 2)
    np.testing.assert_array_equal(points, [[50, 25], [150, 25], [50, 75], [150, 75]])


def test_stability_score_by_hand() -> None:
    logits = torch.tensor([[[2.0, 0.5], [-0.5, -2.0]], [[-5.0, -5.0], [-5.0, -5.0]]])
    np.testing.assert_allclose(stability_scores(logits, 0.0, 1.0).numpy(), [1 / 3, 1.0])


def test_masks_are_ranked_filtered_and_bounded(tiny_model, scene_image) -> None:
    segmenter = WholeImageSegmenter(
        GranularityPredictor(tiny_model), WholeImageConfig(**OPEN, max_masks=5, box_nms_thresh=0.95)
    )
    masks = segmenter.segment(scene_image, granularities=(0.2, 1.0))
    assert 0 < len(masks) <= 5
    scores = [m.score for m in masks]
    assert scores == sorted(scores, reverse=True)
    for m in masks:
        assert m.mask.shape == (96, 128) and m.mask.dtype == np.bool_
        assert m.area_px == int(m.mask.sum()) > 0
        assert m.granularity in (0.2, 1.0)
        x0, y0, x1, y1 = m.box_xyxy
        assert m.mask[int(y0) : int(y1), int(x0) : int(x1)].sum() == m.area_px


def test_nms_and_area_filters_remove_masks(tiny_model, scene_image) -> None:
    predictor = GranularityPredictor(tiny_model)
    embedding = predictor.embed(scene_image)
    loose = WholeImageSegmenter(
        predictor, WholeImageConfig(**OPEN, box_nms_thresh=1.0, max_masks=1000)
    )
    strict = WholeImageSegmenter(
        predictor, WholeImageConfig(**OPEN, box_nms_thresh=0.3, max_masks=1000)
    )
    n_loose = len(loose.segment(embedding))
    n_strict = len(strict.segment(embedding))
    assert n_loose == 36  # one mask per grid point when nothing is suppressed
    assert 0 < n_strict < n_loose
    big = WholeImageSegmenter(
        predictor, WholeImageConfig(**OPEN, box_nms_thresh=1.0, min_mask_area_px=10**6)
    )
    assert big.segment(embedding) == []


def test_impossible_thresholds_give_no_masks(tiny_model, scene_image) -> None:
    segmenter = WholeImageSegmenter(
        GranularityPredictor(tiny_model), WholeImageConfig(pred_iou_thresh=2.0, points_per_side=4)
    )
    assert segmenter.segment(scene_image) == []


def test_bad_arguments(tiny_model, scene_image) -> None:
    segmenter = WholeImageSegmenter(GranularityPredictor(tiny_model))
    with pytest.raises(GranularityError):
        segmenter.segment(scene_image, granularities=(0.5, 7.0))
    with pytest.raises(ValueError, match="points_per_side"):
        WholeImageConfig(points_per_side=0)

"""Click simulator against hand-worked cases (exact L2 distances, first arg-max, signs)."""

from __future__ import annotations

import numpy as np
import pytest

from labeling_pipeline.evaluation import Click, Clicker, EvaluationError, clicks_to_prompts
from labeling_pipeline.evaluation.clicker import padded_distance


def rect(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def test_distance_is_exact_euclidean_with_border_padding() -> None:
    # 7 rows x 9 columns: distance to the nearest outside pixel centre, border counts as outside
    dist = padded_distance(np.ones((7, 9), dtype=bool))
    expected_row3 = [1, 2, 3, 4, 4, 4, 3, 2, 1]
    np.testing.assert_array_equal(dist[3], expected_row3)
    np.testing.assert_array_equal(dist[:, 0], np.ones(7))
    assert dist.dtype == np.float32
    # a diagonal neighbour is sqrt(2) away (precise mask, not a 3x3 chamfer approximation)
    ring = np.ones((5, 5), dtype=bool)
    ring[2, 2] = False
    assert dist.max() == 4.0
    assert padded_distance(ring)[1, 1] == pytest.approx(np.sqrt(2), abs=1e-6)


def test_first_click_on_empty_prediction_is_the_centre_of_a_square() -> None:
    gt = rect((20, 30), (5, 12), (10, 17))  # 7x7 square, centre row 8, column 13
    click = Clicker(gt).next_click(None)
    assert click == Click(x=13, y=8, positive=True)
    point = click.as_point()  # (x, y) order, pixel centre
    assert (point.x, point.y, point.label) == (13.5, 8.5, 1)


def test_rectangle_ridge_ties_go_to_the_first_pixel_in_row_major_order() -> None:
    # 7 rows x 9 columns at rows 5..11, cols 10..18: distance 4 at local row 3, cols 3, 4, 5
    gt = rect((20, 30), (5, 12), (10, 19))
    clicker = Clicker(gt)
    assert clicker.next_click(None) == Click(x=13, y=8, positive=True)
    # the clicked pixel is excluded: the same (empty) prediction gives the next ridge pixel
    assert clicker.next_click(None) == Click(x=14, y=8, positive=True)
    assert clicker.next_click(None) == Click(x=15, y=8, positive=True)
    # 9 rows x 7 columns: the ridge is vertical, the first pixel is its top end
    tall = rect((20, 30), (5, 14), (10, 17))
    assert Clicker(tall).next_click(None) == Click(x=13, y=8, positive=True)


def test_overshooting_prediction_gets_a_negative_click_in_the_false_positives() -> None:
    gt = rect((30, 40), (10, 17), (5, 12))
    block = rect((30, 40), (5, 26), (20, 39))  # 21 rows x 19 cols, disjoint from gt
    click = Clicker(gt).next_click(gt | block)
    # FN is empty; FP distance peaks at 10 on local column 9, rows 9..11 -> first is row 9
    assert click == Click(x=29, y=14, positive=False)
    assert click.as_point().label == 0


def test_larger_false_negative_region_wins() -> None:
    gt = rect((30, 40), (2, 27), (2, 30))
    pred = rect((30, 40), (2, 5), (2, 30)) | rect((30, 40), (28, 30), (35, 40))
    click = Clicker(gt).next_click(pred)
    assert click is not None and click.positive
    assert gt[click.y, click.x] and not pred[click.y, click.x]


def test_equal_maxima_give_a_negative_click() -> None:
    gt = rect((20, 20), (2, 5), (2, 5))  # 3x3: max distance 2
    pred = rect((20, 20), (10, 13), (12, 15))  # disjoint 3x3 false positive: also 2
    assert Clicker(gt).next_click(pred) == Click(x=13, y=11, positive=False)


def test_ignored_pixels_are_never_errors() -> None:
    gt = rect((20, 30), (5, 12), (10, 17))
    ignore = rect((20, 30), (0, 20), (0, 14))  # hides gt columns 10..13
    # the clickable FN region is 7 rows x 3 cols (columns 14..16): distance 2 on column 15
    assert Clicker(gt, ignore).next_click(None) == Click(x=15, y=6, positive=True)
    # a false positive inside the ignore region is not an error either
    pred = gt | rect((20, 30), (0, 20), (0, 5))
    assert Clicker(gt, ignore).next_click(pred) is None


def test_perfect_prediction_gives_no_click() -> None:
    gt = rect((10, 10), (2, 6), (2, 6))
    clicker = Clicker(gt)
    assert clicker.next_click(gt) is None
    assert clicker.clicks == []


def test_prompts_keep_click_order_and_signs() -> None:
    prompts = clicks_to_prompts([Click(3, 4, True), Click(7, 1, False)])
    np.testing.assert_array_equal(prompts.coords_array(), [[3.5, 4.5], [7.5, 1.5]])
    np.testing.assert_array_equal(prompts.labels_array(), [1, 0])


def test_bad_inputs_raise() -> None:
    with pytest.raises(EvaluationError):
        Clicker(np.zeros((5, 5), dtype=bool))
    gt = rect((10, 10), (2, 6), (2, 6))
    with pytest.raises(EvaluationError):
        Clicker(gt, np.ones((10, 10), dtype=bool))
    with pytest.raises(EvaluationError):
        Clicker(gt).next_click(np.zeros((5, 5), dtype=bool))

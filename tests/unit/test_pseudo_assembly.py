"""Whole hypotheses from split leaves, snapping by finest parts, exact sparse overlaps."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labeling_pipeline.pseudo_labels.mask_ops import pairwise_intersections
from labeling_pipeline.pseudo_labels.refine import snap_to_parts
from labeling_pipeline.pseudo_labels.split import join_adjacent_pieces


def strip(columns: slice, shape: tuple[int, int] = (6, 12)) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape, bool)
    mask[1:5, columns] = True
    return mask


def test_touching_leaves_are_joined_and_separate_or_known_ones_are_not() -> None:
    proposal = strip(slice(0, 12))
    a, b, c = strip(slice(0, 4)), strip(slice(4, 8)), strip(slice(8, 12))
    first = a | b  # level 1 cut a + b | c, level 2 cut a | b
    joined = join_adjacent_pieces([first, c, a, b], proposal, max_overlap=0.8)
    # a | b repeats the level-1 piece; b | c is the new hypothesis; a and c do not touch
    assert len(joined) == 1
    assert np.array_equal(joined[0], b | c)


def test_a_coarse_part_straddling_two_objects_does_not_pull_the_other_in() -> None:
    coarse = np.zeros((20, 20), bool)
    coarse[2:18, 2:12] = True  # the object's coarse mask, a bit too wide
    left = np.zeros_like(coarse)
    left[2:18, 2:10] = True  # the object (a fine part)
    right = np.zeros_like(coarse)
    right[2:18, 10:18] = True  # the neighbour (a fine part, mostly outside)
    snapped = snap_to_parts(
        coarse, [left | right, left, right], band_px=1, min_inside=0.5, min_iou=0.5
    )
    # the coarse region left | right is 62 % inside, but its pixels follow their finer parts
    assert not snapped[:, 13:].any()
    assert snapped[2:18, 2:10].all()


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1), st.integers(min_value=1, max_value=6))
def test_sparse_intersections_are_exact(seed: int, count: int) -> None:
    masks = np.random.default_rng(seed).random((count, 9, 11)) < 0.4
    flat = masks.reshape(count, -1).astype(np.int64)
    assert np.array_equal(pairwise_intersections(masks), flat @ flat.T)


def test_pairwise_intersections_refuses_masks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="equal"):
        pairwise_intersections([np.ones((4, 4), bool), np.ones((4, 5), bool)])
    assert pairwise_intersections([]).shape == (0, 0)

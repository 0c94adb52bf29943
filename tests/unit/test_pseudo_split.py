"""Splitting a divide proposal that holds two touching objects (local N-cut)."""

from __future__ import annotations

import numpy as np

from labeling_pipeline.pseudo_labels.split import split_proposal

SETTINGS = {"sigma": 0.1, "max_ncut": 0.25, "max_cut_weight": 0.2}


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def two_blobs_joined_by_a_neck() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = np.zeros((20, 30), bool)
    mask[3:17, 2:13] = True  # left object
    mask[3:17, 17:28] = True  # right object
    mask[9:11, 13:17] = True  # a two-patch-wide junction
    features = np.zeros((20, 30, 3), np.float32)
    features[..., 0] = 1.0
    features[:, 15:, 1] = 1.5  # the right object looks different (cosine 0.55)
    left = mask.copy()
    left[:, 15:] = False
    return unit(features + 1e-3), mask, left


def test_touching_objects_are_split_at_the_junction() -> None:
    features, mask, left = two_blobs_joined_by_a_neck()
    pieces = split_proposal(features, mask, min_patches=40, max_depth=1, **SETTINGS)
    assert len(pieces) == 2
    best = max(pieces, key=lambda p: (p & left).sum())
    assert (best & left).sum() / (best | left).sum() > 0.85
    assert not (pieces[0] & pieces[1]).any()
    assert all((p & ~mask).sum() == 0 for p in pieces)


def test_a_uniform_region_is_not_split() -> None:
    mask = np.zeros((20, 30), bool)
    mask[3:17, 3:27] = True
    features = unit(np.ones((20, 30, 3), np.float32))
    assert split_proposal(features, mask, min_patches=40, max_depth=2, **SETTINGS) == []


def test_pieces_smaller_than_the_minimum_are_not_proposed() -> None:
    features, mask, _ = two_blobs_joined_by_a_neck()
    assert split_proposal(features, mask, min_patches=200, max_depth=2, **SETTINGS) == []

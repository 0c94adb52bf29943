"""Divide: normalised cuts on patch affinities find several objects on a synthetic feature grid."""

from __future__ import annotations

import numpy as np
import pytest

from labeling_pipeline.pseudo_labels.features import PatchFeatures
from labeling_pipeline.pseudo_labels.ncut import (
    NCutConfig,
    affinity_matrix,
    discover_instances,
    ncut_value,
    second_eigenvector,
)


def feature_grid(height: int, width: int, objects, *, dims: int = 32, seed: int = 0):
    """Background one direction, each object (y0, y1, x0, x1) another, plus noise."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(objects) + 1, dims))
    grid = np.tile(directions[0], (height, width, 1))
    truth = []
    for k, (y0, y1, x0, x1) in enumerate(objects, start=1):
        grid[y0:y1, x0:x1] = directions[k]
        mask = np.zeros((height, width), dtype=bool)
        mask[y0:y1, x0:x1] = True
        truth.append(mask)
    grid += 0.3 * rng.normal(size=grid.shape)
    features = PatchFeatures(
        grid.astype(np.float32), 16, (height * 16, width * 16), (height * 16, width * 16)
    )
    return features, truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("size", [(12, 14), (30, 32)])  # dense and ARPACK eigensolvers
def test_finds_every_object_with_a_score(size) -> None:
    h, w = size
    objects = [(2, h // 2, 2, w // 2), (h // 2 + 2, h - 2, w // 2 + 2, w - 3)]
    features, truth = feature_grid(h, w, objects)
    proposals = discover_instances(features)
    assert len(proposals) == 2
    for mask in truth:
        best = max(proposals, key=lambda p: iou(p.mask, mask))
        assert iou(best.mask, mask) == 1.0
        assert 0.25 < best.score <= 1.0
    assert not (proposals[0].mask & proposals[1].mask).any()


def test_objects_of_similar_features_are_found_together_then_split_by_connectivity() -> None:
    features, truth = feature_grid(16, 16, [(2, 6, 2, 6), (9, 14, 9, 14)])
    # make both objects share one direction: one cut separates them from the background
    grid = features.features.copy()
    grid[9:14, 9:14] = grid[3, 3] + 0.01
    same = PatchFeatures(grid, 16, features.image_hw, features.resized_hw)
    proposals = discover_instances(same)
    assert len(proposals) == 2 and {p.iteration for p in proposals} == {0}


def test_uniform_features_give_no_proposal() -> None:
    grid = np.ones((10, 10, 8), dtype=np.float32)
    grid += 0.01 * np.random.default_rng(0).normal(size=grid.shape).astype(np.float32)
    assert discover_instances(PatchFeatures(grid, 8, (80, 80), (80, 80))) == []


def test_foreground_is_not_the_background_side() -> None:
    features, truth = feature_grid(12, 12, [(4, 8, 4, 8)])
    (proposal,) = discover_instances(features, NCutConfig(max_iterations=1))
    assert iou(proposal.mask, truth[0]) == 1.0
    assert not proposal.mask[0].any() and not proposal.mask[:, 0].any()


def test_min_patches_and_max_objects() -> None:
    features, _ = feature_grid(16, 16, [(1, 3, 1, 3), (6, 12, 6, 12)])
    proposals = discover_instances(features, NCutConfig(min_patches=5))
    assert [int(p.mask.sum()) for p in proposals] == [36]
    assert len(discover_instances(features, NCutConfig(max_objects=1))) == 1


def test_eigenvector_separates_two_cliques_and_ncut_value() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=8), rng.normal(size=8)
    x = np.stack([a] * 5 + [b] * 7) + 0.05 * rng.normal(size=(12, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    weights = affinity_matrix(x.astype(np.float32), tau=0.2, eps=1e-5)
    vector = second_eigenvector(weights)
    side = vector > vector.mean()
    assert len(set(side[:5].tolist())) == 1 and len(set(side[5:].tolist())) == 1
    assert side[0] != side[5]
    assert ncut_value(weights, side) < 0.01
    assert ncut_value(weights, np.arange(12) % 2 == 0) > 0.9

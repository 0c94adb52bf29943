"""Conquer: iterative patch merging with a heap and union-find, checked against a naive version."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeling_pipeline.pseudo_labels.conquer import merge_patches


def unit(angle_deg: float) -> list[float]:
    return [math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))]


def naive_levels(features: np.ndarray, thresholds, min_patches: int):
    """Reference: a global scan for the most similar adjacent pair before every merge."""
    height, width = features.shape[:2]
    flat = features.reshape(height * width, -1).astype(np.float64)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    label = np.arange(height * width)
    grid = np.arange(height * width).reshape(height, width)
    pairs = [(a, b) for a, b in zip(grid[:, :-1].ravel(), grid[:, 1:].ravel(), strict=True)]
    pairs += [(a, b) for a, b in zip(grid[:-1].ravel(), grid[1:].ravel(), strict=True)]
    levels = []
    for theta in thresholds:
        while True:
            best, best_pair = -2.0, None
            for a, b in pairs:
                la, lb = label[a], label[b]
                if la == lb:
                    continue
                sa, sb = flat[label == la].sum(0), flat[label == lb].sum(0)
                sim = sa @ sb / (np.linalg.norm(sa) * np.linalg.norm(sb))
                if sim > best:
                    best, best_pair = sim, (la, lb)
            if best_pair is None or best < theta:
                break
            label[label == best_pair[1]] = best_pair[0]
        levels.append(label.copy())
    return levels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    _, ia = np.unique(a.ravel(), return_inverse=True)
    _, ib = np.unique(b.ravel(), return_inverse=True)
    pairs = set(zip(ia.tolist(), ib.tolist(), strict=True))
    return len(pairs) == len(set(ia.tolist())) == len(set(ib.tolist()))


def test_hand_made_row_merges_in_predictable_order() -> None:
    # angles 0, 10, 40, 100 degrees: cos 10 = 0.985 merges at 0.9; the pair's mean (5 deg) is
    # cos 35 = 0.819 from patch 2, so it joins at 0.8; patch 3 (60+ degrees away) never joins
    features = np.array([[unit(0), unit(10), unit(40), unit(100)]], dtype=np.float32)
    result = merge_patches(features, min_patches=1)
    assert [(a, b) for a, b, _ in result.merges] == [(0, 1), (0, 2)]
    assert result.merges[0][2] == pytest.approx(math.cos(math.radians(10)))
    assert result.merges[1][2] == pytest.approx(math.cos(math.radians(35)))
    assert result.labels[0].tolist() == [[0, 0, 2, 3]]
    assert all(level.tolist() == [[0, 0, 0, 3]] for level in result.labels[1:])
    recorded = [(r.mask.ravel().tolist(), r.threshold) for r in result.regions]
    assert recorded == [
        ([True, True, False, False], 0.9),
        ([False, False, True, False], 0.9),
        ([False, False, False, True], 0.9),
        ([True, True, True, False], 0.8),
    ]


def test_most_similar_pair_merges_first() -> None:
    features = np.array([[unit(0), unit(22), unit(30)]], dtype=np.float32)  # 0.927 < 0.990
    result = merge_patches(features, thresholds=(0.9,), min_patches=1)
    assert [(a, b) for a, b, _ in result.merges][0] == (1, 2)


def test_only_adjacent_patches_merge() -> None:
    features = np.array([[unit(0), unit(90), unit(0)]], dtype=np.float32)
    result = merge_patches(features, min_patches=1)
    assert result.merges == ()
    assert result.labels[-1].tolist() == [[0, 1, 2]]


def test_min_patches_and_whole_grid_are_not_recorded() -> None:
    features = np.ones((3, 3, 4), dtype=np.float32)
    result = merge_patches(features, min_patches=4)
    assert len(result.merges) == 8
    assert result.regions == ()  # the single cluster has no neighbour: it is the whole grid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_global_scan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, 3, 6))
    features = np.kron(base, np.ones((2, 2, 1))) + 0.6 * rng.normal(size=(6, 6, 6))
    thresholds = (0.9, 0.8, 0.7, 0.6, 0.5)
    result = merge_patches(features, thresholds=thresholds, min_patches=1)
    for ours, reference in zip(result.labels, naive_levels(features, thresholds, 1), strict=True):
        assert same_partition(ours, reference.reshape(6, 6))


def test_48x48_grid_of_768d_features() -> None:
    rng = np.random.default_rng(0)
    blocks = rng.normal(size=(6, 6, 768))
    features = np.kron(blocks, np.ones((8, 8, 1))) + 0.3 * rng.normal(size=(48, 48, 768))
    result = merge_patches(features.astype(np.float32))
    assert len(result.labels) == 5
    assert len(np.unique(result.labels[-1])) == 36  # the 36 blocks, each merged completely
    masks = np.stack([r.mask for r in result.regions])
    assert masks.shape == (36, 48, 48) and (masks.sum(axis=0) == 1).all()
    assert all(r.num_patches == 64 for r in result.regions)


def test_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="features must be"):
        merge_patches(np.zeros((4, 4), dtype=np.float32))

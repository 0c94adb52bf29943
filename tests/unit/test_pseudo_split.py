"""Splitting a divide proposal that holds two touching objects (local N-cut)."""

from __future__ import annotations

import numpy as np

from labeling_pipeline.pseudo_labels.split import SplitRules, choose_cut, split_proposal


def rules(min_patches: int, neck_ncut: float = 0.0, neck_preference: float = 0.5) -> SplitRules:
    """The default thresholds of `PseudoLabelConfig`, with the given piece size and neck rule."""
    return SplitRules(
        sigma=0.1,
        max_ncut=0.25,
        max_cut_weight=0.2,
        min_patches=min_patches,
        neck_ncut=neck_ncut,
        neck_preference=neck_preference,
    )


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
    pieces = split_proposal(features, mask, rules(40), max_depth=1)
    assert len(pieces) == 2
    best = max(pieces, key=lambda p: (p & left).sum())
    assert (best & left).sum() / (best | left).sum() > 0.85
    assert not (pieces[0] & pieces[1]).any()
    assert all((p & ~mask).sum() == 0 for p in pieces)


def test_a_uniform_region_is_not_split() -> None:
    mask = np.zeros((20, 30), bool)
    mask[3:17, 3:27] = True
    features = unit(np.ones((20, 30, 3), np.float32))
    assert split_proposal(features, mask, rules(40), max_depth=2) == []


def test_pieces_smaller_than_the_minimum_are_not_proposed() -> None:
    features, mask, _ = two_blobs_joined_by_a_neck()
    assert split_proposal(features, mask, rules(200), max_depth=2) == []


def same_looking_blobs_joined_by_a_neck() -> tuple[np.ndarray, np.ndarray]:
    _, mask, _ = two_blobs_joined_by_a_neck()
    return unit(np.ones((20, 30, 3), np.float32)), mask


def test_a_narrow_neck_splits_objects_of_the_same_appearance() -> None:
    features, mask = same_looking_blobs_joined_by_a_neck()
    # every link is strong, so only the neck rule can cut (normalised cut ~0.007 here)
    assert split_proposal(features, mask, rules(40), max_depth=1) == []
    pieces = split_proposal(features, mask, rules(40, neck_ncut=0.02), max_depth=1)
    assert len(pieces) == 2
    assert {int(p[:, :13].sum() > p[:, 17:].sum()) for p in pieces} == {0, 1}


def test_a_uniform_region_without_a_neck_is_not_split_by_the_neck_rule() -> None:
    mask = np.zeros((20, 30), bool)
    mask[3:17, 3:27] = True  # best normalised cut ~0.065: a shape, not a neck
    features = unit(np.ones((20, 30, 3), np.float32))
    pieces = split_proposal(features, mask, rules(40, neck_ncut=0.02), max_depth=2)
    assert pieces == []


def halves(mask: np.ndarray, column: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the proposal's flat patch indices and the side left of `column`."""
    flat = np.flatnonzero(mask)
    side = (flat % mask.shape[1]) < column
    return flat, side


def test_a_seam_wins_unless_the_neck_is_clearly_narrower() -> None:
    mask = np.zeros((10, 40), bool)
    mask[1:9, 1:39] = True
    flat, neck_side = halves(mask, 20)
    _, seam_side = halves(mask, 12)

    def chosen(neck_value: float, seam_value: float, preference: float = 0.5) -> int:
        cuts = [(neck_value, 0.9, neck_side), (seam_value, 0.1, seam_side)]
        cuts.sort(key=lambda cut: cut[0])
        pieces = choose_cut(cuts, flat, mask, rules(30, neck_ncut=0.02, neck_preference=preference))
        return int(min(p.sum() for p in pieces))  # 8 x 19 (neck) or 8 x 11 (seam)

    assert chosen(0.004, 0.012) == 8 * 19  # the neck is a third of the seam's value
    assert chosen(0.006, 0.010) == 8 * 11  # not clearly narrower: the seam's evidence wins
    assert chosen(0.006, 0.010, preference=1.0) == 8 * 19
    assert chosen(0.03, 0.1) == 8 * 11  # above neck_ncut: not a neck at all

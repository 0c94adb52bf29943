"""Break attachment ties between split leaves by convexity.

`regroup` moves a region only when it is clearly more attached to another leaf (more than
`min_gain` times). A region about as attached to two leaves, such as the bottom stripe of a
striped panel lying over a house wall, stays where the split put it, though one side of the
tie makes two whole objects and the other a panel without its stripe and a wall with a stripe
sticking out. An object is seldom less convex for having all its parts, while a part of
another object sticking out of it makes it so. Convexity alone is a weak cue for which object
a part belongs to, so it decides ties only: a region at least `min_ratio` as attached to
another leaf moves there when the move lowers the two leaves' convex deficiency (pixels of
their convex hulls outside them).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.regroup_state import Assignment, Move, move_regions

logger = logging.getLogger(__name__)


def convex_deficiency(mask: npt.NDArray[np.bool_]) -> int:
    """Return the number of pixels inside the convex hull of the (H, W) bool mask but not in it."""
    points = cv2.findNonZero(mask.astype(np.uint8))
    if points is None:
        return 0
    x, y, width, height = cv2.boundingRect(points)
    hull = cv2.convexHull(points - np.array([x, y], dtype=points.dtype))
    filled = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(filled, hull, 1)
    inside = mask[y : y + height, x : x + width]
    return int(np.count_nonzero(filled.astype(bool) & ~inside))


def _split_off(
    state: Assignment, region: int, carry_fraction: float
) -> tuple[list[int], npt.NDArray[np.bool_]] | None:
    """Return (members, remaining): what leaves the region's leaf with it, and what stays.

    If the leaf without the region falls apart, its pieces other than the largest leave with
    the region (with the regions mostly inside them) when they hold at most `carry_fraction` of
    the region's area; otherwise, or when the leaf would keep less than its least area, None.
    """
    current = int(state.owner[region])
    remaining = state.leaves[current] & ~state.regions[region]
    members = [region]
    count, labels = cv2.connectedComponents(remaining.astype(np.uint8), connectivity=8)
    if count > 2:
        sizes = np.bincount(labels.ravel(), minlength=count)[1:]
        kept = labels == 1 + int(np.argmax(sizes))
        cut_off = remaining & ~kept
        if np.count_nonzero(cut_off) > carry_fraction * np.count_nonzero(state.regions[region]):
            return None
        for k in np.flatnonzero(state.owner == current):
            inside = np.count_nonzero(state.regions[k] & cut_off)
            if k != region and inside > 0.5 * np.count_nonzero(state.regions[k]):
                members.append(int(k))
        remaining = remaining & kept
    if np.count_nonzero(remaining) < state.min_area[current]:
        return None
    return members, remaining


def convex_tie_moves(
    state: Assignment, min_ratio: float, carry_fraction: float, max_rounds: int
) -> list[Move]:
    """Move regions about as attached elsewhere where the leaves get more convex (updates `state`).

    Args:
        state: The assignment after the attachment moves.
        min_ratio: A region is considered for another leaf when its attachment there is at
            least this times its attachment to its own leaf.
        carry_fraction: Pieces its leaving cuts off from its leaf go with a region up to this
            share of its area (`_split_off`).
        max_rounds: Passes over the regions, largest first.

    Returns:
        The moves in order: (region (H, W) bool, leaf it left, leaf it joined).
    """
    moves: list[Move] = []
    deficiency = [convex_deficiency(leaf) for leaf in state.leaves]
    sizes = [np.count_nonzero(region) for region in state.regions]
    for _ in range(max_rounds):
        moved = False
        for region in np.argsort(sizes)[::-1]:
            if state.owner[region] >= 0:
                made = _tie_move(state, int(region), deficiency, min_ratio, carry_fraction)
                moves += made
                moved = moved or bool(made)
        if not moved:
            break
    return moves


def _tie_move(
    state: Assignment,
    region: int,
    deficiency: list[int],
    min_ratio: float,
    carry_fraction: float,
) -> list[Move]:
    """Move one region to the first leaf, most attached first, where the leaves get more convex.

    `deficiency` holds each leaf's `convex_deficiency` and is kept up to date.
    """
    current = int(state.owner[region])
    per_leaf = state.attachment_per_leaf(region)
    for target in (int(t) for t in np.argsort(-per_leaf, kind="stable")):
        if target == current or per_leaf[target] <= 0:
            continue
        if per_leaf[target] < min_ratio * per_leaf[current]:
            return []
        split = _split_off(state, region, carry_fraction)
        if split is None:
            return []
        members, remaining = split
        joined = state.leaves[target] | (state.leaves[current] & ~remaining)
        for k in members:
            joined = joined | state.regions[k]
        after = convex_deficiency(remaining), convex_deficiency(joined)
        if sum(after) >= deficiency[current] + deficiency[target]:
            continue
        logger.debug(
            "region %d moves from leaf %d to %d by convexity: deficiency %d -> %d",
            region,
            current,
            target,
            deficiency[current] + deficiency[target],
            sum(after),
        )
        deficiency[current], deficiency[target] = after
        return move_regions(state, members, target, remaining)
    return []

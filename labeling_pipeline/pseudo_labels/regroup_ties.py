"""Break attachment ties between split leaves by shape: convexity, then twins.

`regroup` moves a region only when it is clearly more attached to another leaf (more than
`min_gain` times). A region about as attached to two leaves stays where the split put it,
though often only one side of the tie makes whole objects. Two shape cues decide such ties;
each is a weak cue on its own, so neither overrides the attachment:

- convexity: the bottom stripe of a striped panel lying over a house wall makes, with the
  panel, two whole objects, and with the wall a panel without its stripe and a wall with a
  stripe sticking out. An object is seldom less convex for having all its parts, while a part
  of another object sticking out of it makes it so. The region moves when that lowers the two
  leaves' convex deficiency (pixels of their convex hulls outside them);
- twins: wheels, petals, legs and windows come in sets of one size and shape. A wheel lying
  on a house wall as much as on its vehicle moves to the leaf holding its twin when its own
  leaf holds none, and stays with its twin the other way round (`twins`); where both leaves
  or neither hold a twin, convexity decides.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

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


def region_shapes(regions: list[npt.NDArray[np.bool_]]) -> npt.NDArray[np.float64]:
    """Return (n, 2) float64: each (H, W) bool region's area in pixels and its elongation.

    Elongation is the standard deviation of the region's pixels along its major axis over that
    across it (1 for a disc or a square; 0 for an empty region).
    """
    out = np.zeros((len(regions), 2))
    for k, region in enumerate(regions):
        rows, cols = np.nonzero(region)
        if rows.size < 2:
            out[k, 0] = rows.size
            continue
        points = np.stack([rows, cols], axis=1).astype(np.float64)
        points -= points.mean(axis=0)
        small, large = np.linalg.eigvalsh(points.T @ points / rows.size)
        out[k] = rows.size, float(np.sqrt(large / max(small, 1e-9)))
    return out


def twins(shapes: npt.NDArray[np.float64], region: int, tolerance: float) -> npt.NDArray[np.bool_]:
    """Return (n,) bool: the other regions of `region`'s size and shape.

    Both the area and the elongation (`region_shapes`, (n, 2)) lie within `tolerance`
    (relative) of region `region`'s.
    """
    area, elongation = shapes[region]
    if area <= 0 or elongation <= 0:
        return np.zeros(len(shapes), dtype=bool)
    close: npt.NDArray[np.bool_] = (np.abs(shapes[:, 0] / area - 1.0) <= tolerance) & (
        np.abs(shapes[:, 1] / elongation - 1.0) <= tolerance
    )
    close[region] = False
    return close


class TieRules(NamedTuple):
    """When a region about as attached to another leaf moves there (`tie_moves`)."""

    min_ratio: float  # least attachment there, x that to its own leaf
    carry_fraction: float  # what its leaving cuts off goes along up to this x its area
    twin_tolerance: float  # relative area and elongation difference of twins (`twins`)


def tie_moves(state: Assignment, rules: TieRules, max_rounds: int) -> list[Move]:
    """Move regions about as attached elsewhere where their shape says so (updates `state`).

    Args:
        state: The assignment after the attachment moves.
        rules: The tie's thresholds.
        max_rounds: Passes over the regions, largest first.

    Returns:
        The moves in order: (region (H, W) bool, leaf it left, leaf it joined).
    """
    moves: list[Move] = []
    deficiency = [convex_deficiency(leaf) for leaf in state.leaves]
    shapes = region_shapes(state.regions)
    for _ in range(max_rounds):
        moved = False
        for region in np.argsort(shapes[:, 0], kind="stable")[::-1]:
            if state.owner[region] >= 0:
                made = _tie_move(state, int(region), deficiency, shapes, rules)
                moves += made
                moved = moved or bool(made)
        if not moved:
            break
    return moves


def _tie_move(
    state: Assignment,
    region: int,
    deficiency: list[int],
    shapes: npt.NDArray[np.float64],
    rules: TieRules,
) -> list[Move]:
    """Move one region to the first leaf, most attached first, that its shape favours.

    `deficiency` holds each leaf's `convex_deficiency` and is kept up to date; `shapes` is
    `region_shapes` of every region.
    """
    current = int(state.owner[region])
    per_leaf = state.attachment_per_leaf(region)
    for target in (int(t) for t in np.argsort(-per_leaf, kind="stable")):
        if target == current or per_leaf[target] <= 0:
            continue
        if per_leaf[target] < rules.min_ratio * per_leaf[current]:
            return []
        split = _split_off(state, region, rules.carry_fraction)
        if split is None:
            return []
        members, remaining = split
        joined = state.leaves[target] | (state.leaves[current] & ~remaining)
        for k in members:
            joined = joined | state.regions[k]
        after = convex_deficiency(remaining), convex_deficiency(joined)
        similar = twins(shapes, region, rules.twin_tolerance)
        twin_there = bool(np.any(similar & (state.owner == target)))
        twin_here = bool(np.any(similar & (state.owner == current)))
        if twin_there != twin_here:
            favoured = twin_there  # a twin on one side only decides
        else:
            favoured = sum(after) < deficiency[current] + deficiency[target]
        if not favoured:
            continue
        logger.debug(
            "region %d moves from leaf %d to %d: deficiency %d -> %d, twin there %s",
            region,
            current,
            target,
            deficiency[current] + deficiency[target],
            sum(after),
            twin_there,
        )
        deficiency[current], deficiency[target] = after
        return move_regions(state, members, target, remaining)
    return []

"""Regroup the parts of a crowded proposal between its split pieces by how they are attached.

The split (`split`) cuts a proposal holding several objects on the patch grid; where parts of
two objects meet, it can put a whole part on the wrong side (a roof with the vehicle it touches
at one wheel instead of the wall it sits on). After snapping, every split leaf (a piece holding
no other piece) is a union of conquer parts, so the assignment can be revised part by part:

- every pixel of the proposal belongs to its finest (smallest) conquer part, and every such
  region to the leaf holding most of it;
- a region whose attachment to another leaf is more than `min_gain` times its attachment to
  its own leaf moves there, provided its leaf stays one connected piece keeping at least
  `min_keep` of its area. Attachment is shared boundary where the region does not bulge into
  its neighbour (`attachment`): a part belongs to the object it is attached to along most of
  its outline (parts of one object abut each other), while an occluder lying on another
  object touches it with its own convex outline, which says nothing about where it belongs.
  An elongated region (a limb, a stem) is attached at its ends only (`end_zones`): it joins
  its object at a joint, and along its sides it merely lies on or under other things;
- moves repeat until none is left (at most `max_rounds` rounds);
- then groups of touching regions of one leaf that together are more attached to another leaf
  move there (`attached_group`): parts put on the wrong side together hold on to each other,
  so no single one of them would move;
- last, a region at least as attached to another leaf as to its own, which no rule above
  moved, moves there when that makes the two leaves more convex or joins it to its twin (a
  region of its size and shape) while its own leaf has none (`regroup_ties`).

Every piece of the split tree follows the moves of the leaves it holds, so the whole
hypotheses stay one consistent partition of the proposal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.regroup_state import (
    Assignment,
    Move,
    connected,
    move_regions,
)
from labeling_pipeline.pseudo_labels.regroup_ties import TieRules, tie_moves

logger = logging.getLogger(__name__)

# 4-neighbour and 2-pixel offsets: the refined parts of a boundary may leave a gap of a pixel
_OFFSETS = ((0, 1), (1, 0), (0, 2), (2, 0))


def finest_labels(
    parts: Sequence[npt.NDArray[np.bool_]], shape: tuple[int, int]
) -> npt.NDArray[np.int32]:
    """Return the (H, W) int32 index of the smallest part covering each pixel (-1: none)."""
    labels = np.full(shape, -1, dtype=np.int32)
    for index in sorted(range(len(parts)), key=lambda k: -np.count_nonzero(parts[k])):
        labels[parts[index]] = index
    return labels


def own_fill(
    labels: npt.NDArray[np.int32], count: int, radius_fraction: float
) -> npt.NDArray[np.float32]:
    """Return (H, W) float32: the share of a disc around each pixel inside the pixel's region.

    The disc's radius is `radius_fraction` x the square root of the region's area (at least 2
    px): a scale of the region's own width. On a straight stretch of outline the share is about
    a half; where the region bulges into a neighbour it is less, where a neighbour bulges into
    it, more. Pixels of no region get 0.
    """
    out = np.zeros(labels.shape, dtype=np.float32)
    height, width = labels.shape
    for k in range(count):
        rows, cols = np.nonzero(labels == k)
        if rows.size == 0:
            continue
        radius = max(2, round(radius_fraction * float(np.sqrt(rows.size))))
        y0, y1 = max(0, rows.min() - radius), min(height, rows.max() + radius + 1)
        x0, x1 = max(0, cols.min() - radius), min(width, cols.max() + radius + 1)
        inside = (labels[y0:y1, x0:x1] == k).astype(np.float32)
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        disc = disc.astype(np.float32) / float(disc.sum())
        filled = cv2.filter2D(inside, -1, disc, borderType=cv2.BORDER_CONSTANT)
        view = out[y0:y1, x0:x1]
        view[inside > 0] = filled[inside > 0]
    return out


def end_zones(
    labels: npt.NDArray[np.int32], count: int, min_elongation: float, end_fraction: float
) -> npt.NDArray[np.bool_]:
    """Return (H, W) bool: the pixels whose boundary can attach their region to another.

    An elongated region (standard deviation along its major axis at least `min_elongation`
    times the minor one: a limb, a stem) attaches at its ends only, the outer `end_fraction` of
    its half-length on either side of its centre; every pixel of any other region counts.
    """
    out = labels >= 0
    if min_elongation <= 0:
        return out
    for k in range(count):
        rows, cols = np.nonzero(labels == k)
        if rows.size < 10:
            continue
        points = np.stack([rows, cols], axis=1).astype(np.float64)
        points -= points.mean(axis=0)
        values, vectors = np.linalg.eigh(points.T @ points / rows.size)
        if values[0] <= 0 or values[1] < min_elongation**2 * values[0]:
            continue
        along = points @ vectors[:, 1]
        reach = float(np.abs(along).max())
        middle = np.abs(along) < (1.0 - end_fraction) * reach
        out[rows[middle], cols[middle]] = False
    return out


def attachment(
    labels: npt.NDArray[np.int32],
    count: int,
    fill: npt.NDArray[np.float32],
    margin: float,
    ends: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """Return (count, count): [p, q] = neighbour pixel pairs of p and q where p does not bulge.

    A pair counts for p unless the disc share `fill` (`own_fill`) at p's pixel is lower than at
    q's by more than `margin`: then the boundary is p's own convex outline lying on q (an
    occluder's outline says nothing about which object it belongs to); a straight boundary,
    or q bulging into p, counts. With `ends` ((H, W) bool, `end_zones`), a pair counts for p
    only at p's pixels marked there.
    """
    out = np.zeros((count, count), dtype=np.int64)
    for dy, dx in _OFFSETS:
        a = labels[: labels.shape[0] - dy, : labels.shape[1] - dx]
        b = labels[dy:, dx:]
        fa = fill[: labels.shape[0] - dy, : labels.shape[1] - dx]
        fb = fill[dy:, dx:]
        pair = (a >= 0) & (b >= 0) & (a != b)
        first = pair & (fa >= fb - margin)
        second = pair & (fb >= fa - margin)
        if ends is not None:
            first &= ends[: labels.shape[0] - dy, : labels.shape[1] - dx]
            second &= ends[dy:, dx:]
        np.add.at(out, (a[first], b[first]), 1)
        np.add.at(out, (b[second], a[second]), 1)
    return out


def regroup_leaves(
    leaves: Sequence[npt.NDArray[np.bool_]],
    parts: Sequence[npt.NDArray[np.bool_]],
    *,
    min_gain: float,
    min_keep: float,
    radius_fraction: float,
    bulge_margin: float,
    max_rounds: int = 4,
    min_elongation: float = 0.0,
    end_fraction: float = 0.3,
    group_moves: bool = False,
    ties: TieRules | None = None,
) -> list[Move]:
    """Return the moves of whole parts between split leaves to the leaf most attached to.

    Args:
        leaves: k >= 2 (H, W) bool leaf pieces (snapped), pairwise nearly disjoint.
        parts: (H, W) bool conquer parts in the same frame.
        min_gain: A region moves when its boundary with another leaf exceeds this times its
            boundary with its own leaf.
        min_keep: Least share of its own area a leaf keeps.
        radius_fraction: Disc radius of the bulge test (`own_fill`), x sqrt(region area).
        bulge_margin: Margin of the bulge test (`attachment`).
        max_rounds: Passes over the regions.
        min_elongation: Regions at least this elongated attach at their ends only
            (`end_zones`; 0: every region along its whole outline).
        end_fraction: The ends' share of the half-length (`end_zones`).
        group_moves: After single regions, move groups of touching regions of a leaf that
            together are more attached to another leaf (`attached_group`).
        ties: Last, move regions about as attached to another leaf where their shape says so
            (`regroup_ties.tie_moves`); None: no tie moves.

    Returns:
        The moves in order: (region (H, W) bool, leaf it left, leaf it joined).
    """
    moves: list[Move] = []
    if len(leaves) < 2 or not parts:
        return moves
    out = [leaf.copy() for leaf in leaves]
    min_area = [min_keep * np.count_nonzero(leaf) for leaf in leaves]
    labels = finest_labels(parts, (leaves[0].shape[0], leaves[0].shape[1]))
    regions = [labels == k for k in range(len(parts))]
    owner = np.full(len(parts), -1, dtype=np.int64)
    for k, region in enumerate(regions):
        overlaps = [np.count_nonzero(region & leaf) for leaf in out]
        best = int(np.argmax(overlaps))
        if overlaps[best] > 0.5 * np.count_nonzero(region):
            owner[k] = best
    fill = own_fill(labels, len(parts), radius_fraction)
    ends = end_zones(labels, len(parts), min_elongation, end_fraction)
    shared = attachment(labels, len(parts), fill, bulge_margin, ends).astype(np.float64)
    state = Assignment(out, regions, owner, shared, min_area)
    moves = _single_moves(state, min_gain, max_rounds)
    if group_moves:
        moves += _group_moves(state, min_gain, max_rounds)
    if ties is not None:
        moves += tie_moves(state, ties, max_rounds)
    return moves


def _single_moves(state: Assignment, min_gain: float, max_rounds: int) -> list[Move]:
    """Move single regions to the leaf they are most attached to (updates `state`)."""
    out, regions, owner, _, min_area = state
    moves: list[Move] = []
    for _ in range(max_rounds):
        moved = False
        for k in np.argsort([np.count_nonzero(r) for r in regions]):
            if owner[k] < 0:
                continue
            per_leaf = state.attachment_per_leaf(int(k))
            target = int(np.argmax(per_leaf))
            current = int(owner[k])
            if target == current or per_leaf[target] <= min_gain * per_leaf[current]:
                continue
            remaining = out[current] & ~regions[k]
            if np.count_nonzero(remaining) < min_area[current] or not connected(remaining):
                continue
            logger.debug(
                "region %d (%d px) moves from leaf %d to %d: boundary %s",
                k,
                np.count_nonzero(regions[k]),
                current,
                target,
                per_leaf.tolist(),
            )
            moves += move_regions(state, [int(k)], target, remaining)
            moved = True
        if not moved:
            break
    return moves


def _group_moves(state: Assignment, min_gain: float, max_rounds: int) -> list[Move]:
    """Move groups of touching regions that together belong to another leaf (updates `state`).

    A group moves when its boundary with the other leaf exceeds `min_gain` times its boundary
    with the rest of its own (`attached_group`), counting a boundary from both sides: a
    straight one twice, an occluder's convex outline once, for the dented side. Parts that the
    split put together on the wrong side hold on to each other, so no single one of them moves.
    """
    out, regions, owner, shared, min_area = state
    moves: list[Move] = []
    sizes = np.array([np.count_nonzero(r) for r in regions], dtype=np.float64)
    both = shared + shared.T  # a boundary counts from each side that counts it
    for _ in range(max_rounds):
        moved = False
        for current in range(len(out)):
            for target in range(len(out)):
                members = np.flatnonzero(owner == current)
                if target == current or members.size < 2:
                    continue
                others = np.flatnonzero(owner == target)
                toward = both[np.ix_(members, others)].sum(axis=1)
                spare = np.count_nonzero(out[current]) - min_area[current]
                group, ratio = attached_group(
                    both[np.ix_(members, members)], toward, sizes[members], spare
                )
                if group.size < 2 or ratio <= min_gain:
                    continue
                chosen = np.zeros(out[current].shape, dtype=bool)
                for k in members[group]:
                    chosen |= regions[k]
                remaining = out[current] & ~chosen
                if not connected(remaining):
                    continue
                logger.debug(
                    "regions %s move from leaf %d to %d (%.2f)",
                    members[group].tolist(),
                    current,
                    target,
                    ratio,
                )
                moves += move_regions(state, members[group].tolist(), target, remaining)
                moved = True
        if not moved:
            break
    return moves


def attached_group(
    inner: npt.NDArray[np.float64],
    toward: npt.NDArray[np.float64],
    sizes: npt.NDArray[np.float64],
    max_area: float,
) -> tuple[npt.NDArray[np.int64], float]:
    """Return (indices, ratio): the touching regions most attached elsewhere, as a group.

    Args:
        inner: (n, n) attachment among a leaf's regions ([p, q]: counted for p).
        toward: (n,) attachment of each region to another leaf.
        sizes: (n,) region areas in pixels.
        max_area: Largest area the group may take from the leaf.

    The group is grown greedily from every region attached to the other leaf, adding the
    touching region that keeps ``attachment to the other leaf / attachment to the rest of the
    leaf`` highest, up to `max_area`; the best group seen is returned (ratio 0: none).
    """
    best: tuple[npt.NDArray[np.int64], float] = (np.zeros(0, dtype=np.int64), 0.0)
    touching = (inner + inner.T) > 0
    for seed in np.flatnonzero(toward > 0):
        inside = np.zeros(toward.size, dtype=bool)
        inside[seed] = True
        while True:
            if sizes[inside].sum() > max_area:
                break
            outside = inner[inside][:, ~inside].sum()
            ratio = toward[inside].sum() / outside if outside > 0 else float("inf")
            if inside.sum() >= 2 and ratio > best[1]:
                best = (np.flatnonzero(inside), ratio)
            grow = touching[inside].any(axis=0) & ~inside
            if not grow.any():
                break
            # the group's outside attachment once j joins: without the group's links to j, plus
            # j's own links to the regions still outside
            left = ~inside
            outside_with = (
                outside
                - inner[inside].sum(axis=0)
                + (inner * left[None, :]).sum(axis=1)
                - np.diag(inner) * left
            )
            score = np.where(
                grow, (toward[inside].sum() + toward) / np.maximum(outside_with, 1e-9), -np.inf
            )
            inside[int(np.argmax(score))] = True
    return best


def apply_moves(
    pieces: Sequence[npt.NDArray[np.bool_]],
    leaves: Sequence[npt.NDArray[np.bool_]],
    moves: Sequence[Move],
    *,
    containment: float,
) -> list[npt.NDArray[np.bool_]]:
    """Return every piece of the split tree after the moves between the leaves it holds.

    A piece holds a leaf when more than `containment` of the leaf lies inside it; a region
    leaving one of its leaves for a leaf it does not hold leaves the piece, and the other way
    round. Pieces no move concerns are returned as they are.
    """
    out = []
    leaf_areas = [np.count_nonzero(leaf) for leaf in leaves]
    for piece in pieces:
        held = {
            k
            for k, (leaf, area) in enumerate(zip(leaves, leaf_areas, strict=True))
            if area > 0 and np.count_nonzero(leaf & piece) > containment * area
        }
        new = piece
        for region, source, target in moves:
            if source in held and target not in held:
                new = new & ~region
            elif target in held and source not in held:
                new = new | region
        out.append(new)
    return out

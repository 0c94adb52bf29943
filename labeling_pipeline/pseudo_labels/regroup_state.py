"""The assignment of conquer regions to split leaves while `regroup` moves them.

Every pass of `regroup` (single regions, groups, shape ties) reads and changes one
`Assignment`; moving a region updates the leaves and the region's owner together and records
the move, so the passes stay consistent with each other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Move = tuple[npt.NDArray[np.bool_], int, int]  # (region (H, W) bool, from leaf, to leaf)


class Assignment(NamedTuple):
    """Regions and their leaves while moves are made (`leaves` and `owner` change in place)."""

    leaves: list[npt.NDArray[np.bool_]]  # (H, W) bool, the current leaves
    regions: list[npt.NDArray[np.bool_]]  # (H, W) bool, each pixel's finest part
    owner: npt.NDArray[np.int64]  # (regions,) leaf index, -1: none
    shared: npt.NDArray[np.float64]  # (regions, regions) `regroup.attachment`
    min_area: list[float]  # least area each leaf keeps

    def attachment_per_leaf(self, region: int) -> npt.NDArray[np.float64]:
        """Return (leaves,) float64: the region's attachment to the regions of each leaf."""
        per_leaf = np.zeros(len(self.leaves))
        known = self.owner >= 0
        np.add.at(per_leaf, self.owner[known], self.shared[region, known])
        return per_leaf


def connected(mask: npt.NDArray[np.bool_]) -> bool:
    """Return whether the (H, W) bool mask is one 8-connected piece (or empty)."""
    _, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return int(count) <= 1


def move_regions(
    state: Assignment, members: list[int], target: int, remaining: npt.NDArray[np.bool_]
) -> list[Move]:
    """Move regions of one leaf to leaf `target`; the leaf keeps `remaining` ((H, W) bool).

    Pixels of the leaf outside `remaining` that belong to no member (a piece the members' leaving
    cut off) join `target` too, and are returned as a move of their own.
    """
    current = int(state.owner[members[0]])
    leaving = state.leaves[current] & ~remaining
    state.leaves[current] = remaining
    moves: list[Move] = []
    for k in members:
        state.leaves[target] = state.leaves[target] | state.regions[k]
        state.owner[k] = target
        moves.append((state.regions[k], current, target))
        leaving &= ~state.regions[k]
    if leaving.any():
        state.leaves[target] = state.leaves[target] | leaving
        moves.append((leaving, current, target))
    return moves

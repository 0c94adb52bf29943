"""Conquer: iterative merging of adjacent patches into ever coarser regions (UnSAM's conquer).

Every patch starts as its own cluster; clusters are 4-connected neighbours on the grid. The
similarity of two clusters is the cosine of their mean features, where a cluster's feature is
the sum of its members' L2-normalised features (so the direction of the normalised mean). For
each threshold theta, from the highest (0.9) to the lowest (0.5), the most similar adjacent pair
is merged repeatedly while its similarity is >= theta, continuing from the clusters the
previous level left. After each level every cluster with at least `min_patches` patches and at
least one neighbour (so not the whole grid) is recorded, once.

Efficiency: a binary heap of candidate pairs with lazy invalidation (each cluster has a version
stamp; an entry is stale when one of its clusters was merged away or has changed since the
entry was pushed) and a union-find forest. Each merge pushes one entry per neighbour of the new
cluster, so the whole run costs O(E log E) heap work plus one (deg x C) product per merge,
instead of a global scan per merge; a 48 x 48 grid of 768-d features takes well under a second.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_THRESHOLDS = (0.9, 0.8, 0.7, 0.6, 0.5)


@dataclass(frozen=True)
class MergeRegion:
    """A recorded cluster: `mask` (h, w) bool on the patch grid, first seen at `threshold`."""

    mask: npt.NDArray[np.bool_]
    threshold: float
    num_patches: int


@dataclass(frozen=True)
class MergeResult:
    """Output of `merge_patches`.

    Attributes:
        labels: One (h, w) int32 map per threshold: the cluster id (a patch index) of every
            patch after that level.
        regions: The recorded clusters, level by level, each cluster once.
        merges: Every merge in order as (cluster a, cluster b, similarity); cluster ids are the
            union-find roots (patch indices, row-major) before the merge.
    """

    labels: tuple[npt.NDArray[np.int32], ...]
    regions: tuple[MergeRegion, ...]
    merges: tuple[tuple[int, int, float], ...]


def _grid_edges(height: int, width: int) -> npt.NDArray[np.int64]:
    """Return (E, 2) index pairs (a < b) of 4-connected neighbours on an (h, w) grid."""
    index = np.arange(height * width).reshape(height, width)
    right = np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], axis=1)
    down = np.stack([index[:-1, :].ravel(), index[1:, :].ravel()], axis=1)
    return np.concatenate([right, down]).astype(np.int64)


def _roots(parent: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Return every node's root by pointer jumping (vectorised find)."""
    labels = parent.copy()
    while True:
        jumped = parent[labels]
        if np.array_equal(jumped, labels):
            return labels
        labels = jumped


class _Clusters:
    """Union-find forest with feature sums, adjacency sets and a lazily invalidated heap.

    The per-merge bookkeeping (parents, sizes, stamps) lives in Python lists: the heap loop
    reads them once per popped entry, and indexing a NumPy array from Python costs several
    times more than indexing a list.
    """

    def __init__(self, features: npt.NDArray[np.float64], height: int, width: int):
        n = features.shape[0]
        self.sums = features.copy()
        self.norms = np.linalg.norm(self.sums, axis=1)  # kept up to date for merged clusters
        self.size = [1] * n
        self.parent = list(range(n))
        self.stamp = [0] * n
        self.neighbours: list[set[int]] = [set() for _ in range(n)]
        edges = _grid_edges(height, width)
        for a, b in edges.tolist():
            self.neighbours[a].add(b)
            self.neighbours[b].add(a)
        similarity = np.einsum("ij,ij->i", features[edges[:, 0]], features[edges[:, 1]])
        self.heap: list[tuple[float, int, int, int, int]] = [
            (-s, a, b, 0, 0) for (a, b), s in zip(edges.tolist(), similarity.tolist(), strict=True)
        ]
        heapq.heapify(self.heap)

    def merge_down_to(self, threshold: float, merges: list[tuple[int, int, float]]) -> None:
        """Merge the most similar adjacent pair while its similarity is >= threshold."""
        heap, parent, stamp = self.heap, self.parent, self.stamp
        while heap and -heap[0][0] >= threshold:
            value, a, b, stamp_a, stamp_b = heapq.heappop(heap)
            # stale: a cluster was merged away or has changed since the entry was pushed
            if parent[a] == a and parent[b] == b and stamp[a] == stamp_a and stamp[b] == stamp_b:
                merges.append((a, b, -value))
                self._merge(a, b)

    def _merge(self, a: int, b: int) -> None:
        keep, gone = (a, b) if self.size[a] >= self.size[b] else (b, a)
        self.parent[gone] = keep
        self.size[keep] += self.size[gone]
        self.sums[keep] += self.sums[gone]
        self.norms[keep] = float(np.sqrt(self.sums[keep] @ self.sums[keep]))
        for other in self.neighbours[gone]:
            if other != keep:
                self.neighbours[other].discard(gone)
                self.neighbours[other].add(keep)
        merged = (self.neighbours[keep] | self.neighbours[gone]) - {keep, gone}
        self.neighbours[keep] = merged
        self.neighbours[gone] = set()
        self.stamp[keep] += 1
        if not merged:
            return
        others = np.fromiter(merged, dtype=np.int64, count=len(merged))
        similarity = (
            self.sums[others]
            @ self.sums[keep]
            / np.maximum(self.norms[others] * self.norms[keep], 1e-12)
        )
        stamp, heap = self.stamp, self.heap
        for other, value in zip(others.tolist(), similarity.tolist(), strict=True):
            lo, hi = (keep, other) if keep < other else (other, keep)
            heapq.heappush(heap, (-value, lo, hi, stamp[lo], stamp[hi]))


def merge_patches(
    features: npt.NDArray[np.floating],
    *,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    min_patches: int = 4,
) -> MergeResult:
    """Merge adjacent patches level by level and record the clusters (see the module docstring).

    Args:
        features: (h, w, C) patch features (any scale; each patch is L2-normalised first).
        thresholds: Cosine-similarity levels, applied in the given order (normally decreasing).
        min_patches: Smallest cluster recorded.

    Returns:
        Label maps per level, recorded regions and the merge sequence.
    """
    if features.ndim != 3 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"features must be (h, w, C), got shape {features.shape}")
    height, width = features.shape[:2]
    flat = features.reshape(height * width, -1).astype(np.float64)
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    clusters = _Clusters(flat, height, width)
    merges: list[tuple[int, int, float]] = []
    labels: list[npt.NDArray[np.int32]] = []
    regions: list[MergeRegion] = []
    seen: set[tuple[int, int]] = set()
    for threshold in thresholds:
        clusters.merge_down_to(threshold, merges)
        roots = _roots(np.asarray(clusters.parent, dtype=np.int64))
        labels.append(roots.reshape(height, width).astype(np.int32))
        for root in np.unique(roots).tolist():
            size = clusters.size[root]
            key = (root, size)  # clusters only grow, so (root, size) identifies a member set
            if size < min_patches or not clusters.neighbours[root] or key in seen:
                continue
            seen.add(key)
            regions.append(MergeRegion((roots == root).reshape(height, width), threshold, size))
    return MergeResult(tuple(labels), tuple(regions), tuple(merges))

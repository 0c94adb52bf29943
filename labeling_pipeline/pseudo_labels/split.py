"""Split a divide proposal that holds several touching or overlapping objects (Shi-Malik N-cut).

The divide's global cut separates "object" from "background"; objects that touch or overlap
come out as one connected proposal. Each such proposal is bipartitioned again on a **local**
patch graph: only 8-connected neighbour patches inside it are linked, with weight
``exp(-(1 - cos) / sigma)`` of their features. On a local graph the normalised cut is small
where the boundary between two sides is short relative to their size (a neck, a junction
between two silhouettes) or crosses weak links (a change of appearance), so the cut falls
between objects rather than through one. The split point is the threshold of the N-cut vector
(among `SPLIT_CANDIDATES` quantiles) with the lowest normalised cut whose cut links are weak on
average (below `max_cut_weight`: the cut follows a change of appearance; on a local graph even
a uniform region has a small normalised cut, by its shape alone) and that leaves at least two
connected pieces of `min_patches` patches (smaller components are left to the parent only); a
split is kept only when that value is below `max_ncut`. A cut across strong links is a **neck**
when its normalised cut is at most `neck_ncut`: two large sides joined by a contact a few
patches wide are two bodies even where they look alike (an arm touching a wall of the same
colour); a neck is taken instead of the best seam only when it is clearly narrower
(`choose_cut`). Pieces are split again, down to `max_depth`, so the output is a small tree of
proposals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage, sparse
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

SPLIT_CANDIDATES = 15
_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _local_graph(
    features: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], sigma: float
) -> tuple[sparse.csr_matrix, npt.NDArray[np.int64]]:
    """Return the (n, n) sparse affinity of the mask's patches and their flat grid indices."""
    h, w = mask.shape
    index = -np.ones((h, w), dtype=np.int64)
    flat = np.flatnonzero(mask)
    index.reshape(-1)[flat] = np.arange(flat.size)
    rows, cols = [], []
    for dy, dx in _OFFSETS:
        a = index[0 : h - dy, max(0, -dx) : w - max(0, dx)]
        b = index[dy:h, max(0, dx) : w - max(0, -dx)]
        both = (a >= 0) & (b >= 0)
        rows.append(a[both])
        cols.append(b[both])
    r, c = np.concatenate(rows), np.concatenate(cols)
    units = features.reshape(h * w, -1)[flat]
    cos = np.einsum("ij,ij->i", units[r], units[c])
    weight = np.exp(-(1.0 - cos) / sigma)
    graph = sparse.coo_matrix(
        (np.concatenate([weight, weight]), (np.concatenate([r, c]), np.concatenate([c, r]))),
        shape=(flat.size, flat.size),
    ).tocsr()
    return graph, flat


def _bipartitions(
    graph: sparse.csr_matrix,
) -> list[tuple[float, float, npt.NDArray[np.bool_]]]:
    """Return (normalised cut, mean weight of the cut links, side (n,) bool), best cut first."""
    degree = np.asarray(graph.sum(axis=1)).ravel()
    if degree.size < 4 or (degree <= 0).any():
        return []
    inv_sqrt = sparse.diags(1.0 / np.sqrt(degree))
    normalised = inv_sqrt @ graph @ inv_sqrt
    start = np.random.default_rng(0).uniform(0.5, 1.5, size=degree.size)
    try:
        values, vectors = eigsh(normalised, k=2, which="LA", v0=start, tol=1e-4, maxiter=2000)
    except ArpackNoConvergence as exc:  # pragma: no cover - rare
        values, vectors = exc.eigenvalues, exc.eigenvectors
        if vectors is None or vectors.shape[1] < 2:
            return []
    vector = vectors[:, int(np.argsort(values)[0])] / np.sqrt(degree)
    volume = float(degree.sum())
    found = []
    for q in np.linspace(0.05, 0.95, SPLIT_CANDIDATES):
        side = vector > np.quantile(vector, q)
        vol_a = float(degree[side].sum())
        if vol_a <= 0 or vol_a >= volume:
            continue
        crossing = graph[side][:, ~side]
        cut = float(crossing.sum())
        mean_weight = cut / max(crossing.nnz, 1)
        found.append((cut / vol_a + cut / (volume - vol_a), mean_weight, side))
    found.sort(key=lambda entry: entry[0])
    return found


def _connected_sides(
    side: npt.NDArray[np.bool_], mask: npt.NDArray[np.bool_], min_patches: int
) -> list[npt.NDArray[np.bool_]]:
    """Return the pieces of a split as connected components of at least `min_patches`.

    Smaller components (a stray patch, a thin limb cut off) go back to the other side, so a
    piece is one connected region, as a visible object is.
    """
    pieces = []
    for chosen in (side, mask & ~side):
        labels, count = ndimage.label(chosen, structure=np.ones((3, 3)))
        for label in range(1, count + 1):
            component = labels == label
            if int(component.sum()) >= min_patches:
                pieces.append(component)
    if len(pieces) < 2:
        return []
    return pieces


@dataclass(frozen=True)
class SplitRules:
    """When a proposal is split (module docstring; the values come from `PseudoLabelConfig`).

    Attributes:
        sigma: Affinity scale of ``1 - cos`` between neighbour patches.
        max_ncut: Keep a split only when its normalised cut is below this.
        max_cut_weight: ... and the mean weight of the links it cuts is below this (a seam) ...
        min_patches: ... leaving at least two connected pieces of this many patches.
        neck_ncut: A cut across strong links is still kept when its normalised cut is at most
            this (a narrow neck between two large sides; 0: never) ...
        neck_preference: ... and below this times the normalised cut of the best seam, which
            wins otherwise.
    """

    sigma: float
    max_ncut: float
    max_cut_weight: float
    min_patches: int
    neck_ncut: float = 0.0
    neck_preference: float = 0.5


def choose_cut(
    cuts: list[tuple[float, float, npt.NDArray[np.bool_]]],
    flat: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],
    rules: SplitRules,
) -> list[npt.NDArray[np.bool_]]:
    """Return the pieces of the chosen cut of `_bipartitions` (best first), [] for none.

    A seam (cut links weak on average) is taken unless a neck (a cut at most `neck_ncut`,
    whatever its links) is clearly narrower: below `neck_preference` x the seam's value.
    `flat` holds the grid indices of the mask's patches, in the order of the cuts' sides.
    """
    neck: tuple[float, list[npt.NDArray[np.bool_]]] | None = None
    for value, mean_weight, chosen in cuts:
        if value >= rules.max_ncut or (
            neck is not None and rules.neck_preference * value > neck[0]
        ):
            break
        seam = mean_weight < rules.max_cut_weight
        if not seam and (neck is not None or value > rules.neck_ncut):
            continue
        side = np.zeros(mask.size, dtype=bool)
        side[flat[chosen]] = True
        pieces = _connected_sides(side.reshape(mask.shape), mask, rules.min_patches)
        if not pieces:
            continue
        if seam:
            return pieces
        neck = (value, pieces)
    return neck[1] if neck is not None else []


def split_proposal(
    features: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    rules: SplitRules,
    max_depth: int,
) -> list[npt.NDArray[np.bool_]]:
    """Return the tree of sub-proposals of a patch-grid proposal (see the module docstring).

    Args:
        features: (h, w, C) float32 unit-norm patch features.
        mask: (h, w) bool proposal on the patch grid.
        rules: When a split is kept.
        max_depth: Levels of splitting.

    Returns:
        (h, w) bool masks of every side of every kept split (not the input mask itself).
    """
    if max_depth <= 0 or int(mask.sum()) < 2 * rules.min_patches:
        return []
    graph, flat = _local_graph(features, mask, rules.sigma)
    out = choose_cut(_bipartitions(graph), flat, mask, rules)
    if not out:
        return []
    deeper = []
    for piece in out:
        deeper.extend(split_proposal(features, piece, rules, max_depth - 1))
    return out + deeper


def join_adjacent_pieces(
    pieces: list[npt.NDArray[np.bool_]],
    mask: npt.NDArray[np.bool_],
    *,
    max_overlap: float,
) -> list[npt.NDArray[np.bool_]]:
    """Return unions of two touching leaves of a split tree: objects the tree cut apart.

    A two-level split of three overlapping objects can cut one of them between the levels
    (first A1 | A2 + B, then A2 | B): no piece is A, but A is the union of two touching leaves
    (pieces holding no other piece). Each such union is a whole hypothesis; the conquer parts
    decide its boundary later (snapping), and relations keep it as a part of the proposal.

    Args:
        pieces: (h, w) bool pieces of `split_proposal`, on the patch grid.
        mask: (h, w) bool proposal they came from.
        max_overlap: A union whose IoU with the proposal or with a piece is above this is
            dropped: it repeats an existing hypothesis.

    Returns:
        (h, w) bool unions, each of two 8-connected leaves.
    """
    leaves = [p for p in pieces if not any(q is not p and (q & ~p).sum() == 0 for q in pieces)]
    known = [mask, *pieces]
    out: list[npt.NDArray[np.bool_]] = []
    for i, a in enumerate(leaves):
        grown = ndimage.binary_dilation(a, structure=np.ones((3, 3), dtype=bool))
        for b in leaves[i + 1 :]:
            if not (grown & b).any():
                continue
            union = a | b
            if all(_iou(union, k) <= max_overlap for k in known + out):
                out.append(union)
    return out


def _iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0

"""Divide: instance discovery by repeated normalised cuts on patch affinities (MaskCut-style).

Each iteration works on the patches not yet assigned to an object:

1. Affinity ``W_ij = 1`` where the cosine similarity of the patch features exceeds `tau`,
   else `eps` (MaskCut's thresholded graph; `eps` keeps it connected).
2. The second-smallest generalised eigenvector of ``(D - W) x = lambda D x`` (D the degree
   matrix), computed as ``D^-1/2 y`` from the second-largest eigenvector ``y`` of
   ``D^-1/2 W D^-1/2`` (dense `eigh` on small graphs, ARPACK `eigsh` with a fixed start vector
   otherwise).
3. Bipartition at the mean of ``x``. The foreground is the side holding the entry of largest
   magnitude (the most salient patch), flipped if it covers more than `border_flip_fraction`
   of the remaining patches on the grid's outer ring (objects rarely fill the image border).
4. Every 4-connected component of the foreground with at least `min_patches` patches becomes a
   proposal (MaskCut keeps only the seed's component; keeping all of them finds several objects
   that one cut separates from the background together). The whole foreground side is then
   masked out and the next iteration cuts what is left. Iterations stop when the cut's
   normalised-cut value exceeds `max_ncut` (what remains has no structure to cut).

Score of a proposal: mean cosine similarity inside it minus mean similarity between it and the
other remaining patches, clipped to [0, 1] (a contrast in feature space, used to filter out cuts
of uniform background).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import linalg, ndimage
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from labeling_pipeline.pseudo_labels.features import PatchFeatures

logger = logging.getLogger(__name__)

_DENSE_LIMIT = 600  # graphs up to this many nodes use a dense eigensolver


@dataclass(frozen=True)
class NCutConfig:
    """Parameters of the divide stage (defaults follow MaskCut where it has one).

    Attributes:
        tau: Cosine-similarity threshold of the binary affinity (MaskCut: 0.2 for DINO).
        eps: Affinity of pairs below `tau`.
        max_iterations: Cuts per image (each masks out what it found).
        max_objects: Stop after this many proposals.
        min_patches: Smallest proposal, in patches.
        min_score: Proposals scoring at most this are dropped.
        max_area_fraction: Proposals covering more of the grid than this are dropped.
        border_flip_fraction: Flip the foreground if it covers more of the outer ring than this.
        max_ncut: Stop when the cut's normalised-cut value exceeds this: what is left has no
            structure (a uniform region gives about 1; an object against background much less).
    """

    tau: float = 0.2
    eps: float = 1e-5
    max_iterations: int = 3
    max_objects: int = 20
    min_patches: int = 4
    min_score: float = 0.25
    max_area_fraction: float = 0.9
    border_flip_fraction: float = 0.5
    max_ncut: float = 0.9


@dataclass(frozen=True)
class PatchProposal:
    """A discovered object on the patch grid: `mask` (h, w) bool, `score` in [0, 1]."""

    mask: npt.NDArray[np.bool_]
    score: float
    iteration: int


def affinity_matrix(
    features: npt.NDArray[np.float32], *, tau: float, eps: float
) -> npt.NDArray[np.float64]:
    """Return the (n, n) binary affinity (1 where cosine > tau, else eps) of unit-norm features."""
    return np.where(features @ features.T > tau, 1.0, eps)


def ncut_value(weights: npt.NDArray[np.float64], side: npt.NDArray[np.bool_]) -> float:
    """Return cut(A, B) / vol(A) + cut(A, B) / vol(B) of the bipartition `side` (n,) bool."""
    if side.all() or not side.any():
        return 1.0
    cut = float(weights[side][:, ~side].sum())
    return cut / float(weights[side].sum()) + cut / float(weights[~side].sum())


def second_eigenvector(weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return the N-cut vector x (n,) of (D - W) x = lambda D x for an (n, n) affinity W."""
    degree = weights.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(degree)
    normalised = weights * inv_sqrt[:, None] * inv_sqrt[None, :]
    n = normalised.shape[0]
    if n <= _DENSE_LIMIT:
        _, vectors = linalg.eigh(normalised, subset_by_index=[n - 2, n - 1])
        y = vectors[:, 0]
    else:
        start = np.random.default_rng(0).uniform(0.5, 1.5, size=n)
        try:  # float32 halves the memory traffic of each matrix-vector product
            values, vectors = eigsh(
                normalised.astype(np.float32),
                k=2,
                which="LA",
                v0=start.astype(np.float32),
                tol=1e-5,
            )
        except ArpackNoConvergence as exc:  # pragma: no cover - rare
            values, vectors = exc.eigenvalues, exc.eigenvectors
        y = vectors[:, int(np.argsort(values)[0])]
    return np.asarray(y * inv_sqrt, dtype=np.float64)


def _ring(grid_hw: tuple[int, int]) -> npt.NDArray[np.bool_]:
    ring = np.zeros(grid_hw, dtype=bool)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    return ring.reshape(-1)


def _foreground(
    vector: npt.NDArray[np.float64], active_ring: npt.NDArray[np.bool_], flip_fraction: float
) -> npt.NDArray[np.bool_]:
    """Return the foreground side (n,) bool of the bipartition of the active patches."""
    side: npt.NDArray[np.bool_] = vector > vector.mean()
    seed = int(np.argmax(np.abs(vector)))
    if not side[seed]:
        side = ~side
    if active_ring.any() and side[active_ring].mean() > flip_fraction:
        side = ~side
    return side


def _score(
    features: npt.NDArray[np.float32], inside: npt.NDArray[np.bool_], rest: npt.NDArray[np.bool_]
) -> float:
    """Return mean within-similarity minus mean cross-similarity, clipped to [0, 1]."""
    members = features[inside]
    count = members.shape[0]
    total = members.sum(axis=0)
    within = (float(total @ total) - count) / max(count * (count - 1), 1)
    if not rest.any():
        return float(np.clip(within, 0.0, 1.0))
    cross = float(total @ features[rest].sum(axis=0)) / (count * int(rest.sum()))
    return float(np.clip(within - cross, 0.0, 1.0))


def discover_instances(
    patch_features: PatchFeatures, config: NCutConfig | None = None
) -> list[PatchProposal]:
    """Find object proposals on the patch grid by repeated normalised cuts.

    Args:
        patch_features: Features of the whole image.
        config: Thresholds; defaults to `NCutConfig()`.

    Returns:
        Proposals in discovery order, masks (h, w) bool on the patch grid; disjoint.
    """
    config = config or NCutConfig()
    grid_hw = patch_features.grid_hw
    features = patch_features.normalised()
    total = features.shape[0]
    ring = _ring(grid_hw)
    active = np.ones(total, dtype=bool)
    proposals: list[PatchProposal] = []
    for iteration in range(config.max_iterations):
        index = np.flatnonzero(active)
        if index.size < 2 * config.min_patches or len(proposals) >= config.max_objects:
            break
        weights = affinity_matrix(features[index], tau=config.tau, eps=config.eps)
        side = _foreground(second_eigenvector(weights), ring[index], config.border_flip_fraction)
        value = ncut_value(weights, side)
        if value > config.max_ncut:
            logger.debug(
                "n-cut iteration %d: cut value %.3f, nothing left to cut", iteration, value
            )
            break
        foreground = np.zeros(total, dtype=bool)
        foreground[index[side]] = True
        labels, count = ndimage.label(foreground.reshape(grid_hw))
        labels = labels.reshape(-1)
        for label in range(1, count + 1):
            inside = labels == label
            size = int(inside.sum())
            if size < config.min_patches or size > config.max_area_fraction * total:
                continue
            score = _score(features, inside, active & ~inside)
            if score > config.min_score and len(proposals) < config.max_objects:
                proposals.append(PatchProposal(inside.reshape(grid_hw), score, iteration))
        active &= ~foreground
        logger.debug("n-cut iteration %d: %d proposals so far", iteration, len(proposals))
    return proposals

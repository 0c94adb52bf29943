"""Exact pairwise mask statistics and the protected mask NMS of the pseudo-label pipeline.

Masks are (N, H, W) bool arrays (or N equal (H, W) arrays) in one frame. Overlaps are exact
pixel counts (a sparse matrix product over the masks' pixels), not box approximations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse


def _pixel_indices(
    masks: Sequence[npt.NDArray[np.bool_]] | npt.NDArray[np.bool_],
) -> tuple[list[npt.NDArray[np.intp]], int]:
    """Return each mask's flat foreground indices and the pixels per mask (all same shape)."""
    shapes = {np.shape(m) for m in masks}
    if len(shapes) > 1 or any(len(shape) != 2 for shape in shapes):
        raise ValueError(f"masks must be (N, H, W) or equal (H, W) arrays, got {sorted(shapes)}")
    size = int(np.prod(next(iter(shapes)))) if shapes else 0
    return [np.flatnonzero(np.asarray(m, dtype=bool)) for m in masks], size


def pairwise_intersections(
    masks: Sequence[npt.NDArray[np.bool_]] | npt.NDArray[np.bool_],
) -> npt.NDArray[np.int64]:
    """Return the (N, N) int64 matrix of pixel counts |m_i & m_j| (diagonal = areas)."""
    indices, size = _pixel_indices(masks)
    if not indices:
        return np.zeros((0, 0), dtype=np.int64)
    # a sparse product costs the sum over pixels of (masks covering it)^2: parts are small and
    # few overlap, so this is ~100x cheaper than a dense (N, P) @ (P, N) product; the masks
    # are read one by one (no (N, H, W) stack is built)
    which = np.repeat(np.arange(len(indices)), [i.size for i in indices])
    flat = sparse.csr_matrix(
        (np.ones(which.size, dtype=np.int64), (which, np.concatenate(indices))),
        shape=(len(indices), size),
    )
    counts: npt.NDArray[np.int64] = np.asarray((flat @ flat.T).toarray(), dtype=np.int64)
    return counts


def iou_matrix(
    masks: Sequence[npt.NDArray[np.bool_]] | npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Return the (N, N) IoU matrix; two empty masks have IoU 0."""
    inter = pairwise_intersections(masks).astype(np.float64)
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)
    return out


def protected_nms(
    instance: npt.NDArray[np.bool_],
    parts: Sequence[npt.NDArray[np.bool_]],
    *,
    iou_threshold: float = 0.8,
) -> list[int]:
    """Suppress duplicate parts with exact mask IoU; the instance always survives.

    Parts whose IoU with the instance exceeds the threshold are dropped (the instance stands for
    them); the rest go through greedy NMS in the given order (earlier = preferred): a part is
    kept unless its IoU with an already kept part exceeds the threshold.

    Args:
        instance: (H, W) bool.
        parts: Candidate (H, W) bool masks, in priority order.
        iou_threshold: Suppression threshold (pairs with IoU strictly above it are duplicates).

    Returns:
        Indices into `parts` of the kept masks, in the given order.
    """
    if not parts:
        return []
    iou = iou_matrix([instance, *parts])
    kept: list[int] = []
    for index in range(len(parts)):
        row = iou[index + 1]
        if row[0] > iou_threshold or not parts[index].any():
            continue
        if all(row[k + 1] <= iou_threshold for k in kept):
            kept.append(index)
    return kept

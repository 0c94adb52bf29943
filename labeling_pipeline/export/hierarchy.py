"""Part/whole hierarchy of the masks of one image, by pixel containment.

Rule: the parent of mask ``i`` is, among the other masks ``j`` of the same image that contain
at least `threshold` (0.9) of ``i``'s pixels (``|i & j| >= threshold * |i|``) and rank above
``i``, the one with the smallest area; equal areas go to the lower id. Masks are ranked by area,
and at equal area the lower id ranks higher. So of two masks that contain each other (near
duplicates: each holds >= 90 % of the other) the larger one is the parent, and of two equal
ones the lower id; the parent relation strictly climbs the ranking, so it never forms a cycle
and every image's masks make a forest.

Containment is computed on COCO RLE with pycocotools (intersections of run lengths, after a
bounding-box test), never on dense masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils

from core_model.masks import CocoRLE
from labeling_pipeline.export.errors import ExportError

DEFAULT_CONTAINMENT = 0.9


def containment_matrix(rles: Sequence[CocoRLE]) -> npt.NDArray[np.float64]:
    """Return C (N, N) float64 with ``C[i, j] = |mask_i & mask_j| / |mask_i|``.

    Args:
        rles: N trusted COCO RLEs of one image (same ``size``), ``counts`` str or bytes.

    Returns:
        (N, N) fractions in [0, 1]; the diagonal is 1 for non-empty masks.
    """
    if not rles:
        return np.zeros((0, 0), dtype=np.float64)
    prepared = [
        {
            "size": list(r["size"]),
            "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"],
        }
        for r in rles
    ]
    # with iscrowd set for the second argument, pycocotools divides the intersection by the
    # area of the first argument's mask: exactly "the fraction of i inside j"
    matrix = mask_utils.iou(prepared, prepared, [1] * len(prepared))
    return np.asarray(matrix, dtype=np.float64).reshape(len(rles), len(rles))


def assign_parents(
    rles: Sequence[CocoRLE],
    areas: Sequence[int],
    ids: Sequence[int],
    *,
    threshold: float = DEFAULT_CONTAINMENT,
) -> list[int | None]:
    """Return the parent id of each mask (None for a root), by the module's rule.

    Args:
        rles: N COCO RLEs of one image.
        areas: N foreground pixel counts.
        ids: N distinct ids (the COCO annotation ids).
        threshold: Least fraction of a mask's pixels its parent must contain, in (0, 1].

    Returns:
        N entries: a parent id from `ids`, or None.
    """
    if not 0.0 < threshold <= 1.0:
        raise ExportError(f"threshold must lie in (0, 1], got {threshold}")
    if not len(rles) == len(areas) == len(ids):
        raise ExportError("rles, areas and ids must have the same length")
    if len(set(ids)) != len(ids):
        raise ExportError("ids must be distinct")
    contained = containment_matrix(rles) >= threshold
    rank = [(int(a), -int(i)) for a, i in zip(areas, ids, strict=True)]
    parents: list[int | None] = []
    for i in range(len(ids)):
        candidates = [
            j for j in range(len(ids)) if j != i and contained[i, j] and rank[j] > rank[i]
        ]
        if not candidates:
            parents.append(None)
            continue
        best = min(candidates, key=lambda j: (int(areas[j]), int(ids[j])))
        parents.append(int(ids[best]))
    return parents


def build_forest(
    nodes: Sequence[Mapping[str, Any]], parents: Sequence[int | None]
) -> list[dict[str, Any]]:
    """Nest nodes into trees: each node's dict gets a ``children`` list.

    Args:
        nodes: N dicts with an ``id`` key (copied, not changed).
        parents: N parent ids (None for roots), e.g. from `assign_parents`.

    Returns:
        The roots, children and roots in id order.
    """
    copies = {int(node["id"]): {**node, "children": []} for node in nodes}
    roots = []
    for node, parent in sorted(
        zip(nodes, parents, strict=True), key=lambda pair: int(pair[0]["id"])
    ):
        entry = copies[int(node["id"])]
        if parent is None or parent not in copies:
            roots.append(entry)
        else:
            copies[parent]["children"].append(entry)
    return roots

"""Instance/part relations between proposals (UnSAMv2 stage 2).

A proposal is an **instance** when it covers more than `min_instance_area_fraction` of the image
and is not contained (more than `containment_threshold` of its pixels) in another proposal that
dominates it: larger, or as large with a higher score (so of two near-duplicates the larger one
is the instance). The **parts** of an instance are the other non-instance proposals contained in
it above the threshold; a part may belong to two instances. Proposals that are neither are
dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.mask_ops import pairwise_intersections


@dataclass(frozen=True)
class InstanceHierarchy:
    """An instance (index into the proposals) with the indices of its parts."""

    instance: int
    parts: tuple[int, ...]


def find_hierarchies(
    masks: Sequence[npt.NDArray[np.bool_]],
    scores: Sequence[float],
    *,
    min_instance_area_fraction: float = 0.05,
    containment_threshold: float = 0.8,
) -> list[InstanceHierarchy]:
    """Split proposals into instances and their parts.

    Args:
        masks: N proposals, each (H, W) bool in the image frame.
        scores: N confidence scores (tie-breaks between equally large masks).
        min_instance_area_fraction: Smallest instance as a fraction of H * W.
        containment_threshold: |a & b| / |a| above which a counts as inside b.

    Returns:
        One hierarchy per instance, largest instance first.
    """
    if len(masks) != len(scores):
        raise ValueError(f"{len(masks)} masks but {len(scores)} scores")
    if not masks:
        return []
    inter = pairwise_intersections(masks).astype(np.float64)
    areas = np.diag(inter).copy()
    contained = inter / np.maximum(areas[:, None], 1.0)  # [i, j]: share of i inside j
    image_area = float(masks[0].shape[0] * masks[0].shape[1])
    rank = sorted(range(len(masks)), key=lambda i: (areas[i], scores[i], -i))
    position = {index: order for order, index in enumerate(rank)}
    instances = []
    for i in range(len(masks)):
        if areas[i] <= min_instance_area_fraction * image_area:
            continue
        dominated = any(
            j != i and contained[i, j] > containment_threshold and position[j] > position[i]
            for j in range(len(masks))
        )
        if not dominated:
            instances.append(i)
    instance_set = set(instances)
    out = []
    for i in sorted(instances, key=lambda k: -position[k]):
        parts = tuple(
            j
            for j in range(len(masks))
            if j not in instance_set and contained[j, i] > containment_threshold
        )
        out.append(InstanceHierarchy(i, parts))
    return out

"""Instance/part relations between proposals (UnSAMv2 stage 2).

A proposal is an **instance** when it covers more than `min_instance_area_fraction` of the image
and is not contained (more than `containment_threshold` of its pixels) in another proposal that
dominates it: one that does not lie inside it in turn (so it is larger), or, for near-duplicates
lying inside each other, one with a higher (source priority, area, score) - a human mask wins
over a sloppier N-cut mask of the same object. The **parts** of an instance are the other
non-instance proposals contained in it above the threshold; a part may belong to two instances.
Proposals that are neither are dropped.
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
    priorities: Sequence[int] | None = None,
    min_instance_area_fraction: float = 0.05,
    containment_threshold: float = 0.8,
) -> list[InstanceHierarchy]:
    """Split proposals into instances and their parts.

    Args:
        masks: N proposals, each (H, W) bool in the image frame.
        scores: N confidence scores (tie-breaks between near-duplicates).
        priorities: N source priorities (e.g. human masks above detector masks above N-cut);
            between near-duplicates the higher priority is the instance. Default: all equal.
        min_instance_area_fraction: Smallest instance as a fraction of H * W.
        containment_threshold: |a & b| / |a| above which a counts as inside b.

    Returns:
        One hierarchy per instance, largest instance first.
    """
    count = len(masks)
    priorities = list(priorities) if priorities is not None else [0] * count
    if len(scores) != count or len(priorities) != count:
        raise ValueError(f"{count} masks but {len(scores)} scores and {len(priorities)} priorities")
    if not masks:
        return []
    inter = pairwise_intersections(masks).astype(np.float64)
    areas = np.diag(inter).copy()
    inside = inter / np.maximum(areas[:, None], 1.0) > containment_threshold  # [i, j]: i in j

    def key(k: int) -> tuple[float, float, float, int]:
        return (priorities[k], areas[k], scores[k], -k)

    def dominated(i: int) -> bool:
        # i inside j but not j inside i means j is larger: j is the whole. Mutual containment
        # means near-duplicates: the one with the higher (priority, area, score) is the instance.
        return any(
            j != i and inside[i, j] and (not inside[j, i] or key(j) > key(i)) for j in range(count)
        )

    image_area = float(masks[0].shape[0] * masks[0].shape[1])
    instances = [
        i
        for i in range(count)
        if areas[i] > min_instance_area_fraction * image_area and not dominated(i)
    ]
    taken = set(instances)
    return [
        InstanceHierarchy(i, tuple(j for j in range(count) if j not in taken and inside[j, i]))
        for i in sorted(instances, key=lambda k: (-areas[k], k))
    ]

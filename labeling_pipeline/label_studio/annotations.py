"""Label Studio annotation results -> stored human masks.

Only brush regions (``type == "brushlabels"``, RLE format) become masks; other result types
(keypoints, numbers, text) are ignored. A region whose RLE does not decode is reported and
skipped, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core_model.errors import InvalidMaskError
from core_model.masks import brush_rle_to_mask, encode_coco_rle
from labeling_pipeline.store.repository import MaskRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertedAnnotation:
    """Masks of one annotation and the regions that could not be used.

    Attributes:
        masks: One record per usable brush region.
        problems: Human-readable reasons for skipped regions.
    """

    masks: list[MaskRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _brush_result(item: Any) -> bool:
    return isinstance(item, Mapping) and str(item.get("type", "")).lower() == "brushlabels"


def _region_to_mask(item: Mapping[str, Any], granularity: float | None) -> MaskRecord:
    value = item.get("value") or {}
    width, height = item.get("original_width"), item.get("original_height")
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        raise InvalidMaskError("missing original_width/original_height")
    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        raise InvalidMaskError("brush value is not in RLE format")
    labels = value.get("brushlabels") or ["unlabeled"]
    mask = brush_rle_to_mask(value["rle"], height=height, width=width)
    return MaskRecord(
        region_id=str(item.get("id", "")),
        label=str(labels[0]),
        rle=encode_coco_rle(mask),
        width=width,
        height=height,
        area=int(mask.sum()),
        granularity=granularity,
    )


def annotation_masks(
    results: Sequence[Any], *, granularities: Mapping[str, float] | None = None
) -> ConvertedAnnotation:
    """Convert the ``result`` list of one Label Studio annotation.

    Args:
        results: The annotation's result items.
        granularities: Granularity by region id, where the backend recorded the value it used.

    Returns:
        Masks of the decodable brush regions (empty masks are skipped) and the problems found.
    """
    converted = ConvertedAnnotation()
    for index, item in enumerate(results or []):
        if not _brush_result(item):
            continue
        region = str(item.get("id", index))
        try:
            record = _region_to_mask(item, (granularities or {}).get(region))
        except InvalidMaskError as exc:
            converted.problems.append(f"region {region}: {exc}")
            continue
        if record.area == 0:
            converted.problems.append(f"region {region}: empty mask")
            continue
        converted.masks.append(record)
    for problem in converted.problems:
        logger.warning("skipped brush region: %s", problem)
    return converted

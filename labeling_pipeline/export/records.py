"""Label Studio tasks -> image records of brush regions; broken records are reported, not fatal.

A task of a Label Studio JSON export holds ``data`` (the image URL under the config's image
key) and ``annotations`` (each with a ``result`` list). Which annotations are exported:

- ``"best"`` (default): per task one annotation, the newest ``ground_truth`` one if any, else
  the newest (by ``updated_at``, then id); the COCO image id is the task id.
- ``"all"``: every annotation, each as its own image entry (id = the annotation id), so masks
  of different annotators never nest into each other.

Cancelled (skipped) annotations are never exported. Each ``brushlabels`` region becomes a
`Region` with its COCO RLE; a region that cannot be used is skipped with a `SkippedRecord`:

| reason | when |
|---|---|
| ``bad_task`` | the task is not a dict with an integer id, or its annotations are not a list |
| ``missing_image_size`` | no integer ``original_width`` / ``original_height`` on the region |
| ``unknown_label`` | no label, or a label that is not a BrushLabels label of the config |
| ``bad_rle`` | the brush RLE does not decode at that size |
| ``empty_mask`` | the mask has no pixel |
| ``size_mismatch`` | the region's size differs from the first region of the same annotation |

Granularity of a region, first known wins: the store's record for (annotation id, region id),
the store's prediction record for the region id (`GranularityMap` keys ``(annotation_id,
region_id)`` and ``(None, region_id)``), then a per-region ``number`` result with the region's
id in [0.1, 1.0]; otherwise unknown (None, written as JSON null).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TextIO
from urllib.parse import parse_qs, unquote, urlsplit

from core_model.masks import CocoRLE, coco_rle_bbox
from core_model.types import granularity_or_none
from labeling_pipeline.export.errors import ExportError
from labeling_pipeline.label_studio.annotations import annotation_masks

GranularityMap = Mapping[tuple[int | None, str], float]
"""Granularity by (annotation id, region id); annotation id None = any annotation."""

GranularitySource = Callable[[int], GranularityMap]
"""Returns the known granularities of one Label Studio task id."""

ANNOTATION_POLICIES = ("best", "all")


@dataclass(frozen=True)
class Region:
    """One usable brush region.

    Attributes:
        region_id: The result id in Label Studio.
        label: Its BrushLabels label.
        rle: COCO RLE of the (height, width) mask, ``counts`` an ASCII string.
        area: Foreground pixels.
        bbox_xywh: Tight box (x, y, width, height) in pixels.
        granularity: Granularity used to make the mask, None when unknown.
    """

    region_id: str
    label: str
    rle: CocoRLE
    area: int
    bbox_xywh: tuple[float, float, float, float]
    granularity: float | None


@dataclass(frozen=True)
class ImageRecord:
    """The regions of one exported annotation on one image.

    Attributes:
        image_id: COCO image id (task id, or annotation id with the "all" policy).
        ls_task_id: Label Studio task id.
        ls_annotation_id: Label Studio annotation id.
        file_name: Base name of the image (upload prefix kept).
        image_url: The task's image reference as Label Studio stores it.
        width: Image width in pixels.
        height: Image height in pixels.
        regions: Usable regions in result order.
    """

    image_id: int
    ls_task_id: int
    ls_annotation_id: int
    file_name: str
    image_url: str
    width: int
    height: int
    regions: tuple[Region, ...]


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out: a reason code (module table), a detail and where it was.

    Attributes:
        reason: Short code, e.g. ``bad_rle``.
        detail: Human-readable explanation.
        ls_task_id: Label Studio task, when known.
        ls_annotation_id: Label Studio annotation, when known.
        ls_region_id: Label Studio region (result id), when known.
        source: File and record (prediction imports), when relevant.
    """

    reason: str
    detail: str
    ls_task_id: int | None = None
    ls_annotation_id: int | None = None
    ls_region_id: str | None = None
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (unknown fields left out)."""
        fields = {
            "reason": self.reason,
            "detail": self.detail,
            "ls_task_id": self.ls_task_id,
            "ls_annotation_id": self.ls_annotation_id,
            "ls_region_id": self.ls_region_id,
            "source": self.source,
        }
        return {k: v for k, v in fields.items() if v is not None}


class SkipReport:
    """Skipped records written as JSON lines as they come (nothing kept), counted by reason.

    Args:
        path: The JSON-lines file (created, truncated); None counts only.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._stream: TextIO | None = None
        if path is not None:
            try:
                self._stream = open(path, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise ExportError(f"cannot write {path}: {exc}") from None

    @property
    def total(self) -> int:
        """Number of skipped records."""
        return sum(self.counts.values())

    def add(self, record: SkippedRecord) -> None:
        """Count a skipped record and append it to the file."""
        self.counts[record.reason] += 1
        if self._stream is not None:
            self._stream.write(json.dumps(record.as_dict()) + "\n")

    def close(self) -> None:
        """Close the file."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def mapping_at(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """Return ``record[key]`` when it is a mapping, else an empty one (untrusted JSON)."""
    value = record.get(key)
    return value if isinstance(value, Mapping) else {}


def image_file_name(url: str) -> str:
    """Return the image's base name from a Label Studio image reference.

    ``/data/upload/3/ab12cd34-photo.png`` -> ``ab12cd34-photo.png``;
    ``/data/local-files/?d=dir/photo.png`` -> ``photo.png``; ``s3://b/k/photo.png`` ->
    ``photo.png``.
    """
    parts = urlsplit(url)
    local = parse_qs(parts.query).get("d")
    path = local[0] if local else unquote(parts.path)
    return PurePosixPath(path).name or url


def select_annotations(annotations: Sequence[Any], policy: str) -> list[Mapping[str, Any]]:
    """Return the annotations to export (never cancelled ones), see the module docstring."""
    usable = [
        a
        for a in annotations
        if isinstance(a, Mapping) and not a.get("was_cancelled") and isinstance(a.get("id"), int)
    ]
    if policy == "all" or len(usable) <= 1:
        return usable
    pool = [a for a in usable if a.get("ground_truth")] or usable
    return [max(pool, key=lambda a: (str(a.get("updated_at") or ""), a["id"]))]


def _region_numbers(results: Sequence[Any]) -> dict[str, float]:
    """Per-region ``number`` results (e.g. a granularity slider) by region id, in [0.1, 1.0]."""
    numbers = {}
    for item in results:
        if not isinstance(item, Mapping) or item.get("type") != "number":
            continue
        value = granularity_or_none(mapping_at(item, "value").get("number"))
        if value is not None:
            numbers[str(item.get("id"))] = value
    return numbers


@dataclass(frozen=True)
class TaskConverter:
    """Converts one task of a JSON export into image records.

    Attributes:
        categories: BrushLabels labels accepted; None accepts every label.
        image_key: Task data key of the image (``$image`` in the config -> ``image``).
        annotations: ``"best"`` or ``"all"`` (module docstring).
    """

    categories: frozenset[str] | None = None
    image_key: str = "image"
    annotations: str = "best"

    def __post_init__(self) -> None:
        if self.annotations not in ANNOTATION_POLICIES:
            raise ExportError(f"annotations must be one of {ANNOTATION_POLICIES}")

    def convert(
        self, task: Any, granularities: GranularitySource | None = None
    ) -> tuple[list[ImageRecord], list[SkippedRecord]]:
        """Return the task's image records and the records skipped on the way."""
        task_id = task.get("id") if isinstance(task, Mapping) else None
        annotations = task.get("annotations") if isinstance(task, Mapping) else None
        if not isinstance(task_id, int) or not isinstance(annotations, list):
            return [], [SkippedRecord("bad_task", "not a task of a JSON export (id, annotations)")]
        data = mapping_at(task, "data")
        url = data.get(self.image_key)
        if not isinstance(url, str):
            url = next((v for v in data.values() if isinstance(v, str)), "")
        selected = select_annotations(annotations, self.annotations)
        known = granularities(task_id) if granularities is not None and selected else {}
        images, skipped = [], []
        for annotation in selected:
            image_id = task_id if self.annotations == "best" else annotation["id"]
            record, problems = self._annotation(task_id, image_id, url, annotation, known)
            skipped += problems
            if record is not None:
                images.append(record)
        return images, skipped

    def _annotation(
        self,
        task_id: int,
        image_id: int,
        url: str,
        annotation: Mapping[str, Any],
        known: GranularityMap,
    ) -> tuple[ImageRecord | None, list[SkippedRecord]]:
        results = annotation.get("result") or []
        if not isinstance(results, list):
            results = []
        numbers = _region_numbers(results)
        regions: list[Region] = []
        skipped: list[SkippedRecord] = []
        size: tuple[int, int] | None = None
        for index, item in enumerate(results):
            if not isinstance(item, Mapping) or str(item.get("type", "")).lower() != "brushlabels":
                continue
            region_id = str(item.get("id") or f"#{index}")
            granularity = known.get((annotation["id"], region_id), known.get((None, region_id)))
            if granularity is None:
                granularity = numbers.get(region_id)
            outcome = self._region(item, region_id, granularity, size)
            if isinstance(outcome, tuple):
                reason, detail = outcome
                skipped.append(SkippedRecord(reason, detail, task_id, annotation["id"], region_id))
                continue
            size = size or (int(item["original_height"]), int(item["original_width"]))
            regions.append(outcome)
        if size is None:
            return None, skipped
        record = ImageRecord(
            image_id=image_id,
            ls_task_id=task_id,
            ls_annotation_id=annotation["id"],
            file_name=image_file_name(url),
            image_url=url,
            width=size[1],
            height=size[0],
            regions=tuple(regions),
        )
        return record, skipped

    def _region(
        self,
        item: Mapping[str, Any],
        region_id: str,
        granularity: float | None,
        size: tuple[int, int] | None,
    ) -> Region | tuple[str, str]:
        """Return the region, or (reason, detail) when it cannot be used."""
        width, height = item.get("original_width"), item.get("original_height")
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)
        ):
            return "missing_image_size", "no integer original_width/original_height"
        if size is not None and size != (height, width):
            return (
                "size_mismatch",
                f"{width}x{height}, the annotation's image is {size[1]}x{size[0]}",
            )
        labels = mapping_at(item, "value").get("brushlabels")
        label = labels[0] if isinstance(labels, list) and labels else None
        if not isinstance(label, str) or not label:
            return "unknown_label", "the region has no BrushLabels label"
        if self.categories is not None and label not in self.categories:
            return "unknown_label", f"label {label!r} is not a BrushLabels label of the config"
        converted = annotation_masks([item])
        if not converted.masks:
            problem = converted.problems[0].split(": ", 1)[-1] if converted.problems else "?"
            return ("empty_mask" if problem == "empty mask" else "bad_rle"), problem
        mask = converted.masks[0]
        x, y, w, h = coco_rle_bbox(mask.rle)
        return Region(region_id, label, mask.rle, mask.area, (x, y, w, h), granularity)

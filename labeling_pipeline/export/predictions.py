"""Import pseudo-label JSON and COCO masks into Label Studio as predictions, for review.

Every source image is matched to a task of the project by file name: the base name of the
task's image (``/data/upload/3/ab12cd34-photo.png`` gives ``ab12cd34-photo.png``, and
``photo.png`` without the upload prefix; local files give their base name), plus names the
caller adds (e.g. the store's cached ``<sha256>.<ext>`` names of synced tasks, which the
pseudo-label workers write as ``file_name``). A name that fits several tasks is ambiguous and
skipped. Each mask becomes a ``brushlabels`` result (``core_model.masks.encode_brush_rle``,
0/255) of the project's BrushLabels control, with a label mapped from its category: an explicit
mapping first, then the same name when it is a label of the config, then a default label.
Predictions are posted in batches to ``POST /api/projects/{id}/import/predictions`` with the
given ``model_version``. A task that already holds a prediction of that model version is
skipped (re-running an import adds nothing). Result ids are derived from the model version,
the file name and the mask's key, so they are stable.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core_model.errors import InvalidMaskError
from core_model.masks import decode_coco_rle, encode_brush_rle
from labeling_pipeline.export.errors import ExportError
from labeling_pipeline.export.reader import ProjectTasks
from labeling_pipeline.export.records import (
    SkippedRecord,
    SkipReport,
    image_file_name,
    mapping_at,
)
from labeling_pipeline.export.sources import SourceImage, SourceMask
from labeling_pipeline.label_studio.client import LabelStudioClient
from labeling_pipeline.label_studio.config import BrushControl

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
DEFAULT_BATCH = 10


@dataclass(frozen=True)
class LabelMap:
    """Category name -> BrushLabels label (module docstring for the order).

    Attributes:
        labels: Labels of the config.
        mapping: Explicit category -> label entries.
        default: Label for every other category, or None (they are skipped).
    """

    labels: frozenset[str]
    mapping: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    def __post_init__(self) -> None:
        wanted = [*self.mapping.values(), *([self.default] if self.default else [])]
        unknown = sorted({label for label in wanted if label not in self.labels})
        if unknown:
            raise ExportError(
                f"labels {unknown} are not BrushLabels labels of the project "
                f"({sorted(self.labels)})"
            )

    def resolve(self, category: str) -> str | None:
        """Return the label for a category, or None."""
        if category in self.mapping:
            return self.mapping[category]
        return category if category in self.labels else self.default


class TaskIndex:
    """Task ids by image file name, and which tasks already hold predictions."""

    def __init__(self) -> None:
        self._names: dict[str, int | None] = {}
        self.with_predictions: set[int] = set()

    def add(self, name: str, task_id: int, *, override: bool = False) -> None:
        """Map a file name to a task (a second, different task makes the name ambiguous)."""
        if override or self._names.get(name, task_id) == task_id:
            self._names[name] = task_id
        else:
            self._names[name] = None

    def add_task(self, task_id: int, image_url: str) -> None:
        """Index a task by its image's base name, and without an upload prefix."""
        name = image_file_name(image_url)
        self.add(name, task_id)
        bare = _UPLOAD_PREFIX.sub("", name)
        if bare != name:
            self.add(bare, task_id)

    def match(self, file_name: str) -> tuple[int | None, str]:
        """Return (task id, "") or (None, reason code)."""
        name = image_file_name(file_name)
        if name not in self._names:
            return None, "no_task"
        task_id = self._names[name]
        return (task_id, "") if task_id is not None else (None, "ambiguous_task")

    @classmethod
    def from_project(cls, tasks: ProjectTasks, image_key: str) -> TaskIndex:
        """Index every task of a project (light listing: id, data, prediction count)."""
        index = cls()
        for task in tasks.listing("id,data,total_predictions"):
            url = mapping_at(task, "data").get(image_key)
            if isinstance(task.get("id"), int) and isinstance(url, str):
                index.add_task(task["id"], url)
                if task.get("total_predictions"):
                    index.with_predictions.add(task["id"])
        return index


@dataclass
class ImportSummary:
    """Counts of one import."""

    images: int = 0
    predictions: int = 0
    masks: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


RecordPredicted = Callable[[int, Sequence[tuple[str, str, float]]], None]
"""Called per posted task with (result id, label, granularity) of its masks of known
granularity (e.g. to store prediction records, so accepted masks keep their granularity)."""


@dataclass
class _Batch:
    predictions: list[dict[str, Any]] = field(default_factory=list)
    known: list[tuple[int, list[tuple[str, str, float]]]] = field(default_factory=list)


class PredictionImporter:
    """Turns source images into Label Studio predictions and posts them in batches.

    Args:
        client: Authenticated client.
        project_id: Label Studio project id.
        target: BrushLabels control and image tag.
        labels: Category -> label mapping.
        model_version: Written on every prediction.
        index: Tasks by file name.
        report: Receives skipped images and masks.
        batch_size: Tasks per request.
        on_posted: See `RecordPredicted`.
    """

    def __init__(
        self,
        client: LabelStudioClient,
        project_id: int,
        *,
        target: BrushControl,
        labels: LabelMap,
        model_version: str,
        index: TaskIndex,
        report: SkipReport,
        batch_size: int = DEFAULT_BATCH,
        on_posted: RecordPredicted | None = None,
    ) -> None:
        if not model_version:
            raise ExportError("a model version is required")
        self.client, self.project_id, self.target = client, int(project_id), target
        self.labels, self.model_version, self.index = labels, model_version, index
        self.report, self.batch_size, self.on_posted = report, max(1, batch_size), on_posted
        self.summary = ImportSummary()
        self._batch = _Batch()
        self._done_tasks: set[int] = set()

    def _result_id(self, source: SourceImage, mask: SourceMask) -> str:
        digest = hashlib.sha1(
            f"{self.model_version}|{source.file_name}|{mask.key}".encode(), usedforsecurity=False
        )
        return "u" + digest.hexdigest()[:9]

    def _has_version(self, task_id: int) -> bool:
        if task_id in self._done_tasks:
            return True
        if task_id not in self.index.with_predictions:
            return False
        existing = self.client.get_json("/api/predictions", task=task_id)
        versions = {p.get("model_version") for p in existing or [] if isinstance(p, Mapping)}
        return self.model_version in versions

    def _result(self, source: SourceImage, mask: SourceMask, label: str) -> dict[str, Any]:
        pixels = decode_coco_rle(mask.rle)
        if not pixels.any():
            raise InvalidMaskError("empty mask")
        height, width = pixels.shape
        return {
            "id": self._result_id(source, mask),
            "from_name": self.target.name,
            "to_name": self.target.to_name,
            "type": "brushlabels",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_brush_rle(pixels), "brushlabels": [label]},
        }

    def add(self, source: SourceImage) -> None:
        """Convert one image's masks and queue its prediction (posted when a batch fills)."""
        self.summary.images += 1
        task_id, reason = self.index.match(source.file_name)
        if task_id is None:
            detail = f"no single task of the project shows {source.file_name!r}"
            self.report.add(SkippedRecord(reason, detail, source=source.origin))
            return
        if self._has_version(task_id):
            detail = f"the task already has predictions of model version {self.model_version!r}"
            self.report.add(SkippedRecord("exists", detail, task_id, source=source.origin))
            return
        results, known = [], []
        for mask in source.masks:
            where = f"{source.origin}:{mask.key}"
            label = self.labels.resolve(mask.category)
            if label is None:
                detail = f"category {mask.category!r} maps to no label (use --label or --map)"
                self.report.add(SkippedRecord("unknown_label", detail, task_id, source=where))
                continue
            try:
                result = self._result(source, mask, label)
            except InvalidMaskError as exc:
                code = "empty_mask" if str(exc) == "empty mask" else "bad_rle"
                self.report.add(SkippedRecord(code, str(exc), task_id, source=where))
                continue
            results.append(result)
            if mask.granularity is not None:
                known.append((result["id"], label, mask.granularity))
        if not results:
            return
        self._batch.predictions.append(
            {"task": task_id, "model_version": self.model_version, "result": results}
        )
        self._batch.known.append((task_id, known))
        self._done_tasks.add(task_id)
        self.summary.masks += len(results)
        if len(self._batch.predictions) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Post the queued predictions."""
        if not self._batch.predictions:
            return
        self.client.request_json(
            "POST",
            f"/api/projects/{self.project_id}/import/predictions",
            json=self._batch.predictions,
        )
        self.summary.predictions += len(self._batch.predictions)
        if self.on_posted is not None:
            for task_id, known in self._batch.known:
                self.on_posted(task_id, known)
        self._batch = _Batch()


def import_predictions(
    importer: PredictionImporter,
    sources: Iterable[SourceImage],
    *,
    on_image: Callable[[], None] | None = None,
) -> ImportSummary:
    """Feed every source image to the importer, post the last batch, and return the counts."""
    for source in sources:
        importer.add(source)
        if on_image is not None:
            on_image()
    importer.flush()
    importer.summary.skipped = dict(importer.report.counts)
    return importer.summary

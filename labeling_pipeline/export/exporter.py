"""Export Label Studio brush annotations as COCO (RLE) with granularity and part/whole parents.

Outputs under ``out_dir`` (see README "Export"):

- ``coco.json``: COCO instance segmentation (compressed RLE, ``iscrowd`` 0) whose annotations
  also carry ``granularity`` (float, or null when unknown), ``parent_id`` (COCO id of the
  smallest other mask of the same image containing >= 90 % of it, or null; rule in
  `labeling_pipeline.export.hierarchy`), ``ls_region_id`` and ``ls_annotation_id``; images
  carry ``ls_task_id``, ``ls_annotation_id`` and ``ls_image``.
- ``masks/<image_id>/<annotation_id>.png`` and ``masks/<image_id>/index.png`` (PNG format).
- ``hierarchy/<image_id>.json``: the image's forest of regions (hierarchy format).
- ``skipped.jsonl``: one line per skipped record; ``summary.json``: counts.

Tasks are processed one at a time: one task's masks are in memory, COCO entries go to disk as
they are made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from labeling_pipeline.export.coco import CocoWriter
from labeling_pipeline.export.errors import ExportError
from labeling_pipeline.export.hierarchy import DEFAULT_CONTAINMENT, assign_parents, build_forest
from labeling_pipeline.export.png import PngRegion, write_image_pngs
from labeling_pipeline.export.records import (
    GranularitySource,
    ImageRecord,
    SkipReport,
    TaskConverter,
)

FORMATS = ("coco", "png", "hierarchy")
EXPORT_SCHEMA = "unsamv2-export-1"


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how.

    Attributes:
        categories: BrushLabels labels of the project's config, in category-id order (ids 1..);
            regions with other labels are skipped. None: categories are the labels found, in
            order of first appearance.
        image_key: Task data key of the image.
        annotations: ``"best"`` (one per task) or ``"all"`` (see `records`).
        formats: Subset of `FORMATS`.
        containment: Least fraction of a mask inside its parent.
        source: Free text recorded in the COCO ``info`` (e.g. the project or file).
    """

    categories: tuple[str, ...] | None = None
    image_key: str = "image"
    annotations: str = "best"
    formats: tuple[str, ...] = FORMATS
    containment: float = DEFAULT_CONTAINMENT
    source: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.formats) - set(FORMATS)
        if unknown or not self.formats:
            raise ExportError(f"formats must be a non-empty subset of {FORMATS}, got {unknown}")
        if not 0.0 < self.containment <= 1.0:
            raise ExportError(f"containment must lie in (0, 1], got {self.containment}")
        if self.categories is not None and len(set(self.categories)) != len(self.categories):
            raise ExportError("categories must be distinct")


@dataclass
class ExportSummary:
    """Counts of one export and where it went."""

    out_dir: str
    tasks: int = 0
    images: int = 0
    masks: int = 0
    with_parent: int = 0
    with_granularity: int = 0
    categories: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        """Number of skipped records."""
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "skipped_total": self.skipped_total}


class _Categories:
    """Category ids by label: fixed from the config, or grown as labels appear."""

    def __init__(self, names: Sequence[str] | None) -> None:
        self.fixed = names is not None
        self.ids = {name: index for index, name in enumerate(names or (), start=1)}

    def id_of(self, label: str) -> int:
        if label not in self.ids and not self.fixed:
            self.ids[label] = len(self.ids) + 1
        return self.ids[label]

    def coco(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "supercategory": ""} for n, i in self.ids.items()]


class _Exporter:
    def __init__(self, out_dir: Path, config: ExportConfig, coco: CocoWriter | None) -> None:
        self.out_dir, self.config, self.coco = out_dir, config, coco
        self.categories = _Categories(config.categories)
        self.next_id = 1
        self.summary = ExportSummary(out_dir=str(out_dir))

    def image(self, record: ImageRecord) -> None:
        ids = list(range(self.next_id, self.next_id + len(record.regions)))
        self.next_id += len(ids)
        parents = assign_parents(
            [r.rle for r in record.regions],
            [r.area for r in record.regions],
            ids,
            threshold=self.config.containment,
        )
        entries = []
        for ann_id, parent, region in zip(ids, parents, record.regions, strict=True):
            entries.append(
                {
                    "id": ann_id,
                    "image_id": record.image_id,
                    "category_id": self.categories.id_of(region.label),
                    "segmentation": region.rle,
                    "area": region.area,
                    "bbox": list(region.bbox_xywh),
                    "iscrowd": 0,
                    "granularity": region.granularity,
                    "parent_id": parent,
                    "ls_region_id": region.region_id,
                    "ls_annotation_id": record.ls_annotation_id,
                }
            )
        self._write(record, entries)
        self.summary.images += 1
        self.summary.masks += len(entries)
        self.summary.with_parent += sum(p is not None for p in parents)
        self.summary.with_granularity += sum(r.granularity is not None for r in record.regions)

    def _write(self, record: ImageRecord, entries: list[dict[str, Any]]) -> None:
        if self.coco is not None:
            self.coco.add_image(
                {
                    "id": record.image_id,
                    "file_name": record.file_name,
                    "width": record.width,
                    "height": record.height,
                    "ls_task_id": record.ls_task_id,
                    "ls_annotation_id": record.ls_annotation_id,
                    "ls_image": record.image_url,
                }
            )
            for entry in entries:
                self.coco.add_annotation(entry)
        if "png" in self.config.formats:
            write_image_pngs(
                self.out_dir / "masks" / str(record.image_id),
                [
                    PngRegion(e["id"], index, e["segmentation"], e["area"])
                    for index, e in enumerate(entries, start=1)
                ],
                height=record.height,
                width=record.width,
            )
        if "hierarchy" in self.config.formats:
            self._hierarchy(record, entries)

    def _hierarchy(self, record: ImageRecord, entries: list[dict[str, Any]]) -> None:
        labels = {i: n for n, i in self.categories.ids.items()}
        nodes = [
            {
                "id": e["id"],
                "index": index,
                "ls_region_id": e["ls_region_id"],
                "label": labels[e["category_id"]],
                "granularity": e["granularity"],
                "area": e["area"],
            }
            for index, e in enumerate(entries, start=1)
        ]
        document = {
            "image_id": record.image_id,
            "file_name": record.file_name,
            "width": record.width,
            "height": record.height,
            "ls_task_id": record.ls_task_id,
            "ls_annotation_id": record.ls_annotation_id,
            "containment": self.config.containment,
            "regions": build_forest(nodes, [e["parent_id"] for e in entries]),
        }
        path = self.out_dir / "hierarchy" / f"{record.image_id}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document, indent=1), encoding="utf-8")
        except OSError as exc:
            raise ExportError(f"cannot write {path}: {exc}") from None


def export_annotations(
    tasks: Iterable[Any],
    out_dir: Path,
    config: ExportConfig | None = None,
    *,
    granularities: GranularitySource | None = None,
    on_task: Callable[[], None] | None = None,
) -> ExportSummary:
    """Export Label Studio tasks (JSON export records) to `out_dir` (module docstring).

    Args:
        tasks: Tasks as in a JSON export, e.g. from `iter_export_file` or `ProjectTasks`.
        out_dir: Output folder (created; existing files of the same names are replaced).
        config: Categories, formats and rules.
        granularities: Known granularities per task (e.g. `store_granularities`).
        on_task: Called after each task (progress bars).

    Returns:
        Counts, categories and skipped records by reason.

    Raises:
        ExportError: unwritable output or an unreadable task stream; broken records are
            skipped and reported, never raised.
    """
    config = config or ExportConfig()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out_dir}: {exc}") from None
    converter = TaskConverter(
        frozenset(config.categories) if config.categories is not None else None,
        config.image_key,
        config.annotations,
    )
    info = {
        "description": "Label Studio brush annotations exported by unsamv2",
        "schema": EXPORT_SCHEMA,
        "source": config.source,
        "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "containment": config.containment,
    }
    report = SkipReport(out_dir / "skipped.jsonl")
    coco = CocoWriter(out_dir / "coco.json", info=info) if "coco" in config.formats else None
    exporter = _Exporter(out_dir, config, coco)
    try:
        for task in tasks:
            images, skipped = converter.convert(task, granularities)
            for problem in skipped:
                report.add(problem)
            for record in images:
                exporter.image(record)
            exporter.summary.tasks += 1
            if on_task is not None:
                on_task()
        if coco is not None:
            coco.finish(exporter.categories.coco())
    finally:
        report.close()
        if coco is not None:
            coco.close()
    summary = exporter.summary
    summary.categories = list(exporter.categories.ids)
    summary.skipped = dict(report.counts)
    _write_summary(out_dir / "summary.json", summary)
    return summary


def _write_summary(path: Path, summary: ExportSummary) -> None:
    try:
        path.write_text(json.dumps(summary.as_dict(), indent=2), encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc}") from None

"""`unsamv2 export` (datasets from Label Studio) and `unsamv2 import-predictions` (pseudo-labels).

`export` reads a Label Studio project through its API (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)
or a JSON export file and writes COCO RLE with granularity and part/whole parents
(OUT/coco.json), PNG masks (OUT/masks/<image_id>/) and a hierarchy JSON per image
(OUT/hierarchy/). Granularities come from the data directory's store when it exists (the
backend's records), else they are null. Broken records are skipped, listed in
OUT/skipped.jsonl and counted on stdout; the exit status is still 0.

`import-predictions` posts pseudo-label JSON files and COCO files as predictions of a project,
so annotators can review them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `export` and `import-predictions`."""
    export = subparsers.add_parser(
        "export",
        help="export Label Studio brush annotations: COCO RLE + hierarchy, PNG masks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--ls-project", type=int, help="Label Studio project id (via the API)")
    source.add_argument("--from-file", type=Path, help="a Label Studio JSON export file")
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument(
        "--label-config", type=Path, help="labeling config XML of the file (categories, image key)"
    )
    export.add_argument(
        "--labels", help="comma-separated categories instead of a config (default: as found)"
    )
    export.add_argument("--formats", default="coco,png,hierarchy", help="any of coco,png,hierarchy")
    export.add_argument(
        "--annotations",
        choices=("best", "all"),
        default="best",
        help="best: one per task (ground truth, else newest); all: every annotation",
    )
    export.add_argument(
        "--containment", type=float, default=0.9, help="least share of a mask inside its parent"
    )
    export.add_argument("--page-size", type=int, default=10, help="tasks per API request")
    _common(export)
    export.set_defaults(run=run_export)

    imp = subparsers.add_parser(
        "import-predictions",
        help="post pseudo-label JSON / COCO files to a Label Studio project as predictions",
    )
    imp.add_argument("paths", type=Path, nargs="+", help="JSON files or folders of them")
    imp.add_argument("--ls-project", type=int, required=True, help="Label Studio project id")
    imp.add_argument("--model-version", default="unsamv2-pseudo-labels")
    imp.add_argument("--label", help="BrushLabels label for categories that are no label (fg)")
    imp.add_argument(
        "--map", action="append", default=[], metavar="CATEGORY=LABEL", help="repeatable"
    )
    imp.add_argument("--batch-size", type=int, default=10, help="tasks per request")
    imp.add_argument("--report", type=Path, help="write the skipped records here (JSON lines)")
    _common(imp)
    imp.set_defaults(run=run_import)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-store", action="store_true", help="do not use the data directory's store"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _settings_and_store(no_store: bool) -> tuple[Any, Any]:
    """Return the settings and the existing store (None if absent or not wanted)."""
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    url = settings.pipeline.resolved_database_url
    if no_store or (url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists()):
        return settings, None
    from labeling_pipeline.store import Store  # alembic: imported only when a store is used

    return settings, Store(url)


def _client(settings: Any) -> Any:
    from labeling_pipeline.label_studio.client import LabelStudioClient
    from ml_backend.settings import SettingsError

    pipeline = settings.pipeline
    if not pipeline.label_studio_url or not pipeline.label_studio_api_key:
        raise SettingsError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    return LabelStudioClient(pipeline.label_studio_url, pipeline.label_studio_api_key)


def _categories(xml: str) -> tuple[tuple[str, ...], str]:
    """Return (BrushLabels labels in config order, task data key of the image)."""
    from labeling_pipeline.label_studio.config import LabelConfigError, parse_label_config

    config = parse_label_config(xml)
    labels = dict.fromkeys(label for brush in config.brushes for label in brush.labels)
    if not labels:
        raise LabelConfigError("the labeling config has no <BrushLabels> with labels")
    return tuple(labels), config.first_image()[1]


@contextlib.contextmanager
def _progress(total: int | None, unit: str, disabled: bool) -> Iterator[Any]:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=total, unit=unit, file=sys.stderr, disable=disabled)
    with logging_redirect_tqdm(), bar:
        yield bar


def _print_skipped(counts: Mapping[str, int], where: str) -> None:
    if counts:
        listing = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
        print(f"skipped {sum(counts.values())} records ({listing}){where}")


def run_export(args: argparse.Namespace) -> int:
    """Export a project or a JSON export file."""
    from labeling_pipeline.export import ExportConfig, ProjectTasks, export_annotations
    from labeling_pipeline.export.errors import ExportError
    from labeling_pipeline.export.reader import iter_export_file

    settings, store = _settings_and_store(args.no_store)
    categories: tuple[str, ...] | None = None
    image_key = "image"
    if args.ls_project is not None:
        client = _client(settings)
        categories, image_key = _categories(client.get_project(args.ls_project)["label_config"])
        tasks: Any = ProjectTasks(client, args.ls_project, page_size=args.page_size)
        total, source = tasks.total, f"Label Studio project {args.ls_project}"
    else:
        if args.label_config is not None:
            try:
                xml = args.label_config.read_text(encoding="utf-8")
            except OSError as exc:
                raise ExportError(f"cannot read {args.label_config}: {exc}") from None
            categories, image_key = _categories(xml)
        tasks, total, source = iter_export_file(args.from_file), None, str(args.from_file)
    if args.labels:
        categories = tuple(dict.fromkeys(v.strip() for v in args.labels.split(",") if v.strip()))
    config = ExportConfig(
        categories=categories,
        image_key=image_key,
        annotations=args.annotations,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
        containment=args.containment,
        source=source,
    )
    granularities = None
    if store is not None:
        from labeling_pipeline.export.store_lookup import store_granularities

        granularities = store_granularities(store)
    with _progress(total, "task", args.no_progress) as bar:
        summary = export_annotations(
            tasks, args.out, config, granularities=granularities, on_task=bar.update
        )
    print(
        f"exported {summary.images} images, {summary.masks} masks ({summary.with_parent} with "
        f"a parent, {summary.with_granularity} with a granularity), "
        f"{len(summary.categories)} categories from {summary.tasks} tasks to {args.out}"
    )
    _print_skipped(summary.skipped, f": see {args.out / 'skipped.jsonl'}")
    return 0


def _label_map(labels: tuple[str, ...], args: argparse.Namespace) -> Any:
    from labeling_pipeline.export.errors import ExportError
    from labeling_pipeline.export.predictions import LabelMap

    mapping = {}
    for entry in args.map:
        category, sep, label = entry.partition("=")
        if not sep or not category.strip() or not label.strip():
            raise ExportError(f"--map wants CATEGORY=LABEL, got {entry!r}")
        mapping[category.strip()] = label.strip()
    return LabelMap(frozenset(labels), mapping, args.label)


def run_import(args: argparse.Namespace) -> int:
    """Post pseudo-labels as predictions."""
    from labeling_pipeline.export import ProjectTasks
    from labeling_pipeline.export.predictions import (
        PredictionImporter,
        TaskIndex,
        import_predictions,
    )
    from labeling_pipeline.export.records import SkipReport
    from labeling_pipeline.export.sources import expand_paths, iter_source_images
    from labeling_pipeline.label_studio.config import parse_label_config

    settings, store = _settings_and_store(args.no_store)
    client = _client(settings)
    config = parse_label_config(client.get_project(args.ls_project)["label_config"])
    image_name, image_key = config.first_image()
    brush = config.brush_for(image_name)
    index = TaskIndex.from_project(ProjectTasks(client, args.ls_project, page_size=100), image_key)
    recorder = None
    if store is not None:
        from labeling_pipeline.export.store_lookup import (
            store_prediction_recorder,
            store_task_names,
        )

        for name, task_id in store_task_names(store, args.ls_project).items():
            index.add(name, task_id, override=True)
        recorder = store_prediction_recorder(store, args.ls_project, args.model_version)
    report = SkipReport(args.report)
    importer = PredictionImporter(
        client,
        args.ls_project,
        target=brush,
        labels=_label_map(brush.labels, args),
        model_version=args.model_version,
        index=index,
        report=report,
        batch_size=args.batch_size,
        on_posted=recorder,
    )
    files = expand_paths(args.paths)
    try:
        with _progress(None, "img", args.no_progress) as bar:
            summary = import_predictions(
                importer, iter_source_images(files, report), on_image=bar.update
            )
    finally:
        report.close()
    print(
        f"posted {summary.predictions} predictions ({summary.masks} masks, model version "
        f"{args.model_version!r}) from {summary.images} images of {len(files)} files"
    )
    _print_skipped(
        summary.skipped, f": see {args.report}" if args.report else " (--report FILE lists them)"
    )
    return 0

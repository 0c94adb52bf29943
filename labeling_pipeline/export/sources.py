"""Masks to import as predictions: the project's pseudo-label JSON files and COCO files.

Two file kinds are recognised from their top-level keys:

- **pseudo-label JSON** (``image`` is one dict; official UnSAMv2 schema): one image per file.
  A missing, NaN or non-numeric ``granularity`` reads as 1.0, as the schema's loaders do.
- **COCO** (``images`` is a list), e.g. this project's own export: categories by name;
  ``granularity`` is kept when it is a number in [0.1, 1.0], else unknown. The file is streamed:
  images and categories are read first (small), then the annotations are spilled to per-image
  JSON-lines files in a temporary folder, so one image's masks are in memory at a time whatever
  the order of the annotations.

RLEs are not decoded here (they are untrusted: the importer validates them).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core_model.types import granularity_or_none
from labeling_pipeline.export.errors import ExportError
from labeling_pipeline.export.reader import (
    ijson_module,
    iter_json_items,
    load_json_bounded,
    top_level_kind,
)
from labeling_pipeline.export.records import SkippedRecord, SkipReport

_SPILL_BUFFER = 64


@dataclass(frozen=True)
class SourceMask:
    """One mask to import.

    Attributes:
        key: Its id inside the file (annotation id).
        category: Category name (mapped to a BrushLabels label by the importer).
        rle: COCO RLE as found in the file (untrusted).
        granularity: Granularity in [0.1, 1.0], or None when unknown.
    """

    key: str
    category: str
    rle: Any
    granularity: float | None


@dataclass(frozen=True)
class SourceImage:
    """The masks of one image of a source file.

    Attributes:
        origin: File (and image id for COCO files), for reports.
        file_name: The image's file name as recorded (matched to Label Studio tasks).
        masks: Its masks in file order.
    """

    origin: str
    file_name: str
    masks: tuple[SourceMask, ...]


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Return the JSON files given directly or found (recursively, sorted) in given folders."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*.json") if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            raise ExportError(f"{path} does not exist")
    return files


def file_kind(path: Path) -> str:
    """Return ``"pseudo"`` (one ``image``) or ``"coco"`` (``images`` list), else raise."""
    if top_level_kind(path) == "object":
        ijson = ijson_module()
        if ijson is None:
            keys = set(load_json_bounded(path))
        else:
            keys = set()
            try:
                with open(path, "rb") as stream:
                    for prefix, event, value in ijson.parse(stream):
                        if prefix == "" and event == "map_key" and value in ("image", "images"):
                            keys.add(value)
                            break
            except (OSError, ValueError, ijson.JSONError) as exc:
                raise ExportError(f"cannot read {path}: {exc}") from None
        if "image" in keys:
            return "pseudo"
        if "images" in keys:
            return "coco"
    raise ExportError(f"{path} is neither a pseudo-label JSON (image) nor a COCO file (images)")


def _granularity(value: Any, *, default: float | None) -> float | None:
    number = granularity_or_none(value)
    return default if number is None else number


def _categories(items: Iterable[Any]) -> dict[Any, str]:
    return {
        c["id"]: str(c.get("name", c["id"]))
        for c in items
        if isinstance(c, Mapping) and isinstance(c.get("id"), int)
    }


def _pseudo_label_image(path: Path) -> SourceImage:
    document = load_json_bounded(path)
    image = document.get("image") if isinstance(document, Mapping) else None
    if not isinstance(image, Mapping) or not isinstance(document.get("annotations"), list):
        raise ExportError(f"{path} is not a pseudo-label JSON (image, annotations)")
    names = _categories(document.get("categories") or [])
    masks = tuple(
        SourceMask(
            str(a.get("id", index)),
            names.get(a.get("category_id"), "fg"),
            a.get("segmentation"),
            _granularity(a.get("granularity"), default=1.0),
        )
        for index, a in enumerate(document["annotations"], start=1)
        if isinstance(a, Mapping)
    )
    return SourceImage(str(path), str(image.get("file_name") or path.stem), masks)


def _spill(work: Path, image_id: int, buffer: list[dict[str, Any]]) -> None:
    with open(work / f"{image_id}.jsonl", "a", encoding="utf-8") as out:
        out.writelines(json.dumps(item) + "\n" for item in buffer)
    buffer.clear()


def _coco_images(path: Path, report: SkipReport) -> Iterator[SourceImage]:
    names = _categories(iter_json_items(path, "categories.item"))
    images = {
        i["id"]: str(i.get("file_name") or i["id"])
        for i in iter_json_items(path, "images.item")
        if isinstance(i, Mapping) and isinstance(i.get("id"), int)
    }
    with tempfile.TemporaryDirectory(prefix="unsamv2-coco-") as folder:
        work = Path(folder)
        current: int | None = None
        buffer: list[dict[str, Any]] = []
        for index, a in enumerate(iter_json_items(path, "annotations.item")):
            image_id = a.get("image_id") if isinstance(a, Mapping) else None
            if not isinstance(image_id, int) or image_id not in images:
                report.add(
                    SkippedRecord(
                        "bad_record", "no image of that image_id", source=f"{path}#{index}"
                    )
                )
                continue
            if image_id != current and current is not None and buffer:
                _spill(work, current, buffer)
            current = image_id
            buffer.append(
                {
                    "key": str(a.get("id", index)),
                    "category": names.get(a.get("category_id"), str(a.get("category_id"))),
                    "rle": a.get("segmentation"),
                    "granularity": _granularity(a.get("granularity"), default=None),
                }
            )
            if len(buffer) >= _SPILL_BUFFER:
                _spill(work, current, buffer)
        if buffer and current is not None:
            _spill(work, current, buffer)
        for image_id, file_name in images.items():
            spilled = work / f"{image_id}.jsonl"
            if not spilled.exists():
                continue
            with open(spilled, encoding="utf-8") as lines:
                masks = tuple(SourceMask(**json.loads(line)) for line in lines)
            spilled.unlink()
            yield SourceImage(f"{path}#image{image_id}", file_name, masks)


def iter_source_images(paths: Iterable[Path], report: SkipReport) -> Iterator[SourceImage]:
    """Yield the images of pseudo-label JSON and COCO files, one at a time.

    Args:
        paths: Files, or folders searched recursively for ``*.json``.
        report: Receives unreadable files (``bad_file``) and orphan annotations (``bad_record``).
    """
    for path in expand_paths(paths):
        try:
            if file_kind(path) == "pseudo":
                yield _pseudo_label_image(path)
            else:
                yield from _coco_images(path, report)
        except ExportError as exc:
            report.add(SkippedRecord("bad_file", str(exc), source=str(path)))

"""The per-image pseudo-label JSON in the official UnSAMv2 schema, written atomically.

Top level: ``info``, ``licenses``, ``categories`` (one class ``fg``), ``image`` (one dict: id,
file_name, width, height) and ``annotations``. Each annotation has id, image_id, category_id 1,
iscrowd 0, area, bbox (XYWH pixels), segmentation (COCO RLE with ASCII counts), width, height,
is_divide (instance), is_part, granularity and instance_id. Files load with pycocotools.

A file is written to a temporary name in the same folder and renamed into place
(`os.replace`), so a reader sees either no file or a complete one; an existing complete file
means the image is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from labeling_pipeline.pseudo_labels.divide_conquer import PseudoMask
from labeling_pipeline.pseudo_labels.errors import PseudoLabelOutputError

SCHEMA_VERSION = "unsamv2-pseudo-labels-1"
CATEGORIES = [{"id": 1, "name": "fg", "supercategory": "fg"}]


def build_pseudo_label_json(
    masks: Sequence[PseudoMask],
    *,
    file_name: str,
    image_id: int,
    height: int,
    width: int,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the JSON document of one image.

    Args:
        masks: Output of the pipeline, with segmentations at (height, width).
        file_name: Image file name recorded in ``image``.
        image_id: Image id (also each annotation's image_id).
        height: Image height in pixels.
        width: Image width in pixels.
        info: Extra entries for the ``info`` dict (feature extractor, config, ...).
    """
    annotations = []
    for index, m in enumerate(masks, start=1):
        size = m.segmentation.get("size")
        if size != [height, width]:
            raise PseudoLabelOutputError(
                f"mask {index} has size {size}, the image is {[height, width]}"
            )
        annotations.append(
            {
                "id": index,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": 0,
                "area": int(m.area),
                "bbox": [float(v) for v in m.bbox_xywh],
                "segmentation": {"size": [height, width], "counts": m.segmentation["counts"]},
                "width": width,
                "height": height,
                "is_divide": not m.is_part,
                "is_part": m.is_part,
                "granularity": round(float(m.granularity), 6),
                "instance_id": int(m.instance_id),
                "source": m.source,
            }
        )
    return {
        "info": {
            "description": "UnSAMv2 granularity-aware divide-and-conquer pseudo-labels",
            "schema": SCHEMA_VERSION,
            "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **dict(info or {}),
        },
        "licenses": [],
        "categories": CATEGORIES,
        "image": {"id": image_id, "file_name": file_name, "width": width, "height": height},
        "annotations": annotations,
    }


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON to `path` through a temporary file in the same folder and `os.replace`.

    Raises:
        PseudoLabelOutputError: the folder is not writable or the disk is full (no partial file
            is left behind).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, separators=(",", ":"))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise PseudoLabelOutputError(f"cannot write {path}: {exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_pseudo_label_json(path: Path) -> dict[str, Any] | None:
    """Return a finished pseudo-label document, or None if `path` is missing or not one."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("annotations"), list)
        or not isinstance(payload.get("image"), dict)
    ):
        return None
    return payload


def granularities_of(payload: Mapping[str, Any]) -> list[float]:
    """Return the annotations' granularities (missing or non-numeric -> 1.0, as loaders do)."""
    out = []
    for annotation in payload.get("annotations", []):
        value = annotation.get("granularity") if isinstance(annotation, Mapping) else None
        try:
            number = float(value) if value is not None else 1.0
        except (TypeError, ValueError):
            number = 1.0
        out.append(number if number == number else 1.0)  # NaN -> 1.0
    return out

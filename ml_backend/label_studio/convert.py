"""Pure converters between Label Studio JSON and `core_model` types.

Interactive requests carry the smart regions of one group (same type, label and image) plus
their per-region controls, in percent coordinates of the original image. Granularity resolves
in this order: per-region TextArea, per-region Number, the clicked label's ``level``, the project
default; where several regions carry a value, the last one in the context wins.

Every result the decoder reads is first checked against its model in `schemas` (strict types,
finite numbers, bounded lists), so malformed input is a `BadRequestError`, never a crash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.errors import GranularityError
from core_model.masks import encode_brush_rle
from core_model.types import Box, Point, Prompts, validate_granularity
from labeling_pipeline.label_studio.config import ClickLabel, LabelConfigError, ProjectConfig
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.schemas import (
    MAX_CLICKS,
    ClickRegion,
    ClickValue,
    NumberRegion,
    TextRegion,
    validate,
)

_CLICK_TYPES = ("keypointlabels", "rectanglelabels")


@dataclass(frozen=True)
class ClickGroup:
    """One interactive request, decoded.

    Attributes:
        points_pct: (x, y, label) per click, x and y in percent of the image, label 1/0.
        box_pct: (x0, y0, x1, y1) in percent, from a smart rectangle, or None.
        label: The clicked label (with its target and level).
        control: Name of the clicked control (from_name).
        to_name: Image tag the regions belong to.
        granularity: Resolved granularity.
        granularity_source: "textarea", "number", "level" or "default".
        anchor_id: Id of the group's first region (result ids derive from it).
        original_hw: (height, width) Label Studio reported, or None.
    """

    points_pct: tuple[tuple[float, float, int], ...]
    box_pct: tuple[float, float, float, float] | None
    label: ClickLabel
    control: str
    to_name: str
    granularity: float
    granularity_source: str
    anchor_id: str
    original_hw: tuple[int, int] | None

    def prompts(
        self, height: int, width: int, *, box_pct: tuple[float, ...] | None = None
    ) -> Prompts:
        """Return prompts in pixels of an image of this size (a remembered box may be added)."""
        points = tuple(
            Point(x / 100 * width, y / 100 * height, lab) for x, y, lab in self.points_pct
        )
        chosen = self.box_pct if self.box_pct is not None else box_pct
        box = None
        if chosen is not None:
            x0, y0, x1, y1 = chosen
            box = Box(x0 / 100 * width, y0 / 100 * height, x1 / 100 * width, y1 / 100 * height)
        return Prompts(points=points, box=box)


_GRANULARITY_TEXT = re.compile(r"[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+")


def _number(value: float | None, what: str) -> float:
    if value is None:
        raise BadRequestError(f"{what} must be a number, got None")
    return float(value)


def _box_pct(value: ClickValue) -> tuple[float, float, float, float]:
    x, y = _number(value.x, "rectangle x"), _number(value.y, "rectangle y")
    w, h = _number(value.width, "rectangle width"), _number(value.height, "rectangle height")
    rotation = value.rotation or 0.0
    if rotation:  # a rotated box: use the axis-aligned box around its corners
        theta = np.deg2rad(rotation)
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=float)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = corners @ rot.T + [x, y]
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return float(max(x0, 0)), float(max(y0, 0)), float(min(x1, 100)), float(min(y1, 100))
    return x, y, x + w, y + h


def parse_granularity_text(text: str) -> float:
    """Read a granularity typed in the per-region text box.

    A plain decimal number; a decimal comma is accepted on purpose ("0,3" is 0.3, as typed on
    keyboards of comma locales). Signs, exponents, thousands separators, several numbers and
    words are refused.

    Raises:
        GranularityError: not such a number, or outside [0.1, 1.0].
    """
    stripped = text.strip()
    if not _GRANULARITY_TEXT.fullmatch(stripped):
        raise GranularityError(
            f"the granularity typed in the text box is not a number: {stripped[:40]!r} "
            "(type e.g. 0.35)"
        )
    return validate_granularity(float(stripped.replace(",", ".")))


def _granularity_from_controls(
    numbers: Sequence[NumberRegion], texts: Sequence[TextRegion], config: ProjectConfig
) -> tuple[float, str] | None:
    typed = [t for t in texts if t.from_name in config.textareas]
    if typed:
        raw = typed[-1].value.text if typed[-1].value is not None else None
        entries = raw if isinstance(raw, list) else [raw or ""]
        return parse_granularity_text(entries[-1] if entries else ""), "textarea"
    slid = [n for n in numbers if n.from_name in config.numbers]
    if slid:
        value = slid[-1].value.number if slid[-1].value is not None else None
        return validate_granularity(_number(value, "the granularity slider value")), "number"
    return None


def _click_label(region: ClickRegion, config: ProjectConfig) -> tuple[str, ClickLabel]:
    control = region.from_name
    labels = (region.value or ClickValue()).label_list(region.type)
    if not labels:
        raise BadRequestError(
            f"the {region.type} region has no label; select a label before clicking"
        )
    known = config.click_controls.get(control)
    if known is None:
        raise LabelConfigError(f"the labeling config has no smart control named {control!r}")
    label = known.get(labels[-1])
    if label is None:
        raise LabelConfigError(f"label {labels[-1]!r} is not a label of <{control}>")
    return control, label


_REGION_MODELS: dict[str, type[ClickRegion | NumberRegion | TextRegion]] = {
    "keypointlabels": ClickRegion,
    "rectanglelabels": ClickRegion,
    "number": NumberRegion,
    "textarea": TextRegion,
}


def _regions(results: Sequence[Any]) -> list[ClickRegion | NumberRegion | TextRegion]:
    """Check the results this backend reads (smart regions, per-region controls)."""
    checked = []
    for index, item in enumerate(results or []):
        kind = item.get("type") if isinstance(item, Mapping) else None
        model = _REGION_MODELS.get(kind) if isinstance(kind, str) else None
        if model is not None:
            checked.append(validate(model, item, where=f"params.context.result.{index}"))
    return checked


def _points_and_box(
    regions: Sequence[ClickRegion],
) -> tuple[list[tuple[float, float, int]], tuple[float, float, float, float] | None]:
    points, box = [], None
    for region in regions:
        value = region.value or ClickValue()
        if region.type == "keypointlabels":
            points.append(
                (
                    _number(value.x, "point x"),
                    _number(value.y, "point y"),
                    0 if region.is_positive is False else 1,
                )
            )
        else:
            box = _box_pct(value)
    if len(points) > MAX_CLICKS:
        raise BadRequestError(f"at most {MAX_CLICKS} clicks per request, got {len(points)}")
    return points, box


def parse_context(
    results: Sequence[Any], config: ProjectConfig, *, default_granularity: float
) -> ClickGroup | None:
    """Decode ``params.context.result``; None when it holds no smart click or box.

    Raises:
        BadRequestError: a smart region or per-region control of the wrong shape.
        LabelConfigError: a control or label the config does not have.
        GranularityError: a granularity that is not a number in [0.1, 1.0].
    """
    checked = _regions(results)
    regions = [r for r in checked if isinstance(r, ClickRegion)]
    if not regions:
        return None
    ids = {r.id for r in regions}
    numbers = [r for r in checked if isinstance(r, NumberRegion) and r.id in ids]
    texts = [r for r in checked if isinstance(r, TextRegion) and r.id in ids]
    points, box = _points_and_box(regions)
    control, label = _click_label(regions[-1], config)
    resolved = _granularity_from_controls(numbers, texts, config)
    if resolved is None:
        resolved = (
            (label.level, "level")
            if label.level is not None
            else (validate_granularity(default_granularity), "default")
        )
    last = regions[-1]
    width, height = last.original_width, last.original_height
    return ClickGroup(
        tuple(points),
        box,
        label,
        control,
        last.to_name,
        resolved[0],
        resolved[1],
        str(regions[0].id),
        (height, width) if width is not None and height is not None else None,
    )


def result_id(task_id: object, anchor: str) -> str:
    """Deterministic result id: accepting a new suggestion replaces the earlier one."""
    return "u2-" + hashlib.sha1(f"{task_id}:{anchor}".encode()).hexdigest()[:10]


def brush_result(
    mask: npt.NDArray[np.bool_],
    *,
    region_id: str,
    from_name: str,
    to_name: str,
    label: str,
    score: float,
) -> dict[str, Any]:
    """Encode an (H, W) mask as a Label Studio ``brushlabels`` result (0/255 RLE)."""
    height, width = mask.shape
    return {
        "id": region_id,
        "from_name": from_name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": [label]},
        "score": round(float(score), 4),
        "readonly": False,
    }


def prediction(
    results: list[dict[str, Any]], *, score: float, model_version: str
) -> dict[str, Any]:
    """One task's prediction entry for the ``results`` list of a /predict answer."""
    return {"result": results, "score": round(float(score), 4), "model_version": model_version}

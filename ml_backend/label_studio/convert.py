"""Pure converters between Label Studio JSON and `core_model` types.

Interactive requests carry the smart regions of one group (same type, label and image) plus
their per-region controls, in percent coordinates of the original image. Granularity resolves
in this order: per-region TextArea, per-region Number, the clicked label's ``level``, the project
default; where several regions carry a value, the last one in the context wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.errors import GranularityError
from core_model.masks import encode_brush_rle
from core_model.types import Box, Point, Prompts, validate_granularity
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.config import ClickLabel, LabelConfigError, ProjectConfig

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


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequestError(f"{what} must be a number, got {value!r}")
    return float(value)


def _box_pct(value: Mapping[str, Any]) -> tuple[float, float, float, float]:
    x, y = _number(value.get("x"), "rectangle x"), _number(value.get("y"), "rectangle y")
    w, h = (
        _number(value.get("width"), "rectangle width"),
        _number(value.get("height"), "rectangle height"),
    )
    rotation = float(value.get("rotation") or 0.0)
    if rotation:  # a rotated box: use the axis-aligned box around its corners
        theta = np.deg2rad(rotation)
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=float)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = corners @ rot.T + [x, y]
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return float(max(x0, 0)), float(max(y0, 0)), float(min(x1, 100)), float(min(y1, 100))
    return x, y, x + w, y + h


def _granularity_from_controls(
    controls: Sequence[Mapping[str, Any]], config: ProjectConfig
) -> tuple[float, str] | None:
    for kind, names in (("textarea", config.textareas), ("number", config.numbers)):
        values = [c for c in controls if c.get("type") == kind and c.get("from_name") in names]
        if not values:
            continue
        raw = values[-1].get("value", {})
        if kind == "textarea":
            texts = raw.get("text") or [""]
            text = str(texts[-1] if isinstance(texts, list) else texts).strip().replace(",", ".")
            try:
                number = float(text)
            except ValueError:
                raise GranularityError(
                    f"the granularity typed in the text box is not a number: {text!r}"
                ) from None
        else:
            number = _number(raw.get("number"), "the granularity slider value")
        return validate_granularity(number), kind
    return None


def _click_label(item: Mapping[str, Any], config: ProjectConfig) -> tuple[str, ClickLabel]:
    control = str(item.get("from_name", ""))
    value = item.get("value") or {}
    labels = value.get(str(item.get("type"))) or value.get("labels") or []
    if not labels:
        raise BadRequestError(
            f"the {item.get('type')} region has no label; select a label before clicking"
        )
    known = config.click_controls.get(control)
    if known is None:
        raise LabelConfigError(f"the labeling config has no smart control named {control!r}")
    label = known.get(str(labels[-1]))
    if label is None:
        raise LabelConfigError(f"label {labels[-1]!r} is not a label of <{control}>")
    return control, label


def parse_context(
    results: Sequence[Any], config: ProjectConfig, *, default_granularity: float
) -> ClickGroup | None:
    """Decode ``params.context.result``; None when it holds no smart click or box."""
    regions = [r for r in results or [] if isinstance(r, Mapping) and r.get("type") in _CLICK_TYPES]
    if not regions:
        return None
    ids = {r.get("id") for r in regions}
    controls = [
        r
        for r in results
        if isinstance(r, Mapping) and r.get("id") in ids and r.get("type") in ("number", "textarea")
    ]
    points, box = [], None
    for region in regions:
        value = region.get("value") or {}
        if region["type"] == "keypointlabels":
            points.append(
                (
                    _number(value.get("x"), "point x"),
                    _number(value.get("y"), "point y"),
                    0 if region.get("is_positive") is False else 1,
                )
            )
        else:
            box = _box_pct(value)
    control, label = _click_label(regions[-1], config)
    resolved = _granularity_from_controls(controls, config)
    if resolved is None:
        resolved = (
            (label.level, "level")
            if label.level is not None
            else (validate_granularity(default_granularity), "default")
        )
    width, height = regions[-1].get("original_width"), regions[-1].get("original_height")
    hw = (int(height), int(width)) if isinstance(width, int) and isinstance(height, int) else None
    return ClickGroup(
        tuple(points),
        box,
        label,
        control,
        str(regions[-1].get("to_name", "")),
        resolved[0],
        resolved[1],
        str(regions[0].get("id", "")),
        hw,
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

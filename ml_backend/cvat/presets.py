"""Granularity presets and the CVAT functions they become.

CVAT sends no user parameter to a function, so the granularity is chosen by choosing the
function: every preset (e.g. ``fine:0.2``) yields one interactor ``unsamv2-interactor-fine``,
one detector ``unsamv2-detector-fine`` and one tracker ``unsamv2-tracker-fine``.
`function_annotations` gives the ``metadata.annotations``
that CVAT reads (all strings; false flags omitted because CVAT parses them with ``bool(str)``).

Presets are written compactly (``"fine:0.2,whole:1.0@ls:3"``, detector defaults) or as a JSON
list of objects that may also set the preset's detector (`parse_presets_json`)::

    [{"name": "fine", "granularity": 0.2, "points_per_side": 24, "granularities": [0.2, 0.5]},
     {"name": "whole", "granularity": 1.0, "scope": "ls:3", "stability_score_thresh": 0.95}]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core_model.errors import GranularityError, UnSAMv2Error
from core_model.types import validate_granularity
from labeling_pipeline.store.versions import GLOBAL_SCOPE, LineageError, check_scope
from ml_backend.whole_image_defaults import (
    MAX_POINTS_PER_SIDE,
    POINTS_PER_SIDE,
    PRED_IOU_THRESH,
    STABILITY_SCORE_THRESH,
)

FUNCTION_PREFIX = "unsamv2"
DETECTOR_LABEL = "object"
"""The one label of every detector (type mask); map it to a task label in CVAT."""

FunctionKind = Literal["interactor", "detector", "tracker"]
KINDS: tuple[FunctionKind, ...] = ("interactor", "detector", "tracker")

# A preset name becomes part of a Nuclio function name (a DNS-1123 label, at most 63 characters)
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


class PresetError(UnSAMv2Error, ValueError):
    """A granularity preset list is malformed."""


@dataclass(frozen=True)
class DetectorSettings:
    """How a preset's detector segments a whole frame (defaults shared with Label Studio).

    Attributes:
        points_per_side: Grid of points_per_side^2 clicks, 1 to `MAX_POINTS_PER_SIDE`.
        pred_iou_thresh: Minimum predicted IoU of a mask (a request's ``threshold`` replaces it).
        stability_score_thresh: Minimum stability score of a mask.
        box_nms_thresh: Box IoU above which the lower-scored mask is dropped; None keeps the
            segmenter's default.
        granularities: Granularities decoded for every grid click; empty means the preset's
            own granularity.
    """

    points_per_side: int = POINTS_PER_SIDE
    pred_iou_thresh: float = PRED_IOU_THRESH
    stability_score_thresh: float = STABILITY_SCORE_THRESH
    box_nms_thresh: float | None = None
    granularities: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.points_per_side <= MAX_POINTS_PER_SIDE:
            raise PresetError(
                f"points_per_side must lie in [1, {MAX_POINTS_PER_SIDE}], "
                f"got {self.points_per_side}"
            )
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise PresetError(f"{name} must lie in [0, 1], got {value}")
        try:
            values = tuple(validate_granularity(g) for g in self.granularities)
        except GranularityError as exc:
            raise PresetError(f"granularities: {exc}") from None
        object.__setattr__(self, "granularities", tuple(dict.fromkeys(values)))


@dataclass(frozen=True)
class Preset:
    """A named granularity, served by one project's model lineage.

    Attributes:
        name: Lower-case slug used in function names (``[a-z0-9-]``, at most 40 characters).
        granularity: In [0.1, 1.0]; 0.1 fine parts, 1.0 whole objects.
        scope: Lineage whose current version serves it (``global``, ``ls:<id>``,
            ``project:<id>``); a scope without a version of its own is served global's.
        detector: Whole-image settings of the preset's detector.
    """

    name: str
    granularity: float
    scope: str = GLOBAL_SCOPE
    detector: DetectorSettings = field(default_factory=DetectorSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PresetError(
                f"preset name {self.name!r} must be 1-40 lower-case letters, digits or inner "
                "hyphens (it becomes part of a function name)"
            )
        try:
            granularity = validate_granularity(self.granularity)
        except GranularityError as exc:
            raise PresetError(f"preset {self.name!r}: {exc}") from None
        object.__setattr__(self, "granularity", granularity)
        try:
            object.__setattr__(self, "scope", check_scope(self.scope))
        except LineageError as exc:
            raise PresetError(f"preset {self.name!r}: {exc}") from None

    def __str__(self) -> str:
        scope = "" if self.scope == GLOBAL_SCOPE else f"@{self.scope}"
        return f"{self.name}:{self.granularity:g}{scope}"

    @property
    def detector_granularities(self) -> tuple[float, ...]:
        """Granularities the detector decodes: its own list, else the preset's granularity."""
        return self.detector.granularities or (self.granularity,)


DEFAULT_PRESETS: tuple[Preset, ...] = (
    Preset("fine", 0.2),
    Preset("part", 0.5),
    Preset("whole", 1.0),
)


def parse_presets(text: str) -> tuple[Preset, ...]:
    """Parse ``"name:granularity[@scope],..."`` (e.g. ``"fine:0.2,whole:1.0,p3:0.5@ls:3"``).

    Text starting with ``[`` (or ``{``) is read as JSON instead (`parse_presets_json`).

    Raises:
        PresetError: empty list, an item without ``:``, a bad name or value, or a repeated name.
    """
    if text.lstrip()[:1] in ("[", "{"):
        return parse_presets_json(text)
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise PresetError("give at least one preset as name:granularity, e.g. 'part:0.5'")
    presets = []
    for item in items:
        item, _, scope = item.partition("@")
        name, sep, raw = item.partition(":")
        if not sep:
            raise PresetError(f"preset {item!r} must be name:granularity, e.g. 'part:0.5'")
        try:
            value = float(raw)
        except ValueError:
            raise PresetError(f"preset {item!r}: granularity {raw!r} is not a number") from None
        presets.append(Preset(name.strip(), value, scope.strip() or GLOBAL_SCOPE))
    return check_unique(presets)


class _PresetSpec(BaseModel):
    """One preset as JSON: `Preset` fields plus the `DetectorSettings` fields, flat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(strict=True)]
    granularity: float
    scope: Annotated[str, Field(strict=True)] = GLOBAL_SCOPE
    points_per_side: Annotated[int, Field(strict=True)] = POINTS_PER_SIDE
    pred_iou_thresh: float = PRED_IOU_THRESH
    stability_score_thresh: float = STABILITY_SCORE_THRESH
    box_nms_thresh: float | None = None
    granularities: list[float] = []

    def preset(self) -> Preset:
        detector = DetectorSettings(
            points_per_side=self.points_per_side,
            pred_iou_thresh=self.pred_iou_thresh,
            stability_score_thresh=self.stability_score_thresh,
            box_nms_thresh=self.box_nms_thresh,
            granularities=tuple(self.granularities),
        )
        return Preset(self.name, self.granularity, self.scope, detector)


def parse_presets_json(text: str) -> tuple[Preset, ...]:
    """Parse a JSON list of preset objects.

    Keys: ``name``, ``granularity``, and optionally ``scope``, ``points_per_side``,
    ``pred_iou_thresh``, ``stability_score_thresh``, ``box_nms_thresh``, ``granularities``.

    Raises:
        PresetError: not JSON, not a list of objects, an unknown key, a bad value or a
            repeated name.
    """
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise PresetError(f"presets are not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise PresetError("JSON presets must be a list of objects")
    presets = []
    for index, item in enumerate(data):
        try:
            spec = _PresetSpec.model_validate(item)
        except ValidationError as exc:
            raise PresetError(f"preset {index}: {_first_problem(exc)}") from None
        try:
            presets.append(spec.preset())
        except PresetError as exc:
            raise PresetError(f"preset {spec.name!r}: {exc}") from None
    return check_unique(presets)


def read_presets_file(path: Path) -> tuple[Preset, ...]:
    """Read presets from a file: a JSON list (see `parse_presets_json`) or the compact text.

    Raises:
        PresetError: the file cannot be read, or its presets are malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"cannot read presets file {path}: {exc}") from None
    return parse_presets(text)


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return "not a preset object"
    location = ".".join(str(part) for part in errors[0]["loc"])
    return f"{location}: {errors[0]['msg']}" if location else str(errors[0]["msg"])


def check_unique(presets: Iterable[Preset]) -> tuple[Preset, ...]:
    """Return the presets as a tuple; raise `PresetError` if empty or a name repeats."""
    result = tuple(presets)
    if not result:
        raise PresetError("at least one granularity preset is required")
    names = [p.name for p in result]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PresetError(f"preset names must be unique, repeated: {', '.join(repeated)}")
    return result


@dataclass(frozen=True)
class CvatFunction:
    """One function as CVAT sees it: a kind (interactor, detector, tracker) at a granularity."""

    kind: FunctionKind
    preset: Preset

    @property
    def name(self) -> str:
        """Function id, e.g. ``unsamv2-interactor-fine``."""
        return f"{FUNCTION_PREFIX}-{self.kind}-{self.preset.name}"

    @property
    def granularity(self) -> float:
        """The preset's granularity."""
        return self.preset.granularity

    @property
    def display_name(self) -> str:
        """Name shown in CVAT's model lists."""
        suffix = {"interactor": "", "detector": ", whole image", "tracker": ", tracker"}
        return f"UnSAMv2 {self.preset.name} (g={self.granularity:g}){suffix[self.kind]}"

    @property
    def description(self) -> str:
        """Nuclio ``spec.description``: says the granularity."""
        what = {
            "interactor": "click-to-mask",
            "detector": "automatic masks",
            "tracker": "tracking of rectangles, polygons and masks",
        }[self.kind]
        return (
            f"UnSAMv2 {what} at granularity {self.granularity:g} (preset {self.preset.name}; "
            "0.1 = fine parts .. 1.0 = whole objects)"
        )


def catalog(presets: Sequence[Preset]) -> dict[str, CvatFunction]:
    """Return every function of the presets by name: interactors, detectors, then trackers."""
    unique = check_unique(presets)
    return {f.name: f for f in (CvatFunction(kind, p) for kind in KINDS for p in unique)}


def function_annotations(function: CvatFunction) -> dict[str, str]:
    """Return the Nuclio ``metadata.annotations`` CVAT reads for a function (strings only).

    Interactors: ``version`` "2" (the UI refuses older interactors), ``min_pos_points`` "0"
    (a box alone is a valid prompt), ``min_neg_points`` "0" (negative clicks allowed) and
    ``startswith_box_optional`` "true"; ``startswith_box`` is left out because CVAT reads it
    with ``bool(...)``, for which any non-empty string, "false" included, is true.
    Detectors: a ``spec`` JSON string with one mask label, `DETECTOR_LABEL`. Trackers: only
    name and type (CVAT's UI tracks with the label the user picks).
    """
    annotations = {"name": function.display_name, "type": function.kind}
    if function.kind == "interactor":
        annotations.update(
            {
                "version": "2",
                "min_pos_points": "0",
                "min_neg_points": "0",
                "startswith_box_optional": "true",
                "help_message": (
                    "Click the object (positive points) and, to exclude regions, the "
                    "background (negative points); you may draw a box first. Granularity "
                    f"{function.granularity:g}: choose another UnSAMv2 model for finer parts "
                    "or whole objects."
                ),
            }
        )
    elif function.kind == "detector":
        annotations["spec"] = json.dumps([{"id": 0, "name": DETECTOR_LABEL, "type": "mask"}])
    return annotations

"""Per-project backend options, set from Label Studio's "extra params" of the ML backend.

Label Studio sends the JSON the user typed in the model's extra params with every /setup; it is
validated and stored on the project. Unknown keys and bad values are refused with a message
(Label Studio shows it when connecting the model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ml_backend.errors import BadRequestError, one_line
from ml_backend.label_studio.schemas import ExtraParams, validate
from ml_backend.whole_image_defaults import (
    POINTS_PER_SIDE,
    PRED_IOU_THRESH,
    STABILITY_SCORE_THRESH,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectSettings:
    """Options of one project.

    Attributes:
        default_granularity: Used when a click carries no granularity and its label no level.
        preannotate: Answer plain /predict calls (opening a task, batch predictions) with
            whole-image masks.
        preannotate_granularity: Granularity of those masks.
        preannotate_label: BrushLabels label given to them (default: the first label).
        max_regions: At most this many masks per image (1-200).
        points_per_side: Grid of the whole-image segmentation (1-32 per side).
        pred_iou_thresh: Minimum predicted IoU of a whole-image mask.
        stability_score_thresh: Minimum stability of a whole-image mask.
        specialist_score: Top-level score of a task specialist's prediction: ``"confidence"``
            (mean region score) or ``"uncertainty"`` (share of pixels with 0.3 < p < 0.7, for
            sorting tasks by it in Label Studio's Data Manager).
    """

    default_granularity: float = 0.5
    preannotate: bool = False
    preannotate_granularity: float = 1.0
    preannotate_label: str | None = None
    max_regions: int = 30
    points_per_side: int = POINTS_PER_SIDE
    pred_iou_thresh: float = PRED_IOU_THRESH
    stability_score_thresh: float = STABILITY_SCORE_THRESH
    specialist_score: Literal["confidence", "uncertainty"] = "confidence"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready options."""
        return asdict(self)


_NAMES = {f.name for f in fields(ProjectSettings)}


def parse_extra_params(extra: Any) -> dict[str, Any]:
    """Validate Label Studio's extra params; return the known options they set.

    Raises:
        BadRequestError: not an object, an unknown key, or a value of the wrong type or range
            (e.g. ``points_per_side`` above 32, ``max_regions`` above 200).
    """
    if extra in (None, "", {}):
        return {}
    if not isinstance(extra, Mapping):
        raise BadRequestError("the model's extra params must be a JSON object")
    unknown = sorted(str(key) for key in set(extra) - _NAMES)
    if unknown:
        raise BadRequestError(one_line(f"unknown extra params {unknown}; known: {sorted(_NAMES)}"))
    options = validate(ExtraParams, extra, where="extra_params")
    return options.model_dump(exclude_unset=True)


def project_settings(
    stored: Mapping[str, Any] | None, *, default_granularity: float
) -> ProjectSettings:
    """Options from a project's stored config over the process defaults.

    Stored values are checked again: an option stored before a limit existed (or edited in
    the database) is dropped with a warning instead of being served.
    """
    values: dict[str, Any] = {}
    for key, value in (stored or {}).items():
        if key not in _NAMES:
            continue
        try:
            values.update(parse_extra_params({key: value}))
        except BadRequestError as exc:
            logger.warning("ignoring the stored project option %s: %s", key, exc)
    values.setdefault("default_granularity", default_granularity)
    return ProjectSettings(**values)

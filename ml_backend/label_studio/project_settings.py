"""Per-project backend options, set from Label Studio's "extra params" of the ML backend.

Label Studio sends the JSON the user typed in the model's extra params with every /setup; it is
validated and stored on the project. Unknown keys and bad values are refused with a message
(Label Studio shows it when connecting the model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from core_model.types import validate_granularity
from ml_backend.errors import BadRequestError


@dataclass(frozen=True)
class ProjectSettings:
    """Options of one project.

    Attributes:
        default_granularity: Used when a click carries no granularity and its label no level.
        preannotate: Answer plain /predict calls (opening a task, batch predictions) with
            whole-image masks.
        preannotate_granularity: Granularity of those masks.
        preannotate_label: BrushLabels label given to them (default: the first label).
        max_regions: At most this many masks per image.
        points_per_side: Grid of the whole-image segmentation.
        pred_iou_thresh: Minimum predicted IoU of a whole-image mask.
        stability_score_thresh: Minimum stability of a whole-image mask.
    """

    default_granularity: float = 0.5
    preannotate: bool = False
    preannotate_granularity: float = 1.0
    preannotate_label: str | None = None
    max_regions: int = 30
    points_per_side: int = 16
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.92

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready options."""
        return asdict(self)


_NAMES = {f.name for f in fields(ProjectSettings)}


def _check(key: str, value: Any) -> Any:
    if key in ("default_granularity", "preannotate_granularity"):
        return validate_granularity(value)
    if key == "preannotate":
        if not isinstance(value, bool):
            raise BadRequestError(f"extra param {key} must be true or false")
        return value
    if key == "preannotate_label":
        return None if value is None else str(value)
    if key in ("max_regions", "points_per_side"):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise BadRequestError(f"extra param {key} must be an integer from 1 to 1000")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadRequestError(f"extra param {key} must be a number in [0, 1]")
    return float(value)


def parse_extra_params(extra: Any) -> dict[str, Any]:
    """Validate Label Studio's extra params; return the known options they set."""
    if extra in (None, "", {}):
        return {}
    if not isinstance(extra, Mapping):
        raise BadRequestError("the model's extra params must be a JSON object")
    unknown = sorted(set(extra) - _NAMES)
    if unknown:
        raise BadRequestError(f"unknown extra params {unknown}; known: {sorted(_NAMES)}")
    return {key: _check(key, value) for key, value in extra.items()}


def project_settings(
    stored: Mapping[str, Any] | None, *, default_granularity: float
) -> ProjectSettings:
    """Options from a project's stored config over the process defaults."""
    values = {k: v for k, v in (stored or {}).items() if k in _NAMES}
    values.setdefault("default_granularity", default_granularity)
    return ProjectSettings(**values)

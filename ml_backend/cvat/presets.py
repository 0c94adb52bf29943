"""Granularity presets and the CVAT functions they become.

CVAT sends no user parameter to a function, so the granularity is chosen by choosing the
function: every preset (e.g. ``fine:0.2``) yields one interactor ``unsamv2-interactor-fine`` and
one detector ``unsamv2-detector-fine``. `function_annotations` gives the ``metadata.annotations``
that CVAT reads (all strings; false flags omitted because CVAT parses them with ``bool(str)``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from core_model.errors import GranularityError, UnSAMv2Error
from core_model.types import validate_granularity
from labeling_pipeline.store.versions import GLOBAL_SCOPE, LineageError, check_scope

FUNCTION_PREFIX = "unsamv2"
DETECTOR_LABEL = "object"
"""The one label of every detector (type mask); map it to a task label in CVAT."""

FunctionKind = Literal["interactor", "detector"]
KINDS: tuple[FunctionKind, ...] = ("interactor", "detector")

# A preset name becomes part of a Nuclio function name (a DNS-1123 label, at most 63 characters)
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


class PresetError(UnSAMv2Error, ValueError):
    """A granularity preset list is malformed."""


@dataclass(frozen=True)
class Preset:
    """A named granularity, served by one project's model lineage.

    Attributes:
        name: Lower-case slug used in function names (``[a-z0-9-]``, at most 40 characters).
        granularity: In [0.1, 1.0]; 0.1 fine parts, 1.0 whole objects.
        scope: Lineage whose current version serves it (``global``, ``ls:<id>``,
            ``project:<id>``); a scope without a version of its own is served global's.
    """

    name: str
    granularity: float
    scope: str = GLOBAL_SCOPE

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


DEFAULT_PRESETS: tuple[Preset, ...] = (
    Preset("fine", 0.2),
    Preset("part", 0.5),
    Preset("whole", 1.0),
)


def parse_presets(text: str) -> tuple[Preset, ...]:
    """Parse ``"name:granularity[@scope],..."`` (e.g. ``"fine:0.2,whole:1.0,p3:0.5@ls:3"``).

    Raises:
        PresetError: empty list, an item without ``:``, a bad name or value, or a repeated name.
    """
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
    """One function as CVAT sees it: a kind (interactor or detector) at a preset granularity."""

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
        suffix = "" if self.kind == "interactor" else ", whole image"
        return f"UnSAMv2 {self.preset.name} (g={self.granularity:g}){suffix}"

    @property
    def description(self) -> str:
        """Nuclio ``spec.description``: says the granularity."""
        what = "click-to-mask" if self.kind == "interactor" else "automatic masks"
        return (
            f"UnSAMv2 {what} at granularity {self.granularity:g} (preset {self.preset.name}; "
            "0.1 = fine parts .. 1.0 = whole objects)"
        )


def catalog(presets: Sequence[Preset]) -> dict[str, CvatFunction]:
    """Return every function of the presets by name: interactors first, then detectors."""
    unique = check_unique(presets)
    return {f.name: f for f in (CvatFunction(kind, p) for kind in KINDS for p in unique)}


def function_annotations(function: CvatFunction) -> dict[str, str]:
    """Return the Nuclio ``metadata.annotations`` CVAT reads for a function (strings only).

    Interactors: ``version`` "2" (the UI refuses older interactors), ``min_pos_points`` "0"
    (a box alone is a valid prompt), ``min_neg_points`` "0" (negative clicks allowed) and
    ``startswith_box_optional`` "true"; ``startswith_box`` is left out because CVAT reads it
    with ``bool(...)``, for which any non-empty string, "false" included, is true.
    Detectors: a ``spec`` JSON string with one mask label, `DETECTOR_LABEL`.
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
    else:
        annotations["spec"] = json.dumps([{"id": 0, "name": DETECTOR_LABEL, "type": "mask"}])
    return annotations

"""CVAT detectors of the current task specialists, in direct (dashboard) mode.

Every current specialist version in the store (one per lineage ``specialist:<project
id>:<labels>``) is listed as a detector ``unsamv2-specialist-<project id>-<labels>`` (lowercase,
``[a-z0-9-]``, at most `MAX_NAME_CHARS`), whose labels are the specialist's labels. Invoking it
runs the specialist on the frame: the probability is cut at the fixed `THRESHOLD` (never
stretched per image) and every connected component of at least `MIN_AREA_PX` pixels becomes
one mask shape (with its outline polygon in ``points``), its confidence the mean probability
inside it. A request's ``threshold`` is the minimum confidence of a shape. The functions follow
the store: a newly published version is listed at the next listing, a retired one answers 404.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core_model.specialist import regions
from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
from labeling_pipeline.specialist.service import SCOPE_PREFIX, list_specialists
from labeling_pipeline.store import Store
from ml_backend.cvat import codec
from ml_backend.cvat.presets import FUNCTION_PREFIX
from ml_backend.cvat.service import CvatOptions, UnknownFunctionError
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.specialist_predictions import (
    MIN_AREA_PX,
    THRESHOLD,
    specialist_probabilities,
)

logger = logging.getLogger(__name__)

NAME_PREFIX = f"{FUNCTION_PREFIX}-specialist-"
MAX_NAME_CHARS = 63  # a Kubernetes/Nuclio resource name
_NOT_NAME = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class SpecialistFunction:
    """One current specialist version as a CVAT detector.

    Attributes:
        name: Function id, ``unsamv2-specialist-<project id>-<labels>``.
        version: The specialist version it serves.
        project_id: Store project id.
        labels: Label names (the detector's labels, in the specialist's channel order).
        checkpoint: The version's checkpoint file.
    """

    name: str
    version: str
    project_id: int
    labels: tuple[str, ...]
    checkpoint: Path

    @property
    def display_name(self) -> str:
        """Name shown in CVAT's model lists."""
        return f"UnSAMv2 specialist {', '.join(self.labels)} (project {self.project_id})"

    @property
    def description(self) -> str:
        """Nuclio ``spec.description``."""
        return (
            f"Task specialist {self.version} of project {self.project_id}: masks of "
            f"{', '.join(self.labels)} (probability cut at {THRESHOLD:g})"
        )

    def entry(self) -> dict[str, Any]:
        """Return the function as Nuclio's dashboard lists it (the fields CVAT reads)."""
        spec = [{"id": i, "name": label, "type": "mask"} for i, label in enumerate(self.labels)]
        annotations = {"name": self.display_name, "type": "detector", "spec": json.dumps(spec)}
        return {
            "metadata": {"name": self.name, "annotations": annotations},
            "spec": {"description": self.description},
            "status": {"state": "ready"},
        }


def function_name(project_id: int, labels: tuple[str, ...], scope: str) -> str:
    """Return the CVAT name of a specialist lineage, ``[a-z0-9-]``, at most 63 characters.

    Names that had to be cut get a short hash of the scope so that they stay distinct.
    """
    slug = _NOT_NAME.sub("-", "-".join(labels).lower()).strip("-") or "labels"
    name = f"{NAME_PREFIX}{int(project_id)}-{slug}"
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha1(scope.encode("utf-8")).hexdigest()[:8]
    return f"{name[: MAX_NAME_CHARS - 9].rstrip('-')}-{digest}"


def _labels(row: Mapping[str, Any]) -> tuple[str, ...]:
    labels = row.get("labels")
    if isinstance(labels, list) and labels:
        return tuple(str(label) for label in labels)
    return tuple(str(row["scope"]).split(":", 2)[2].split("+"))


def specialist_functions(store: Store) -> dict[str, SpecialistFunction]:
    """Return a detector per current specialist version in the store, by name."""
    found: dict[str, SpecialistFunction] = {}
    for row in list_specialists(store):
        if not row["current"]:
            continue
        scope = str(row["scope"])
        project_id = int(scope[len(SCOPE_PREFIX) :].split(":", 1)[0])
        labels = _labels(row)
        name = function_name(project_id, labels, scope)
        if name in found:  # labels that differ only in case or punctuation
            digest = hashlib.sha1(scope.encode("utf-8")).hexdigest()[:8]
            name = f"{name[: MAX_NAME_CHARS - 9].rstrip('-')}-{digest}"
        found[name] = SpecialistFunction(
            name, str(row["name"]), project_id, labels, Path(row["path"]) / CHECKPOINT_FILE
        )
    return found


def is_specialist_name(name: str) -> bool:
    """Whether a function name belongs to the specialist detectors."""
    return name.startswith(NAME_PREFIX)


def specialist_function(store: Store, name: str) -> SpecialistFunction:
    """Return the current specialist detector called `name`.

    Raises:
        UnknownFunctionError: no current specialist has that name (HTTP 404).
    """
    functions = specialist_functions(store)
    found = functions.get(name)
    if found is None:
        known = ", ".join(functions) or "none"
        raise UnknownFunctionError(
            f"no specialist function {name!r} here; current specialists: {known}"
        )
    return found


def invoke_specialist(
    function: SpecialistFunction, body: object, options: CvatOptions
) -> list[dict[str, Any]]:
    """Run a specialist detector on a CVAT request body; return its mask shapes, largest first.

    Raises:
        BadRequestError, InvalidImageError: bad request.
        UnSAMv2Error: the specialist cannot be loaded (e.g. its base weights changed).
    """
    if not isinstance(body, Mapping):
        raise BadRequestError("the request body must be a JSON object")
    started = time.perf_counter()
    threshold = codec.decode_threshold(body)
    frame = codec.decode_frame(body, max_pixels=options.max_image_pixels)
    loaded, prob = specialist_probabilities(function.version, function.checkpoint, frame.load())
    shapes = []
    for region in regions(prob, threshold=THRESHOLD, min_area_px=MIN_AREA_PX):
        if threshold is not None and region.score < threshold:
            continue
        label = loaded.labels[max(region.class_index - 1, 0)]
        shape = codec.detector_shape(
            region.mask, region.score, label=label, tolerance_px=options.polygon_tolerance_px
        )
        if shape is not None:
            shapes.append(shape)
    logger.info(
        "cvat specialist %s (%s) threshold=%s: %d mask(s) in %.0f ms",
        function.name,
        function.version,
        threshold,
        len(shapes),
        (time.perf_counter() - started) * 1000,
    )
    return shapes

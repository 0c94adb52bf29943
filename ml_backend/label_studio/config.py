"""Parse a Label Studio labeling config into what the backend needs.

Click labels carry two custom attributes: ``target`` (the BrushLabels label to emit) and
``level`` (a coarse granularity). Per-region ``Number`` and ``TextArea`` controls carry a finer
granularity. Never name a ``<Label>`` attribute ``granularity``: Label Studio reserves it and
its labeling UI crashes on such a config.
"""

from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET  # noqa: N817
from dataclasses import dataclass, field

from core_model.errors import UnSAMv2Error


class LabelConfigError(UnSAMv2Error, ValueError):
    """The labeling config cannot be used by this backend."""


@dataclass(frozen=True)
class ClickLabel:
    """A label of a KeyPointLabels or RectangleLabels control.

    Attributes:
        value: The label as shown in the UI.
        target: BrushLabels label to emit (the ``target`` attribute, else the label itself).
        level: Granularity from the ``level`` attribute, if any.
    """

    value: str
    target: str
    level: float | None


@dataclass(frozen=True)
class BrushControl:
    """A BrushLabels control: its name, the image it draws on, its labels."""

    name: str
    to_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class ProjectConfig:
    """The parts of a labeling config this backend uses.

    Attributes:
        images: Image tag name -> task data key (``$image`` -> ``image``).
        brushes: BrushLabels controls.
        click_controls: KeyPointLabels / RectangleLabels name -> {label value -> ClickLabel}.
        numbers: Names of per-region Number controls.
        textareas: Names of per-region TextArea controls.
    """

    images: dict[str, str] = field(default_factory=dict)
    brushes: tuple[BrushControl, ...] = ()
    click_controls: dict[str, dict[str, ClickLabel]] = field(default_factory=dict)
    numbers: frozenset[str] = frozenset()
    textareas: frozenset[str] = frozenset()

    def brush_for(self, image_name: str) -> BrushControl:
        """Return the BrushLabels control drawing on an image tag."""
        for brush in self.brushes:
            if brush.to_name == image_name:
                return brush
        raise LabelConfigError(f'the labeling config has no <BrushLabels toName="{image_name}">')

    def first_image(self) -> tuple[str, str]:
        """Return (image tag name, task data key) of the first image."""
        if not self.images:
            raise LabelConfigError("the labeling config has no <Image> tag")
        return next(iter(self.images.items()))


def _level(tag: ET.Element, label: str) -> float | None:
    raw = tag.get("level")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise LabelConfigError(f"label {label!r}: level={raw!r} is not a number") from None
    if not math.isfinite(value) or not 0.1 <= value <= 1.0:
        raise LabelConfigError(f"label {label!r}: level={raw!r} must lie in [0.1, 1.0]")
    return value


def _labels(control: ET.Element) -> dict[str, ClickLabel]:
    labels = {}
    for tag in control.iter("Label"):
        value = tag.get("value")
        if value is None:
            continue
        if tag.get("granularity") is not None:
            raise LabelConfigError(
                f"label {value!r} has an attribute named 'granularity', which Label Studio "
                "reserves (its UI crashes); use 'level' instead"
            )
        labels[value] = ClickLabel(value, tag.get("target") or value, _level(tag, value))
    return labels


@functools.lru_cache(maxsize=64)
def parse_label_config(xml: str) -> ProjectConfig:
    """Parse (and cache) a labeling config.

    Raises:
        LabelConfigError: not XML, or a label with an invalid level / reserved attribute.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"the labeling config is not valid XML: {exc}") from None
    images = {
        tag.get("name", ""): tag.get("value", "$image").lstrip("$")
        for tag in root.iter("Image")
        if tag.get("name")
    }
    brushes = tuple(
        BrushControl(
            tag.get("name", ""),
            tag.get("toName", ""),
            tuple(label.get("value", "") for label in tag.iter("Label")),
        )
        for tag in root.iter("BrushLabels")
    )
    clicks = {
        tag.get("name", ""): _labels(tag)
        for kind in ("KeyPointLabels", "RectangleLabels")
        for tag in root.iter(kind)
    }
    per_region = [tag for tag in root.iter() if tag.get("perRegion", "").lower() == "true"]
    return ProjectConfig(
        images=images,
        brushes=brushes,
        click_controls=clicks,
        numbers=frozenset(t.get("name", "") for t in per_region if t.tag == "Number"),
        textareas=frozenset(t.get("name", "") for t in per_region if t.tag == "TextArea"),
    )

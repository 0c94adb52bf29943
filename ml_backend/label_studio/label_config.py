"""Labeling configs for granularity-controlled smart clicks.

For each object label the config has one BrushLabels label (what annotators keep), one smart
keypoint label per granularity level (``target`` names the brush label, ``level`` the
granularity), one smart rectangle label, a per-region slider and a per-region text box for an
exact granularity. Label attributes never use the name ``granularity`` (reserved by Label
Studio; its UI crashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from xml.sax.saxutils import quoteattr

from core_model.types import GRANULARITY_MAX, GRANULARITY_MIN, granularity_or_none
from labeling_pipeline.label_studio.config import LabelConfigError

_PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#008080",
    "#9a6324",
    "#800000",
    "#000075",
)
SHIPPED_CONFIG = "unsamv2.xml"


def level_label(label: str, level: float) -> str:
    """Name of the smart keypoint label of `label` at `level` (e.g. "Car @0.5")."""
    return f"{label} @{level:g}"


def _tint(colour: str, level: float) -> str:
    """Lighter for fine levels, full colour for whole objects."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    mix = 0.6 * (1.0 - level)
    return "#" + "".join(f"{round(c + (255 - c) * mix):02x}" for c in rgb)


def build_label_config(labels: Sequence[str], levels: Sequence[float]) -> str:
    """Return a labeling config (XML) for these object labels and granularity levels.

    Raises:
        LabelConfigError: no labels, duplicate labels, or a level outside [0.1, 1.0].
    """
    names = [label.strip() for label in labels if label.strip()]
    if not names or len(set(names)) != len(names):
        raise LabelConfigError("give one or more distinct labels")
    if not levels or any(granularity_or_none(level) is None for level in levels):
        raise LabelConfigError(f"levels must lie in [{GRANULARITY_MIN}, {GRANULARITY_MAX}]")
    ordered = sorted(set(levels))
    colours = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}
    brush = "\n".join(
        f"    <Label value={quoteattr(n)} background={quoteattr(colours[n])}/>" for n in names
    )
    clicks = "\n".join(
        f"    <Label value={quoteattr(level_label(n, lv))} target={quoteattr(n)} "
        f'level="{lv:g}" background={quoteattr(_tint(colours[n], lv))}/>'
        for n in names
        for lv in ordered
    )
    boxes = "\n".join(
        f"    <Label value={quoteattr(n)} target={quoteattr(n)} "
        f"background={quoteattr(colours[n])}/>"
        for n in names
    )
    header = (
        "Pick a label (@0.1 fine parts .. @1 whole object), then click the object with "
        "the Auto-Detect tool; Alt+click removes. Slider or text box: exact granularity."
    )
    lines = [
        "<View>",
        '  <Image name="image" value="$image" zoom="true" zoomControl="true"/>',
        f"  <Header value={quoteattr(header)}/>",
        '  <BrushLabels name="mask" toName="image">',
        brush,
        "  </BrushLabels>",
        '  <KeyPointLabels name="click" toName="image" smartOnly="true">',
        clicks,
        "  </KeyPointLabels>",
        '  <RectangleLabels name="box" toName="image" smartOnly="true">',
        boxes,
        "  </RectangleLabels>",
        '  <Number name="granularity" toName="image" perRegion="true" slider="true"'
        ' min="0.1" max="1.0" step="0.05"/>',
        '  <TextArea name="granularity_text" toName="image" perRegion="true"'
        ' maxSubmissions="1" editable="true"'
        ' placeholder="exact granularity 0.1-1.0, Enter applies"/>',
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def shipped_config() -> str:
    """The ready-made config shipped with the package (labels Car and Person)."""
    folder = resources.files("ml_backend.label_studio").joinpath("configs")
    return folder.joinpath(SHIPPED_CONFIG).read_text()

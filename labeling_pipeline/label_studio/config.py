"""Parse a Label Studio labeling config into what the backend needs.

Click labels carry two custom attributes: ``target`` (the BrushLabels label to emit) and
``level`` (a coarse granularity). Per-region ``Number`` and ``TextArea`` controls carry a finer
granularity. Never name a ``<Label>`` attribute ``granularity``: Label Studio reserves it and
its labeling UI crashes on such a config.
"""

from __future__ import annotations

import hashlib
import threading
import xml.etree.ElementTree as ET  # noqa: N817
from collections import OrderedDict
from dataclasses import dataclass, field

from defusedxml.ElementTree import fromstring as defused_fromstring

from core_model.errors import UnSAMv2Error
from core_model.types import GRANULARITY_MAX, GRANULARITY_MIN, granularity_or_none

MAX_LABEL_CONFIG_CHARS = 256 * 1024
"""Largest labeling config parsed. Generated configs with 100 labels x 10 levels stay under
100 KB; anything larger is refused before parsing."""

CONFIG_CACHE_BYTES = 8 * 1024 * 1024
"""Parsed configs kept, counted by the size of their XML (a parsed config is smaller)."""


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
class VideoTag:
    """A ``<Video>`` object tag.

    Attributes:
        name: Its name (the ``toName`` of its controls).
        data_key: Task data key of the video URL (``$video`` -> ``video``).
        framerate: The ``frameRate`` attribute as written (a number, ``$key`` of task data, or
            None: Label Studio's default of 24).
    """

    name: str
    data_key: str
    framerate: str | None


@dataclass(frozen=True)
class VideoBoxControl:
    """A ``<VideoRectangle>`` control: its name and the video it draws on."""

    name: str
    to_name: str


@dataclass(frozen=True)
class ProjectConfig:
    """The parts of a labeling config this backend uses.

    Attributes:
        images: Image tag name -> task data key (``$image`` -> ``image``).
        brushes: BrushLabels controls.
        click_controls: KeyPointLabels / RectangleLabels name -> {label value -> ClickLabel}.
        numbers: Names of per-region Number controls.
        textareas: Names of per-region TextArea controls.
        videos: Video tag name -> `VideoTag`.
        video_boxes: VideoRectangle controls.
        video_labels: Labels controls on a video: name -> {label value -> ClickLabel} (their
            labels may carry ``level``, a granularity, as click labels do).
    """

    images: dict[str, str] = field(default_factory=dict)
    brushes: tuple[BrushControl, ...] = ()
    click_controls: dict[str, dict[str, ClickLabel]] = field(default_factory=dict)
    numbers: frozenset[str] = frozenset()
    textareas: frozenset[str] = frozenset()
    videos: dict[str, VideoTag] = field(default_factory=dict)
    video_boxes: tuple[VideoBoxControl, ...] = ()
    video_labels: dict[str, dict[str, ClickLabel]] = field(default_factory=dict)

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
    level = granularity_or_none(value)
    if level is None:
        raise LabelConfigError(
            f"label {label!r}: level={raw!r} must lie in [{GRANULARITY_MIN}, {GRANULARITY_MAX}]"
        )
    return level


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


class _ConfigCache:
    """Thread-safe LRU map sha256(XML) -> parsed config, bounded by the XML bytes it stands for.

    Keys are digests, so the cache never holds the XML text itself.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[ProjectConfig, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> ProjectConfig | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: bytes, config: ProjectConfig, size: int) -> None:
        with self._lock:
            if key in self._entries or size > self.max_bytes:
                return
            self._entries[key] = (config, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes


_CACHE = _ConfigCache(CONFIG_CACHE_BYTES)


def parse_label_config(xml: str) -> ProjectConfig:
    """Parse (and cache) a labeling config.

    Raises:
        LabelConfigError: longer than `MAX_LABEL_CONFIG_CHARS`, not XML, or a label with an
            invalid level / reserved attribute.
    """
    if len(xml) > MAX_LABEL_CONFIG_CHARS:
        raise LabelConfigError(
            f"the labeling config has {len(xml)} characters, more than {MAX_LABEL_CONFIG_CHARS}"
        )
    data = xml.encode("utf-8", errors="surrogatepass")
    key = hashlib.sha256(data).digest()
    found = _CACHE.get(key)
    if found is None:
        found = _parse(xml)
        _CACHE.put(key, found, len(data))
    return found


def _parse(xml: str) -> ProjectConfig:
    try:
        # The config comes from requests: no DTD, so no entity expansion or external entities.
        root = defused_fromstring(xml, forbid_dtd=True)
    except (ET.ParseError, ValueError) as exc:  # ValueError: not UTF-8, or a DTD/entity
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
    videos = {
        tag.get("name", ""): VideoTag(
            tag.get("name", ""),
            tag.get("value", "$video").lstrip("$"),
            tag.get("frameRate") or tag.get("framerate"),
        )
        for tag in root.iter("Video")
        if tag.get("name")
    }
    return ProjectConfig(
        images=images,
        brushes=brushes,
        click_controls=clicks,
        numbers=frozenset(t.get("name", "") for t in per_region if t.tag == "Number"),
        textareas=frozenset(t.get("name", "") for t in per_region if t.tag == "TextArea"),
        videos=videos,
        video_boxes=tuple(
            VideoBoxControl(tag.get("name", ""), tag.get("toName", ""))
            for tag in root.iter("VideoRectangle")
            if tag.get("toName", "") in videos
        ),
        video_labels={
            tag.get("name", ""): _labels(tag)
            for tag in root.iter("Labels")
            if tag.get("toName", "") in videos
        },
    )

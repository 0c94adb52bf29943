"""Synthetic part/whole scenes with a known hierarchy, for pseudo-labels, training and evaluation.

A scene is an RGB image holding a few well separated **objects** (wholes) on a cluttered
background. Every object is made of 2 to 4 **parts**: connected regions, each with its own hue
(hues of one object at least 50 degrees apart, saturated) and its own texture (flat, stripes at
a random angle, checkerboard, dots or strong noise, all within the part's hue). Objects are drawn
from four templates: bands (an ellipse or a rounded box cut into parallel bands), concentric rings
(a core inside one or two rings, so some parts are not convex and one encloses another), sectors
(a disc cut into wedges) and a figure (a body with a head and two side arms).

The background is a smooth gradient between two desaturated colours with clutter: small
discs, boxes and line segments in other desaturated colours, partly hidden by the objects.
Edges are slightly blurred (sigma 0.6 px) and Gaussian noise is added, so pixel colours inside
a part are not constant. Ground truth is exact: the whole's mask is the union of its parts'
visible pixels, and parts of one object do not overlap. The task is fair (parts differ in hue,
objects do not touch each other or the image border) but not trivial (textures, clutter, noise,
non-convex and nested parts, parts of very different sizes).

Public API: `SceneConfig`, `generate_scene(seed, config)`, `generate_scenes(count, seed=...)`;
a `SyntheticScene` has `image` (H, W, 3) uint8 RGB, `objects` (hierarchy) and `regions` (flat list
with ids and whole/part relations).
"""

from __future__ import annotations

import colorsys
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from core_model.types import BoolMask

SHAPES = ("bands", "rings", "sectors", "figure")
TEXTURES = ("flat", "stripes", "checker", "dots", "noise")


@dataclass(frozen=True)
class SceneConfig:
    """Scene size and content ranges (pixels unless stated).

    Attributes:
        height: Image height.
        width: Image width.
        min_objects: Fewest objects tried (placement may fit fewer when the image is small).
        max_objects: Most objects.
        object_size_fraction: Range of an object's box side as a fraction of min(height, width).
        clutter_count: Number of background clutter items.
        noise_std: Standard deviation of the additive Gaussian pixel noise (0-255 scale).
        margin_px: Least gap between objects, and between an object and the image border.
        min_object_area_fraction: Least object area as a fraction of the image (objects are
            instances only above 5 %, as in UnSAMv2); a template that fills too little of its box
            is replaced by another.
        shapes: Object templates to draw from (subset of `SHAPES`).
    """

    height: int = 256
    width: int = 320
    min_objects: int = 2
    max_objects: int = 3
    object_size_fraction: tuple[float, float] = (0.38, 0.52)
    clutter_count: int = 24
    noise_std: float = 5.0
    margin_px: int = 12
    min_object_area_fraction: float = 0.07
    shapes: tuple[str, ...] = SHAPES

    def __post_init__(self) -> None:
        if self.height < 64 or self.width < 64:
            raise ValueError(f"scene must be at least 64x64, got {self.width}x{self.height}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        low, high = self.object_size_fraction
        if not 0.1 <= low <= high <= 0.9:
            raise ValueError("object_size_fraction must satisfy 0.1 <= low <= high <= 0.9")
        unknown = set(self.shapes) - set(SHAPES)
        if not self.shapes or unknown:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")


@dataclass(frozen=True)
class ScenePart:
    """One part of an object: `mask` (H, W) bool, its base colour (RGB) and texture name."""

    part_id: int
    mask: BoolMask
    colour_rgb: tuple[int, int, int]
    texture: str


@dataclass(frozen=True)
class SceneObject:
    """One whole object: `mask` (H, W) bool is the union of its parts' masks."""

    object_id: int
    mask: BoolMask
    shape: str
    parts: tuple[ScenePart, ...]


@dataclass(frozen=True)
class SceneRegion:
    """A ground-truth mask in a flat list: a whole (`parent_id` None) or a part of `parent_id`."""

    region_id: int
    mask: BoolMask
    is_part: bool
    parent_id: int | None


@dataclass(frozen=True)
class SyntheticScene:
    """A generated image with its ground-truth hierarchy.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        objects: The wholes, each with its parts. Ids are unique across wholes and parts.
        seed: The seed that reproduces the scene with the same config.
    """

    image: npt.NDArray[np.uint8]
    objects: tuple[SceneObject, ...]
    seed: int

    @property
    def regions(self) -> list[SceneRegion]:
        """Return wholes and parts as one flat list (wholes first, then each one's parts)."""
        out = [SceneRegion(o.object_id, o.mask, False, None) for o in self.objects]
        for obj in self.objects:
            out.extend(SceneRegion(p.part_id, p.mask, True, obj.object_id) for p in obj.parts)
        return out

    def masks(self) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Return (wholes (N, H, W) bool, parts (M, H, W) bool) stacked in id order."""
        height, width = self.image.shape[:2]
        wholes = [o.mask for o in self.objects]
        parts = [p.mask for o in self.objects for p in o.parts]
        empty = np.zeros((0, height, width), dtype=bool)
        return (
            np.stack(wholes) if wholes else empty,
            np.stack(parts) if parts else empty,
        )


def _hsv_rgb(hue: float, saturation: float, value: float) -> npt.NDArray[np.float32]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, height: int, width: int) -> npt.NDArray[np.float32]:
    """Return an (H, W, 3) float32 gradient between two desaturated colours."""
    hue = rng.uniform(0, 1)
    c0 = _hsv_rgb(hue, rng.uniform(0.0, 0.15), rng.uniform(0.35, 0.55))
    c1 = _hsv_rgb(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.0, 0.15), rng.uniform(0.55, 0.8))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    ramp: npt.NDArray[np.float32] = (
        c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    ).astype(np.float32)
    return ramp


def _draw_clutter(rng: np.random.Generator, canvas: npt.NDArray[np.float32], count: int) -> None:
    height, width = canvas.shape[:2]
    for _ in range(count):
        colour = _hsv_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.2), rng.uniform(0.25, 0.85))
        colour_t = tuple(float(c) for c in colour)
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        kind = rng.integers(0, 3)
        size = int(rng.integers(2, 7))
        if kind == 0:
            cv2.circle(canvas, (x, y), size, colour_t, -1)
        elif kind == 1:
            cv2.rectangle(canvas, (x, y), (x + 2 * size, y + size), colour_t, -1)
        else:
            dx, dy = rng.integers(-14, 15, size=2)
            cv2.line(canvas, (x, y), (x + int(dx), y + int(dy)), colour_t, int(rng.integers(1, 3)))


def _bands(rng: np.random.Generator, h: int, w: int) -> list[BoolMask]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if rng.random() < 0.5:
        outline = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0
    else:
        radius = min(h, w) * 0.2
        dy = np.clip(np.abs(yy - cy) - (h / 2 - radius), 0, None)
        dx = np.clip(np.abs(xx - cx) - (w / 2 - radius), 0, None)
        outline = dx**2 + dy**2 <= radius**2
    count = int(rng.integers(2, 4))
    coordinate = yy / h if rng.random() < 0.5 else xx / w
    cuts = [rng.uniform(0.4, 0.6)] if count == 2 else [rng.uniform(0.3, 0.4), rng.uniform(0.6, 0.7)]
    edges = [0.0, *[float(c) for c in cuts], 1.01]
    return [outline & (coordinate >= a) & (coordinate < b) for a, b in itertools.pairwise(edges)]


def _rings(rng: np.random.Generator, h: int, w: int) -> list[BoolMask]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2)
    if rng.random() < 0.5:
        edges = [0.0, rng.uniform(0.45, 0.6), 1.0]
    else:
        edges = [0.0, rng.uniform(0.38, 0.45), rng.uniform(0.68, 0.74), 1.0]
    return [(r >= a) & (r < b) if a > 0 else r < b for a, b in itertools.pairwise(edges)]


def _sectors(rng: np.random.Generator, h: int, w: int) -> list[BoolMask]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ny, nx = (yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)
    disc = ny**2 + nx**2 <= 1.0
    count = int(rng.integers(3, 5))
    start = rng.uniform(0, 2 * math.pi)
    angle = (np.arctan2(ny, nx) - start) % (2 * math.pi)
    step = 2 * math.pi / count
    return [disc & (angle >= k * step) & (angle < (k + 1) * step) for k in range(count)]


def _figure(rng: np.random.Generator, h: int, w: int) -> list[BoolMask]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    head_r = min(h, w) * rng.uniform(0.2, 0.24)
    head = (yy - head_r) ** 2 + (xx - (w - 1) / 2) ** 2 <= head_r**2
    body_top, body_half_w = 2 * head_r, w * 0.27
    body = ((yy - (body_top + h) / 2) / ((h - body_top) / 2)) ** 2 + (
        (xx - (w - 1) / 2) / body_half_w
    ) ** 2 <= 1.0
    arm_y0, arm_y1 = body_top + (h - body_top) * 0.2, body_top + (h - body_top) * 0.55
    rows = (yy >= arm_y0) & (yy < arm_y1)
    left = rows & (xx < (w - 1) / 2 - body_half_w * 0.7) & ~body
    right = rows & (xx > (w - 1) / 2 + body_half_w * 0.7) & ~body
    return [head & ~body, body, left, right]


_TEMPLATES: dict[str, Callable[[np.random.Generator, int, int], list[BoolMask]]] = {
    "bands": _bands,
    "rings": _rings,
    "sectors": _sectors,
    "figure": _figure,
}


def _texture(
    rng: np.random.Generator, name: str, h: int, w: int, hue: float
) -> npt.NDArray[np.float32]:
    """Return an (h, w, 3) float32 RGB texture in one hue."""
    saturation, value = rng.uniform(0.65, 0.95), rng.uniform(0.6, 0.95)
    base = _hsv_rgb(hue, saturation, value)
    shade = _hsv_rgb(hue, min(1.0, saturation + 0.05), value * 0.62)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if name == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 10)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) % period < period / 2
    elif name == "checker":
        cell = int(rng.integers(3, 6))
        t = ((yy // cell + xx // cell) % 2).astype(bool)
    elif name == "dots":
        spacing = rng.uniform(7, 10)
        t = ((yy % spacing) - spacing / 2) ** 2 + ((xx % spacing) - spacing / 2) ** 2 < 5.0
    else:
        t = np.zeros((h, w), dtype=bool)
    out = np.where(t[..., None], shade, base).astype(np.float32)
    if name == "noise":
        out += rng.normal(0.0, 22.0, size=(h, w, 1)).astype(np.float32)
    return out


def _place_boxes(
    rng: np.random.Generator, config: SceneConfig, count: int
) -> list[tuple[int, int, int, int]]:
    """Return non-overlapping (y0, x0, h, w) boxes separated by the margin."""
    side = min(config.height, config.width)
    boxes: list[tuple[int, int, int, int]] = []
    m = config.margin_px
    for _ in range(60 * count):
        if len(boxes) == count:
            break
        size = rng.uniform(*config.object_size_fraction) * side
        bh = int(size * rng.uniform(0.85, 1.15))
        bw = int(size * rng.uniform(0.85, 1.15))
        if bh + 2 * m >= config.height or bw + 2 * m >= config.width:
            continue
        y0 = int(rng.integers(m, config.height - bh - m))
        x0 = int(rng.integers(m, config.width - bw - m))
        if all(
            y0 >= b[0] + b[2] + m
            or b[0] >= y0 + bh + m
            or x0 >= b[1] + b[3] + m
            or b[1] >= x0 + bw + m
            for b in boxes
        ):
            boxes.append((y0, x0, bh, bw))
    return boxes


def _object_hues(rng: np.random.Generator, count: int) -> list[float]:
    start = rng.uniform(0, 1)
    spacing = 1.0 / max(count, 3)
    return [start + k * spacing + rng.uniform(-0.04, 0.04) for k in range(count)]


def _pick_template(
    rng: np.random.Generator, config: SceneConfig, bh: int, bw: int
) -> tuple[str, list[BoolMask]] | None:
    """Return (shape, local part masks (bh, bw)) filling enough area, or None after 5 tries."""
    min_area = config.min_object_area_fraction * config.height * config.width
    for _ in range(5):
        shape = str(rng.choice(list(config.shapes)))
        local = [m for m in _TEMPLATES[shape](rng, bh, bw) if m.sum() > 0]
        if sum(int(m.sum()) for m in local) >= min_area:
            return shape, local
    return None


def _paint_parts(
    rng: np.random.Generator,
    canvas: npt.NDArray[np.float32],
    box: tuple[int, int, int, int],
    local: list[BoolMask],
) -> list[ScenePart]:
    """Paint one object's parts on the canvas; return them with full-size masks (ids 0)."""
    y0, x0, bh, bw = box
    height, width = canvas.shape[:2]
    parts = []
    for local_mask, hue in zip(local, _object_hues(rng, len(local)), strict=True):
        texture = str(rng.choice(list(TEXTURES)))
        pixels = _texture(rng, texture, bh, bw, hue)
        region = canvas[y0 : y0 + bh, x0 : x0 + bw]
        region[local_mask] = pixels[local_mask]
        r, g, b = (int(c) for c in _hsv_rgb(hue, 0.8, 0.8).round())
        mask = np.zeros((height, width), dtype=bool)
        mask[y0 : y0 + bh, x0 : x0 + bw] = local_mask
        parts.append(ScenePart(0, mask, (r, g, b), texture))
    return parts


def generate_scene(seed: int, config: SceneConfig | None = None) -> SyntheticScene:
    """Generate one scene; the same seed and config always give the same scene.

    Args:
        seed: Random seed.
        config: Sizes and content ranges; defaults to `SceneConfig()`.

    Returns:
        The scene: image (H, W, 3) uint8 RGB and its objects with parts (masks (H, W) bool).
        Objects have ids 1..N, parts N+1.. in object order.
    """
    config = config or SceneConfig()
    rng = np.random.default_rng(seed)
    canvas = _background(rng, config.height, config.width)
    _draw_clutter(rng, canvas, config.clutter_count)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    painted: list[tuple[str, list[ScenePart]]] = []
    for box in _place_boxes(rng, config, count):
        picked = _pick_template(rng, config, box[2], box[3])
        if picked is not None:
            painted.append((picked[0], _paint_parts(rng, canvas, box, picked[1])))
    canvas = np.asarray(cv2.GaussianBlur(canvas, (0, 0), 0.6), dtype=np.float32)
    canvas += rng.normal(0.0, config.noise_std, size=canvas.shape).astype(np.float32)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    next_id = len(painted) + 1
    objects = []
    for index, (shape, parts) in enumerate(painted, start=1):
        numbered = tuple(replace(part, part_id=next_id + k) for k, part in enumerate(parts))
        next_id += len(parts)
        union = np.logical_or.reduce([p.mask for p in parts])
        objects.append(SceneObject(index, union, shape, numbered))
    return SyntheticScene(image=image, objects=tuple(objects), seed=seed)


def generate_scenes(
    count: int, *, seed: int = 0, config: SceneConfig | None = None
) -> Iterator[SyntheticScene]:
    """Yield `count` scenes with seeds `seed`, `seed + 1`, ...."""
    for index in range(count):
        yield generate_scene(seed + index, config)

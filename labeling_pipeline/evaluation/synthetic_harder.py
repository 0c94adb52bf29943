"""Harder synthetic part/whole scenes: shading, shadows, textured clutter, occlusion, JPEG.

Same output types as `synthetic` (`SyntheticScene`, `SceneObject`, `ScenePart`), so every
scorer of the simple style runs unchanged. What differs:

- **Sizes**: the long side is drawn from `long_side_px` (480..1024), aspect 4:3, landscape or
  portrait at random.
- **Objects** of 2 to 11 parts from five templates: a vehicle (body, cabin, 1-3 windows, 2-4
  wheels), a flower (centre, 5-8 petals, stem, leaf), a figure (head, torso, two arms, two
  legs: thin limbs), a house (wall, roof, door, 1-2 windows, chimney) and the simple style's
  bands / sectors / rings. Parts of one **group** (all wheels, all petals, both arms) share one
  colour and texture, and never touch each other, so each is still a separate visible region.
- **Appearance**: every part is textured (the simple style's textures) and shaded (a linear
  light ramp across the object and darkening towards each part's boundary); a global
  illumination ramp multiplies the whole image; every object casts a soft shadow.
- **Background**: a gradient with clutter blobs painted with the *same* textures and hues as
  objects use (only smaller), so colour alone does not say "object".
- **Occlusion**: objects may overlap; a later object hides an earlier one. Placement is
  retried until every object's visible pixels form one 4-connected piece keeping at least
  `min_visible_fraction` of its area.
- **Degradations**: Gaussian blur (sigma from `blur_sigma`), Gaussian sensor noise, JPEG
  compression at a quality from `jpeg_quality`.

Ground truth is exactly the visible pixels: a part's mask is what no later object covers (a
part left with fewer than `min_part_px` pixels is dropped from the part list; its pixels stay
in the whole), a whole is the union of its visible parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from core_model.types import BoolMask
from labeling_pipeline.evaluation.synthetic import (
    TEXTURES,
    SceneObject,
    ScenePart,
    SyntheticScene,
    _bands,
    _hsv_rgb,
    _rings,
    _sectors,
    _texture,
)

HARDER_SHAPES = ("vehicle", "flower", "figure", "house", "simple")

# local template output: a label map (h, w) int32 (0 = outside, k = part k) and the group of
# every part (index k - 1); parts of one group share colour and texture
_Layout = tuple[npt.NDArray[np.int32], list[int]]
# a placed object: template name, box corner (y0, x0), label map and shaded pixels
_Placed = tuple[str, int, int, npt.NDArray[np.int32], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class HarderSceneConfig:
    """Ranges of the harder style (pixels unless stated).

    Attributes:
        long_side_px: Range of the image's long side; the short side is 3/4 of it.
        min_objects: Fewest objects tried.
        max_objects: Most objects.
        object_size_fraction: Range of an object's box side as a fraction of the short side.
        clutter_count: Textured clutter blobs on the background.
        min_object_area_fraction: Least object area as a fraction of the image (instances are
            above 5 % in UnSAMv2); thin templates get a larger box to reach it.
        min_visible_fraction: Least share of an object left visible by later objects.
        min_part_px: Visible parts smaller than this are not listed as parts.
        blur_sigma: Range of the Gaussian blur sigma.
        noise_std: Range of the sensor noise standard deviation (0-255 scale).
        jpeg_quality: Range of the JPEG quality.
        shapes: Templates to draw from (subset of `HARDER_SHAPES`).
    """

    long_side_px: tuple[int, int] = (480, 1024)
    min_objects: int = 2
    max_objects: int = 4
    object_size_fraction: tuple[float, float] = (0.32, 0.5)
    clutter_count: int = 30
    min_object_area_fraction: float = 0.07
    min_visible_fraction: float = 0.6
    min_part_px: int = 40
    blur_sigma: tuple[float, float] = (0.4, 1.3)
    noise_std: tuple[float, float] = (2.0, 7.0)
    jpeg_quality: tuple[int, int] = (70, 90)
    shapes: tuple[str, ...] = HARDER_SHAPES

    def __post_init__(self) -> None:
        low, high = self.long_side_px
        if not 128 <= low <= high:
            raise ValueError(f"long_side_px must satisfy 128 <= low <= high, got {low, high}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        if not 0.1 <= self.object_size_fraction[0] <= self.object_size_fraction[1] <= 0.9:
            raise ValueError("object_size_fraction must satisfy 0.1 <= low <= high <= 0.9")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError("jpeg_quality must satisfy 1 <= low <= high <= 100")
        unknown = set(self.shapes) - set(HARDER_SHAPES)
        if not self.shapes or unknown:
            raise ValueError(f"shapes must be a non-empty subset of {HARDER_SHAPES}")


def _canvas(h: int, w: int) -> npt.NDArray[np.int32]:
    return np.zeros((h, w), dtype=np.int32)


def _ipt(x: float, y: float) -> tuple[int, int]:
    return round(x), round(y)


def _vehicle(rng: np.random.Generator, h: int, w: int) -> _Layout:
    lab = _canvas(h, w)
    body_y0, body_y1 = int(0.36 * h), int(0.8 * h)
    cv2.rectangle(lab, (int(0.02 * w), body_y0), (int(0.98 * w), body_y1), 1, -1)
    cab_x0, cab_x1 = int(rng.uniform(0.15, 0.3) * w), int(rng.uniform(0.65, 0.8) * w)
    cab = np.array(
        [(cab_x0, body_y0), (cab_x1, body_y0), (cab_x1 - 0.08 * w, 0.06 * h)]
        + [(cab_x0 + 0.08 * w, 0.06 * h)],
        dtype=np.int32,
    )
    cv2.fillPoly(lab, [cab], 2)
    groups = [0, 1]
    windows = int(rng.integers(1, 4))
    span = (cab_x1 - cab_x0 - 0.16 * w) / windows
    for k in range(windows):
        x0 = cab_x0 + 0.1 * w + k * span
        cv2.rectangle(lab, _ipt(x0, 0.14 * h), _ipt(x0 + 0.7 * span, 0.3 * h), len(groups) + 1, -1)
        groups.append(2)
    wheels = int(rng.integers(2, 5))
    radius = min(0.16 * h, 0.45 * w / wheels)
    for k in range(wheels):
        cx = w * (0.12 + 0.76 * k / (wheels - 1))
        cv2.circle(lab, _ipt(cx, body_y1), int(radius), len(groups) + 1, -1)
        groups.append(3)
    return lab, groups


def _flower(rng: np.random.Generator, h: int, w: int) -> _Layout:
    lab = _canvas(h, w)
    s = min(h, w)
    cx, cy = w / 2, 0.38 * h
    petals = int(rng.integers(5, 9))
    centre_r, distance = 0.12 * s, 0.22 * s
    half_width = min(0.09 * s, 0.3 * distance * math.sin(math.pi / petals) * 2)
    groups = []
    stem_w = max(4.0, 0.05 * w)
    cv2.rectangle(lab, _ipt(cx - stem_w / 2, cy), _ipt(cx + stem_w / 2, h - 1), 1, -1)
    groups.append(2)
    side = 1 if rng.random() < 0.5 else -1
    leaf_c = _ipt(cx + side * 0.16 * s, 0.78 * h)
    cv2.ellipse(lab, leaf_c, _ipt(0.15 * s, 0.05 * s), side * 25.0, 0, 360, 2, -1)
    groups.append(3)
    start = rng.uniform(0, 360)
    for k in range(petals):
        angle = start + 360.0 * k / petals
        px = cx + distance * math.cos(math.radians(angle))
        py = cy + distance * math.sin(math.radians(angle))
        axes = _ipt(0.13 * s, half_width)
        cv2.ellipse(lab, _ipt(px, py), axes, angle, 0, 360, len(groups) + 1, -1)
        groups.append(1)
    cv2.circle(lab, _ipt(cx, cy), int(centre_r), len(groups) + 1, -1)
    groups.append(0)
    return lab, groups


def _limb(
    lab: npt.NDArray[np.int32],
    a: tuple[float, float],
    b: tuple[float, float],
    width: float,
    value: int,
) -> None:
    cv2.line(lab, _ipt(*a), _ipt(*b), value, max(3, round(width)))


def _figure(rng: np.random.Generator, h: int, w: int) -> _Layout:
    lab = _canvas(h, w)
    cx = w / 2
    limb = max(4.0, rng.uniform(0.06, 0.09) * w)
    torso_top, torso_bottom = 0.24 * h, 0.62 * h
    reach = rng.uniform(0.35, 0.46) * w
    arm_y = torso_top + 0.08 * h
    _limb(lab, (cx, arm_y), (cx - reach, arm_y + rng.uniform(-0.15, 0.2) * h), limb, 3)
    _limb(lab, (cx, arm_y), (cx + reach, arm_y + rng.uniform(-0.15, 0.2) * h), limb, 4)
    spread = rng.uniform(0.1, 0.3) * w
    _limb(lab, (cx - 0.08 * w, torso_bottom), (cx - spread, 0.97 * h), limb * 1.2, 5)
    _limb(lab, (cx + 0.08 * w, torso_bottom), (cx + spread, 0.97 * h), limb * 1.2, 6)
    axes = _ipt(rng.uniform(0.14, 0.2) * w, (torso_bottom - torso_top) / 2)
    cv2.ellipse(lab, _ipt(cx, (torso_top + torso_bottom) / 2), axes, 0, 0, 360, 2, -1)
    cv2.circle(lab, _ipt(cx, 0.13 * h), int(0.12 * min(h, w)), 1, -1)
    return lab, [0, 1, 2, 2, 3, 3]


def _house(rng: np.random.Generator, h: int, w: int) -> _Layout:
    lab = _canvas(h, w)
    roof_y = rng.uniform(0.3, 0.42) * h
    chim_x = rng.uniform(0.6, 0.72) * w
    cv2.rectangle(lab, _ipt(chim_x, 0.04 * h), _ipt(chim_x + 0.09 * w, roof_y), 5, -1)
    roof = np.array([_ipt(0, roof_y), _ipt(w - 1, roof_y), _ipt(w / 2, 0.12 * h)], dtype=np.int32)
    cv2.fillPoly(lab, [roof], 2)
    cv2.rectangle(lab, _ipt(0.08 * w, roof_y), _ipt(0.92 * w, h - 1), 1, -1)
    door_x = rng.uniform(0.4, 0.55) * w
    cv2.rectangle(lab, _ipt(door_x, 0.68 * h), _ipt(door_x + 0.16 * w, h - 1), 3, -1)
    groups = [0, 1, 2, 3, 4]
    windows = int(rng.integers(1, 3))
    for k in range(windows):
        x0 = (0.14 + 0.55 * k) * w if windows == 2 else 0.15 * w
        cv2.rectangle(
            lab, _ipt(x0, roof_y + 0.1 * h), _ipt(x0 + 0.2 * w, roof_y + 0.28 * h), 6 + k, -1
        )
        groups.append(5)
    return lab, groups


def _simple(rng: np.random.Generator, h: int, w: int) -> _Layout:
    maker = (_bands, _sectors, _rings)[int(rng.integers(0, 3))]
    lab = _canvas(h, w)
    masks = [m for m in maker(rng, h, w) if m.any()]
    for k, mask in enumerate(masks, start=1):
        lab[mask] = k
    return lab, list(range(len(masks)))


_TEMPLATES: dict[str, Callable[[np.random.Generator, int, int], _Layout]] = {
    "vehicle": _vehicle,
    "flower": _flower,
    "figure": _figure,
    "house": _house,
    "simple": _simple,
}


def _shade(
    rng: np.random.Generator, lab: npt.NDArray[np.int32], pixels: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Return the pixels (h, w, 3) with a light ramp and darkening at every part's boundary."""
    h, w = lab.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / max(h, w)
    light = 1.0 + rng.uniform(0.15, 0.3) * (ramp - float(ramp.mean())) * 2
    depth = np.zeros((h, w), dtype=np.float32)
    for k in range(1, int(lab.max()) + 1):
        inside = (lab == k).astype(np.uint8)
        if inside.any():
            dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
            depth = np.maximum(depth, np.minimum(dist / max(3.0, 0.08 * min(h, w)), 1.0))
    bevel = 0.78 + 0.22 * depth
    out: npt.NDArray[np.float32] = pixels * (light * bevel)[..., None]
    return out


def _paint_object(
    rng: np.random.Generator, shape: str, h: int, w: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Return (label map (h, w) int32, shaded RGB (h, w, 3) float32) of one object."""
    lab, groups = _TEMPLATES[shape](rng, h, w)
    count = max(groups) + 1
    start, spacing = rng.uniform(0, 1), 1.0 / max(count, 3)
    pixels = np.zeros((h, w, 3), dtype=np.float32)
    for group in range(count):
        hue = start + group * spacing + rng.uniform(-0.03, 0.03)
        texture = _texture(rng, str(rng.choice(list(TEXTURES))), h, w, hue)
        members = np.isin(lab, [k + 1 for k, g in enumerate(groups) if g == group])
        pixels[members] = texture[members]
    return lab, _shade(rng, lab, pixels)


def _background(
    rng: np.random.Generator, height: int, width: int, clutter: int
) -> npt.NDArray[np.float32]:
    """Return an (H, W, 3) gradient with textured clutter blobs in object-like colours."""
    hue = rng.uniform(0, 1)
    c0 = _hsv_rgb(hue, rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.55))
    c1 = _hsv_rgb(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.05, 0.3), rng.uniform(0.55, 0.8))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = ((t - t.min()) / max(float(t.max() - t.min()), 1.0))[..., None]
    canvas: npt.NDArray[np.float32] = (c0 * (1 - t) + c1 * t).astype(np.float32)
    side = min(height, width)
    for _ in range(clutter):
        size = int(rng.uniform(0.02, 0.07) * side)
        y, x = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
        blob = np.zeros((size, size), dtype=np.uint8)
        axes = _ipt(size / 2 * rng.uniform(0.5, 1), size / 2 * rng.uniform(0.3, 1))
        cv2.ellipse(blob, _ipt(size / 2, size / 2), axes, rng.uniform(0, 180), 0, 360, 1, -1)
        texture = _texture(rng, str(rng.choice(list(TEXTURES))), size, size, rng.uniform(0, 1))
        region = canvas[y : y + size, x : x + size]
        region[blob > 0] = texture[blob > 0] * rng.uniform(0.6, 0.9)
    return canvas


def _connected(mask: BoolMask) -> bool:
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return int(count) == 2


def _fits(owner: npt.NDArray[np.int32], areas: dict[int, int], min_visible: float) -> bool:
    """Return whether every placed object is still one piece with enough area visible."""
    for index, area in areas.items():
        visible = owner == index
        if visible.sum() < min_visible * area or not _connected(visible):
            return False
    return True


def _place(
    rng: np.random.Generator, config: HarderSceneConfig, height: int, width: int
) -> tuple[list[_Placed], npt.NDArray[np.int32]]:
    """Return placed objects (shape, y0, x0, labels, pixels) and the (H, W) owner map."""
    owner = np.zeros((height, width), dtype=np.int32)
    placed: list[_Placed] = []
    areas: dict[int, int] = {}
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    side = min(height, width)
    for _ in range(count):
        shape = str(rng.choice(list(config.shapes)))
        size = rng.uniform(*config.object_size_fraction) * side
        h, w = int(size * rng.uniform(0.85, 1.2)), int(size * rng.uniform(0.85, 1.2))
        lab, pixels = _paint_object(rng, shape, h, w)
        fill = int((lab > 0).sum()) / (height * width)
        if fill < config.min_object_area_fraction:  # thin templates: grow the box to the minimum
            grow = math.sqrt(config.min_object_area_fraction / fill) * 1.05
            h, w = min(int(h * grow), height - 10), min(int(w * grow), width - 10)
            lab, pixels = _paint_object(rng, shape, h, w)
        for _try in range(40):
            y0 = int(rng.integers(4, height - h - 4))
            x0 = int(rng.integers(4, width - w - 4))
            trial = owner.copy()
            trial[y0 : y0 + h, x0 : x0 + w][lab > 0] = len(placed) + 1
            if _fits(
                trial, {**areas, len(placed) + 1: int((lab > 0).sum())}, config.min_visible_fraction
            ):
                owner = trial
                areas[len(placed) + 1] = int((lab > 0).sum())
                placed.append((shape, y0, x0, lab, pixels))
                break
    return placed, owner


def generate_harder_scene(seed: int, config: HarderSceneConfig | None = None) -> SyntheticScene:
    """Generate one harder scene; the same seed and config always give the same scene.

    Args:
        seed: Random seed.
        config: Ranges; defaults to `HarderSceneConfig()`.

    Returns:
        The scene (image (H, W, 3) uint8 RGB after JPEG round trip; visible-pixel masks
        (H, W) bool). Objects have ids 1..N in drawing order, parts N+1.. in object order.
    """
    config = config or HarderSceneConfig()
    rng = np.random.default_rng(seed)
    long_side = int(rng.integers(config.long_side_px[0], config.long_side_px[1] + 1))
    height, width = long_side * 3 // 4, long_side
    if rng.random() < 0.5:
        height, width = width, height
    canvas = _background(rng, height, width, config.clutter_count)
    placed, owner = _place(rng, config, height, width)
    for _, y0, x0, lab, pixels in placed:
        h, w = lab.shape
        shadow = np.zeros((height, width), dtype=np.float32)
        dy, dx = (int(v) for v in rng.integers(-int(0.06 * h), int(0.06 * h) + 1, size=2))
        sy0, sx0 = max(0, y0 + dy), max(0, x0 + dx)
        crop = (lab > 0)[sy0 - (y0 + dy) : height - (y0 + dy), sx0 - (x0 + dx) : width - (x0 + dx)]
        shadow[sy0 : sy0 + crop.shape[0], sx0 : sx0 + crop.shape[1]] = crop
        soft = np.asarray(cv2.GaussianBlur(shadow, (0, 0), max(2.0, 0.05 * h)), np.float32)
        canvas *= (1.0 - rng.uniform(0.3, 0.5) * soft)[..., None]
        region = canvas[y0 : y0 + h, x0 : x0 + w]
        region[lab > 0] = pixels[lab > 0]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / max(height, width)
    canvas *= (1.0 + rng.uniform(0.3, 0.5) * (ramp - float(ramp.mean())) * 2)[..., None]
    canvas = np.asarray(cv2.GaussianBlur(canvas, (0, 0), rng.uniform(*config.blur_sigma)))
    canvas += rng.normal(0.0, rng.uniform(*config.noise_std), size=canvas.shape).astype(np.float32)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    _, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = np.asarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR), dtype=np.uint8)
    image = np.ascontiguousarray(decoded[..., ::-1])
    return SyntheticScene(image=image, objects=_objects(placed, owner, config), seed=seed)


def _objects(
    placed: list[_Placed],
    owner: npt.NDArray[np.int32],
    config: HarderSceneConfig,
) -> tuple[SceneObject, ...]:
    """Return the objects with their visible part masks, ids numbered as documented."""
    height, width = owner.shape
    found: list[tuple[str, BoolMask, list[ScenePart]]] = []
    for index, (shape, y0, x0, lab, _) in enumerate(placed, start=1):
        full = np.zeros((height, width), dtype=np.int32)
        full[y0 : y0 + lab.shape[0], x0 : x0 + lab.shape[1]] = lab
        full[owner != index] = 0
        parts = []
        for k in range(1, int(lab.max()) + 1):
            mask = full == k
            if int(mask.sum()) >= config.min_part_px:
                parts.append(ScenePart(0, mask, (0, 0, 0), "shaded"))
        found.append((shape, full > 0, parts))
    next_id = len(found) + 1
    objects = []
    for index, (shape, whole, parts) in enumerate(found, start=1):
        numbered = tuple(replace(p, part_id=next_id + k) for k, p in enumerate(parts))
        next_id += len(parts)
        objects.append(SceneObject(index, whole, shape, numbered))
    return tuple(objects)

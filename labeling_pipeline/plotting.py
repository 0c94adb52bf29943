"""Small line plots as PNG, drawn with PIL (no plotting library needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def line_plot_png(
    path: Path,
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    x_label: str = "",
    size: tuple[int, int] = (640, 400),
) -> Path:
    """Draw each named series against its index and save a PNG.

    Args:
        path: Output file.
        series: Name -> values (equal spacing on the x axis).
        title: Title drawn at the top.
        x_label: Label of the x axis.
        size: (width, height) in pixels.
    """
    width, height = size
    left, right, top, bottom = 60, 20, 30, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    values = [v for s in series.values() for v in s]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    longest = max((len(s) for s in series.values()), default=1)
    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    draw.text((left, 8), title, fill=(0, 0, 0))
    draw.text((left, height - bottom + 8), f"{x_label} (0..{max(longest - 1, 0)})", fill=(0, 0, 0))
    for i, tick in enumerate((high, (high + low) / 2, low)):
        y = top + i * (height - top - bottom) / 2
        draw.text((4, y - 6), f"{tick:.4g}", fill=(0, 0, 0))

    def point(index: int, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * index / max(longest - 1, 1)
        y = top + (height - top - bottom) * (high - value) / (high - low)
        return x, y

    for k, (name, ys) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        points = [point(i, v) for i, v in enumerate(ys)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse(
                [points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2],
                fill=colour,
            )
        draw.text((width - right - 150, top + 6 + 14 * k), name, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path

"""Charts drawn with Pillow (no plotting library), the one plotting module of the pipeline.

Line charts (reports, training losses) and grouped bar charts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
_SIZE = (720, 440)
_MARGIN = (70, 40, 200, 60)  # left, top, right (legend), bottom


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def _nice_max(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


class _Canvas:
    """A plot area with axes, ticks, a title and a legend."""

    def __init__(self, title: str, x_label: str, y_label: str, y_max: float) -> None:
        self.image = Image.new("RGB", _SIZE, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.small = _font(14), _font(12)
        left, top, right, bottom = _MARGIN
        self.box = (left, top, _SIZE[0] - right, _SIZE[1] - bottom)
        self.y_max = y_max
        self.draw.text((_SIZE[0] // 2, 12), title, fill="black", font=self.font, anchor="mt")
        x0, y0, x1, y1 = self.box
        self.draw.text(
            ((x0 + x1) // 2, _SIZE[1] - 18), x_label, fill="black", font=self.small, anchor="mm"
        )
        self.draw.text((8, (y0 + y1) // 2), y_label, fill="black", font=self.small, anchor="lm")
        for i in range(6):
            value = y_max * i / 5
            y = self.y(value)
            self.draw.line((x0, y, x1, y), fill=(225, 225, 225))
            self.draw.text((x0 - 6, y), f"{value:g}", fill="black", font=self.small, anchor="rm")
        self.draw.rectangle(self.box, outline="black")  # over the grid lines

    def y(self, value: float) -> float:
        x0, y0, x1, y1 = self.box
        clipped = min(max(value, 0.0), self.y_max)
        return y1 - (y1 - y0) * clipped / self.y_max

    def legend(self, names: Sequence[str]) -> None:
        x = self.box[2] + 14
        for i, name in enumerate(names):
            y = self.box[1] + 8 + 22 * i
            self.draw.rectangle((x, y - 6, x + 14, y + 6), fill=PALETTE[i % len(PALETTE)])
            self.draw.text((x + 20, y), name, fill="black", font=self.small, anchor="lm")


def line_chart(
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_max: float | None = 1.0,
) -> Image.Image:
    """Draw one line per series over x = 1..len(series); returns an RGB image.

    Long series (training losses) get about ten x ticks and no point markers.

    Args:
        series: Name -> y values (NaN values are skipped).
        title: Chart title.
        x_label: Label of the x axis.
        y_label: Label of the y axis.
        y_max: Top of the y axis (bottom is 0); None fits it to the largest finite value.
    """
    if y_max is None:
        finite = [v for values in series.values() for v in values if math.isfinite(v)]
        y_max = _nice_max(1.05 * max(finite, default=1.0))
    canvas = _Canvas(title, x_label, y_label, y_max)
    x0, _, x1, y1 = canvas.box
    count = max((len(v) for v in series.values()), default=1)
    tick_every = 1 if count <= 20 else max(5, math.ceil(count / 10 / 5) * 5)

    def x(index: int) -> float:
        return x0 + 10 + (x1 - x0 - 20) * (index / max(count - 1, 1))

    for index in range(count):
        if index % tick_every == tick_every - 1 or tick_every == 1:
            canvas.draw.text(
                (x(index), y1 + 6), str(index + 1), fill="black", font=canvas.small, anchor="mt"
            )
    for i, values in enumerate(series.values()):
        colour = PALETTE[i % len(PALETTE)]
        points = [(x(j), canvas.y(v)) for j, v in enumerate(values) if math.isfinite(v)]
        if len(points) > 1:
            canvas.draw.line(points, fill=colour, width=2)
        for px, py in points if count <= 60 else ():
            canvas.draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
    canvas.legend(list(series))
    return canvas.image


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    y_label: str,
) -> Image.Image:
    """Draw grouped bars: one group per entry of `groups`, one bar per series in each group.

    Args:
        groups: Group labels along x (e.g. "NoC80", "NoC90").
        series: Name -> one value per group (e.g. method -> NoC values); NaN draws no bar.
        title: Chart title.
        y_label: Label of the y axis.
    """
    finite = [v for values in series.values() for v in values if math.isfinite(v)]
    canvas = _Canvas(title, "", y_label, _nice_max(1.15 * max(finite, default=1.0)))
    x0, _, x1, y1 = canvas.box
    width = (x1 - x0) / max(len(groups), 1)
    bar = width * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        left = x0 + g * width + width * 0.1
        canvas.draw.text(
            (left + width * 0.4, y1 + 6), group, fill="black", font=canvas.font, anchor="mt"
        )
        for i, values in enumerate(series.values()):
            value = values[g]
            if not math.isfinite(value):
                continue
            top = canvas.y(value)
            bx = left + i * bar
            canvas.draw.rectangle((bx, top, bx + bar - 2, y1), fill=PALETTE[i % len(PALETTE)])
            canvas.draw.text(
                (bx + bar / 2, top - 3),
                f"{value:.2f}",
                fill="black",
                font=canvas.small,
                anchor="mb",
            )
    canvas.legend(list(series))
    return canvas.image

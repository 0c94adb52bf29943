"""Pictures of pseudo-labels: overlay previews and the granularity histogram (OpenCV, no pyplot)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.divide_conquer import PseudoMask

PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
        (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    ],
    dtype=np.float32,
)  # fmt: skip
"""Fifteen distinct RGB colours, float32 (15, 3), for tinting masks."""


def overlay_preview(
    image: npt.NDArray[np.uint8], masks: Sequence[PseudoMask]
) -> npt.NDArray[np.uint8]:
    """Return an (H, 2W, 3) uint8 RGB picture: instances (left) and their parts (right).

    Left: each instance tinted in its own colour and outlined. Right: parts tinted (smaller
    parts drawn last so they stay visible), instance outlines in white, granularity printed at
    each part's box corner.
    """
    left = image.astype(np.float32)
    right = image.astype(np.float32) * 0.6
    for m in masks:
        if not m.is_part:
            colour = PALETTE[(m.instance_id - 1) % len(PALETTE)]
            mask = m.decode()
            left[mask] = 0.5 * left[mask] + 0.5 * colour
    parts = sorted((m for m in masks if m.is_part), key=lambda m: -m.area)
    for index, m in enumerate(parts):
        mask = m.decode()
        right[mask] = 0.35 * right[mask] + 0.65 * PALETTE[index % len(PALETTE)]
    out_left = np.ascontiguousarray(left.round().clip(0, 255).astype(np.uint8))
    out_right = np.ascontiguousarray(right.round().clip(0, 255).astype(np.uint8))
    scale = max(0.3, max(image.shape[:2]) / 1000)
    for m in masks:
        contours, _ = cv2.findContours(
            m.decode().astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        if not m.is_part:
            colour = tuple(int(c) for c in PALETTE[(m.instance_id - 1) % len(PALETTE)])
            cv2.drawContours(out_left, contours, -1, colour, 2)
            cv2.drawContours(out_right, contours, -1, (255, 255, 255), 1)
        else:
            x, y = int(m.bbox_xywh[0]), int(m.bbox_xywh[1] + 12 * scale)
            cv2.putText(
                out_right, f"{m.granularity:.2f}", (x, y), cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * scale, (255, 255, 255), 1, cv2.LINE_AA,
            )  # fmt: skip
    return np.concatenate([out_left, out_right], axis=1)


def granularity_histogram(
    granularities: Sequence[float], *, bins: int = 18, width: int = 720, height: int = 420
) -> npt.NDArray[np.uint8]:
    """Return an (height, width, 3) uint8 RGB bar chart of granularities over [0.1, 1.0].

    The last bin is closed on the right, so instances (granularity 1.0) are counted in it.
    """
    counts, edges = np.histogram(np.asarray(granularities, dtype=np.float64), bins, (0.1, 1.0))
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 60, width - 20, 40, height - 50
    peak = max(int(counts.max()) if counts.size else 0, 1)
    step = (right - left) / bins
    for index, count in enumerate(counts.tolist()):
        x0 = int(left + index * step + 2)
        x1 = int(left + (index + 1) * step - 2)
        y0 = int(bottom - (bottom - top) * count / peak)
        cv2.rectangle(canvas, (x0, y0), (x1, bottom), (70, 130, 180), -1)
        if count:
            cv2.putText(
                canvas, str(count), (x0, max(top - 5, y0 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                (40, 40, 40), 1, cv2.LINE_AA,
            )  # fmt: skip
    cv2.line(canvas, (left, bottom), (right, bottom), (0, 0, 0), 1)
    cv2.line(canvas, (left, top), (left, bottom), (0, 0, 0), 1)
    for index in range(0, bins + 1, max(1, bins // 9)):
        x = int(left + index * step)
        cv2.putText(
            canvas, f"{edges[index]:.1f}", (x - 10, bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
            (0, 0, 0), 1, cv2.LINE_AA,
        )  # fmt: skip
    title = f"granularity of {len(granularities)} pseudo-label masks"
    cv2.putText(
        canvas, title, (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA
    )
    cv2.putText(
        canvas, "granularity", (width // 2 - 40, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
        (0, 0, 0), 1, cv2.LINE_AA,
    )  # fmt: skip
    cv2.putText(canvas, str(peak), (10, top + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return canvas

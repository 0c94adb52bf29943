"""Side-by-side previews of a generated scene: image, ground truth, pseudo-labels (OpenCV).

The middle panel colours every true part and outlines every true whole in white; the right
panel does the same with the pseudo-labels (parts of an instance coloured, the instance
outlined), so a wrong grouping of parts shows as an outline around the wrong set of colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from core_model.types import BoolMask
from labeling_pipeline.evaluation.synthetic import SyntheticScene
from labeling_pipeline.pseudo_labels.divide_conquer import PseudoMask
from labeling_pipeline.pseudo_labels.visualize import PALETTE


def _panel(
    image: npt.NDArray[np.uint8], parts: Sequence[BoolMask], wholes: Sequence[BoolMask]
) -> npt.NDArray[np.uint8]:
    """Return the (H, W, 3) uint8 image, `parts` tinted (largest first), `wholes` outlined."""
    canvas = image.astype(np.float32)
    for index, mask in enumerate(sorted(parts, key=lambda m: -int(m.sum()))):
        canvas[mask] = 0.35 * canvas[mask] + 0.65 * PALETTE[index % len(PALETTE)]
    out = np.ascontiguousarray(canvas.round().clip(0, 255).astype(np.uint8))
    thickness = max(1, round(max(image.shape[:2]) / 300))
    for mask in wholes:
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, (255, 255, 255), thickness)
    return out


def scene_preview(
    scene: SyntheticScene, masks: Sequence[PseudoMask], *, height: int = 300
) -> npt.NDArray[np.uint8]:
    """Return a (height, ~3 * W * height / H, 3) uint8 RGB picture of a scene and its labels.

    Panels, left to right: the generated image; its ground truth (parts coloured, wholes
    outlined in white); the pseudo-labels (parts coloured, instances outlined in white).

    Args:
        scene: The generated scene (image and true hierarchy).
        masks: Its pseudo-labels (`pseudo_label_image` output).
        height: Height of the picture in pixels (each panel keeps the image's aspect ratio).
    """
    truth = _panel(
        scene.image,
        [part.mask for obj in scene.objects for part in obj.parts],
        [obj.mask for obj in scene.objects],
    )
    decoded = [(m, m.decode()) for m in masks]
    labels = _panel(
        scene.image,
        [mask for m, mask in decoded if m.is_part],
        [mask for m, mask in decoded if not m.is_part],
    )
    row = np.concatenate([scene.image, truth, labels], axis=1)
    width = max(1, round(row.shape[1] * height / row.shape[0]))
    resized = cv2.resize(row, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(resized, dtype=np.uint8)

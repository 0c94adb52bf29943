"""Run a specialist on one image and turn its probabilities into regions.

The image is resized (aspect not kept, as in training) to the variant's square input, the
probabilities are resized back bilinearly and thresholded at a fixed value: never stretched per
image, so an image without the object gives no region.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import torch

from core_model.errors import InvalidImageError
from core_model.specialist.model import SpecialistModel

DEFAULT_THRESHOLD = 0.5
#: Probabilities in this open interval count as uncertain (active-learning signal).
UNCERTAIN_RANGE = (0.3, 0.7)


def image_tensor(image: npt.NDArray[np.uint8], side: int) -> torch.Tensor:
    """Return (1, 3, side, side) float32 in [0, 1] from an (H, W, 3) uint8 RGB image.

    Raises:
        InvalidImageError: not an (H, W, 3) uint8 array.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(
            f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(small).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Return (B, C, H, W) probabilities: sigmoid for one channel, softmax for several."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_probabilities(
    model: SpecialistModel, image: npt.NDArray[np.uint8]
) -> npt.NDArray[np.float32]:
    """Return (C, H, W) float32 probabilities in the image's own frame (C = model classes).

    Args:
        model: A specialist in eval mode.
        image: (H, W, 3) uint8 RGB.
    """
    device = next(model.decoder.parameters()).device
    height, width = image.shape[:2]
    x = image_tensor(image, model.variant.sam_size).to(device)
    prob = probabilities(model(x).float())[0].cpu().numpy()
    out = np.stack([cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in prob])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Region:
    """One connected component of a thresholded probability map.

    Attributes:
        mask: (H, W) bool in the image frame.
        score: Mean probability inside the mask.
        area_px: Foreground pixels.
        class_index: Channel of the class (0 for a binary specialist).
    """

    mask: npt.NDArray[np.bool_]
    score: float
    area_px: int
    class_index: int = 0


def foreground(
    prob: npt.NDArray[np.float32], *, threshold: float = DEFAULT_THRESHOLD
) -> npt.NDArray[np.bool_]:
    """Return (C', H, W) bool masks: (1, H, W) p > threshold, or the argmax per class >= 1."""
    if prob.shape[0] == 1:
        return prob > threshold
    winner = prob.argmax(axis=0)
    return np.stack([winner == c for c in range(1, prob.shape[0])])


def regions(
    prob: npt.NDArray[np.float32], *, threshold: float = DEFAULT_THRESHOLD, min_area_px: int = 16
) -> list[Region]:
    """Split the foreground into connected components of at least `min_area_px` pixels.

    Args:
        prob: (C, H, W) float32 probabilities from `predict_probabilities`.
        threshold: Fixed cut of a binary map.
        min_area_px: Smaller components are dropped.
    """
    out = []
    masks = foreground(prob, threshold=threshold)
    for index, mask in enumerate(masks):
        class_prob = prob[0] if prob.shape[0] == 1 else prob[index + 1]
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for label in range(1, count):
            component = labels == label
            area = int(component.sum())
            if area >= min_area_px:
                score = float(class_prob[component].mean())
                out.append(Region(component, score, area, 0 if prob.shape[0] == 1 else index + 1))
    return sorted(out, key=lambda r: -r.area_px)


def uncertain_share(prob: npt.NDArray[np.float32]) -> float:
    """Return the share of pixels whose top-class probability lies in `UNCERTAIN_RANGE`.

    For a binary map the probability itself is used (0.3 < p < 0.7).
    """
    top = prob[0] if prob.shape[0] == 1 else prob.max(axis=0)
    low, high = UNCERTAIN_RANGE
    return float(((top > low) & (top < high)).mean())

"""Image checks and the exact SAM-2 pre/post-processing, in plain torch.

The official predictor uses torchvision (ToTensor, Resize, Normalize), which has no CPU build
here; these functions reproduce it bit for bit: RGB uint8 -> float in [0, 1] -> bilinear resize
to image_size x image_size (align_corners=False, antialias) -> ImageNet mean/std. Masks come back
by bilinear upsampling of the low-resolution logits straight to the original size.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from core_model.errors import InvalidImageError

PREPROCESS_VERSION = "p1"  # bump when preprocessing changes: it is part of the cache key
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image(image: object, *, max_pixels: int) -> tuple[int, int]:
    """Validate an RGB image and return its (height, width).

    Args:
        image: (H, W, 3) uint8 numpy array, RGB.
        max_pixels: Largest accepted H * W.

    Raises:
        InvalidImageError: wrong type, dtype or shape, empty, or more than `max_pixels` pixels.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"image must have shape (H, W, 3) RGB, got {image.shape}")
    height, width = int(image.shape[0]), int(image.shape[1])
    if height == 0 or width == 0:
        raise InvalidImageError(f"image is empty: {image.shape}")
    if height * width > max_pixels:
        raise InvalidImageError(
            f"image has {height}x{width} = {height * width} pixels, more than the limit "
            f"{max_pixels}; downscale it first"
        )
    return height, width


def image_digest(image: npt.NDArray[np.uint8]) -> str:
    """Return a sha256 of the pixels and shape (a content hash for cache keys)."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def to_model_input(
    image: npt.NDArray[np.uint8], image_size: int, device: torch.device
) -> torch.Tensor:
    """Return the normalised (1, 3, S, S) float32 model input for an (H, W, 3) uint8 RGB image."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float().div(255)
    x = F.interpolate(
        x.unsqueeze(0),
        size=(image_size, image_size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_model_frame(
    coords_xy: npt.NDArray[np.float32], original_hw: tuple[int, int], image_size: int
) -> torch.Tensor:
    """Scale (..., 2) (x, y) original pixels to the model's square input frame (float32)."""
    height, width = original_hw
    t = torch.as_tensor(coords_xy, dtype=torch.float32).clone()
    # same operation order as the official transform: normalise, then scale
    t[..., 0] = t[..., 0] / width
    t[..., 1] = t[..., 1] / height
    return t * image_size


def upsample_masks(
    low_res_logits: torch.Tensor, original_hw: tuple[int, int], *, threshold: float = 0.0
) -> npt.NDArray[np.bool_]:
    """Upsample (B, h, w) logits bilinearly to (B, H, W) and threshold them.

    Rows are processed one at a time so a large image never holds B float copies.
    """
    out = np.empty((low_res_logits.shape[0], *original_hw), dtype=np.bool_)
    for i, row in enumerate(low_res_logits):
        logits = F.interpolate(
            row[None, None].float(), size=original_hw, mode="bilinear", align_corners=False
        )
        out[i] = (logits[0, 0] > threshold).cpu().numpy()
    return out

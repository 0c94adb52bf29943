"""Patch-feature extractors: the protocol and the types they share (`extractors` builds them).

An extractor turns an RGB image into a grid of patch features: the image is resized, aspect
kept, so its long side is `long_side` with both sides rounded **up** to a multiple of the patch
size, and one feature vector comes out per patch. Specs:

- ``color`` or ``color:PATCH``: the weight-free colour/texture/position extractor
  (`labeling_pipeline.pseudo_labels.color_features`), patch 8 by default.
- ``dinov3:PATH``: a DINOv3 ViT (ViT-S/16, ViT-B/16, ...) saved with `save_pretrained` in PATH.
- ``dinov2:PATH``: a DINOv2 ViT (with or without registers) saved the same way.

Transformers weights are only read from the local folder (``local_files_only=True``); torch and
transformers are imported when such an extractor is built, never at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.errors import FeatureExtractorError


@dataclass(frozen=True)
class PatchFeatures:
    """Features of one image on its patch grid.

    Attributes:
        features: (h, w, C) float32 patch features, row-major like the image (row = y).
        patch_size: Patch side in pixels of the resized image.
        image_hw: (H, W) of the image given to the extractor.
        resized_hw: (h * patch_size, w * patch_size), the size the image was resized to.
    """

    features: npt.NDArray[np.float32]
    patch_size: int
    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Return the patch grid size (h, w)."""
        return int(self.features.shape[0]), int(self.features.shape[1])

    def normalised(self) -> npt.NDArray[np.float32]:
        """Return (h * w, C) float32 features with unit L2 norm (zero rows stay zero)."""
        flat = self.features.reshape(-1, self.features.shape[-1]).astype(np.float32)
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = flat / np.maximum(norms, 1e-12)
        return out


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything that maps an (H, W, 3) uint8 RGB image to `PatchFeatures`."""

    name: str
    patch_size: int

    def extract(self, image: npt.NDArray[np.uint8]) -> PatchFeatures:
        """Return the patch features of `image` ((H, W, 3) uint8 RGB)."""
        ...


def resized_hw(height: int, width: int, *, long_side: int, patch_size: int) -> tuple[int, int]:
    """Return the (h, w) pixel size, multiples of `patch_size`, with the long side near `long_side`.

    The scale maps the long side to `long_side`; each side is then rounded up to a multiple of
    the patch size (at least one patch).
    """
    scale = long_side / max(height, width)
    h = max(1, math.ceil(round(height * scale, 6) / patch_size)) * patch_size
    w = max(1, math.ceil(round(width * scale, 6) / patch_size)) * patch_size
    return h, w


def check_image(image: npt.NDArray[np.uint8]) -> None:
    """Raise `FeatureExtractorError` unless `image` is an (H, W, 3) uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise FeatureExtractorError("image must be an (H, W, 3) uint8 RGB array")
    if image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise FeatureExtractorError(f"image must be (H, W, 3), got {image.shape}")

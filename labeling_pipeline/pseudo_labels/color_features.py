"""A weight-free patch-feature extractor: colour, simple texture, position and border contrast.

For tests and CPU demos, where no DINO weights are available. Per patch of the resized image:

- **colour**: a soft CIE-Lab histogram (each pixel spread over a 5 x 8 x 8 grid of Lab
  prototypes with separable Gaussian weights), so a two-colour texture gives one stable vector;
- **texture**: mean gradient energy, orientation coherence (doubled-angle gradient mean) and the
  lightness standard deviation, squashed to [0, 1);
- **position**: the patch centre, (x, y) scaled by the long side to [-1, 1];
- **border contrast**: one minus the colour similarity to the most similar tenth of the patches
  on the grid's outer ring (a boundary prior: colours seen at the image border are background),
  which gives the parts of one object a shared component, the role semantics plays for DINO.

Statistics are smoothed on the patch grid with a Gaussian of `window_px` (pixels of the input
image), so textures coarser than a patch still give uniform features over a region. The blocks
are weighted and the vector is L2-normalised: same part ~ 0.9-1, different parts of one object
~ 0.3-0.45 (above the N-cut's 0.2, below the last merge threshold 0.5), object vs background
below 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.errors import FeatureExtractorError
from labeling_pipeline.pseudo_labels.features import PatchFeatures, check_image, resized_hw

_L_CENTRES = np.linspace(0.0, 100.0, 5, dtype=np.float32)
_AB_CENTRES = np.linspace(-84.0, 84.0, 8, dtype=np.float32)
_HIST_DIMS = len(_L_CENTRES) * len(_AB_CENTRES) ** 2


@dataclass(frozen=True)
class ColorFeatureWeights:
    """Weights of the feature blocks (relative to the unit-norm colour histogram)."""

    colour: float = 1.0
    texture: float = 0.3
    position: float = 0.25
    border_contrast: float = 0.75


def _soft_assign(
    values: npt.NDArray[np.float32], centres: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Return (..., K) Gaussian weights of `values` (...) to 1-D `centres` (K); rows sum to 1."""
    sigma = np.float32(float(centres[1] - centres[0]) * 0.5)
    # exp(-0.5 * ((v - c) / sigma) ** 2), computed in place (one (..., K) buffer)
    weights: npt.NDArray[np.float32] = values[..., None] - centres
    weights /= sigma
    np.square(weights, out=weights)
    weights *= np.float32(-0.5)
    np.exp(weights, out=weights)
    weights /= np.maximum(weights.sum(axis=-1, keepdims=True), np.float32(1e-12))
    return weights


def _patchify(array: npt.NDArray[np.float32], patch: int) -> npt.NDArray[np.float32]:
    """Reshape (h*p, w*p, ...) into (h*w, p*p, ...)."""
    hp, wp = array.shape[:2]
    h, w = hp // patch, wp // patch
    rest = array.shape[2:]
    blocks = array.reshape(h, patch, w, patch, *rest).swapaxes(1, 2)
    return blocks.reshape(h * w, patch * patch, *rest)


def flatten_illumination(
    image: npt.NDArray[np.uint8], sigma_fraction: float
) -> npt.NDArray[np.uint8]:
    """Return the (H, W, 3) uint8 RGB image divided by its smooth brightness, chroma kept.

    The brightness is the luminance blurred with a Gaussian of `sigma_fraction` times the long
    side, normalised to its mean; a Gaussian leaves a linear ramp unchanged, so an illumination
    gradient across the image is removed while colours (ratios of R, G, B) stay as they are.
    """
    rgb = image.astype(np.float32)
    luminance = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sigma = sigma_fraction * max(image.shape[:2])
    smooth = cv2.GaussianBlur(luminance, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    gain = float(smooth.mean()) / np.maximum(smooth, 1.0)
    out: npt.NDArray[np.uint8] = np.clip(rgb * gain[..., None], 0, 255).astype(np.uint8)
    return out


class ColorTextureExtractor:
    """Weight-free features (see the module docstring).

    Args:
        patch_size: Patch side in pixels of the resized image (8 suits this extractor).
        long_side: Resize target of the long side.
        window_px: Smoothing scale in pixels of the input image.
        weights: Block weights.
        flatten_fraction: Illumination flattening scale as a fraction of the long side (0: off);
            see `flatten_illumination`. 0.2 is far larger than a part, so it follows lighting,
            not part colours.
    """

    name = "color"

    def __init__(
        self,
        *,
        patch_size: int = 8,
        long_side: int = 384,
        window_px: float = 3.0,
        weights: ColorFeatureWeights | None = None,
        flatten_fraction: float = 0.2,
    ):
        if patch_size < 2 or long_side < patch_size:
            raise FeatureExtractorError(
                f"color extractor needs patch_size >= 2 and long_side >= patch_size, "
                f"got {patch_size} and {long_side}"
            )
        self.patch_size = patch_size
        self.long_side = long_side
        self.window_px = window_px
        self.weights = weights or ColorFeatureWeights()
        self.flatten_fraction = flatten_fraction
        # set by the factory when this extractor stands in for missing DINO weights
        self.warning = ""

    def _colour_histograms(self, lab: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return (h*w, 320) mean soft histograms of the patches of an (h*p, w*p, 3) Lab image."""
        pixels = _patchify(lab, self.patch_size)  # (n, p*p, 3)
        w_l = _soft_assign(pixels[..., 0], _L_CENTRES)  # (n, P, 5)
        w_a = _soft_assign(pixels[..., 1], _AB_CENTRES)  # (n, P, 8)
        w_b = _soft_assign(pixels[..., 2], _AB_CENTRES)
        # the (L, a) outer product is 40 wide, (a, b) would be 64: same sums, less memory
        w_la = (w_l[..., :, None] * w_a[..., None, :]).reshape(*w_l.shape[:2], -1)  # (n, P, 40)
        hist = np.matmul(w_la.transpose(0, 2, 1), w_b) / pixels.shape[1]  # (n, 40, 8): L, a, b
        flat: npt.NDArray[np.float32] = hist.reshape(hist.shape[0], -1).astype(np.float32)
        return flat

    def _texture(self, lightness: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Return (h*w, 4) texture statistics of an (h*p, w*p) lightness image (0..100)."""
        gx = cv2.Sobel(lightness, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(lightness, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = np.sqrt(gx * gx + gy * gy)
        safe = np.maximum(magnitude, 1e-6)
        stacked = np.stack(
            [magnitude, (gx * gx - gy * gy) / safe, 2 * gx * gy / safe, lightness], axis=-1
        )
        blocks = _patchify(stacked.astype(np.float32), self.patch_size)
        mean = blocks.mean(axis=1)
        energy = mean[:, 0]
        coherence = mean[:, 1:3] / np.maximum(energy[:, None], 1e-6)
        spread = blocks[..., 3].std(axis=1)
        squash_energy = energy / (energy + 40.0)
        texture: npt.NDArray[np.float32] = np.concatenate(
            [
                squash_energy[:, None],
                coherence * squash_energy[:, None],
                (spread / (spread + 8.0))[:, None],
            ],
            axis=1,
        ).astype(np.float32)
        return texture

    def extract(self, image: npt.NDArray[np.uint8]) -> PatchFeatures:
        """Return (h, w, 327) float32 features of an (H, W, 3) uint8 RGB image."""
        check_image(image)
        height, width = image.shape[:2]
        size = resized_hw(height, width, long_side=self.long_side, patch_size=self.patch_size)
        shrink = size[0] * size[1] < height * width
        resized = cv2.resize(
            image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        if self.flatten_fraction > 0:
            resized = flatten_illumination(np.asarray(resized, np.uint8), self.flatten_fraction)
        # 8-bit Lab is ~100x faster than float Lab; rescale to L in [0, 100], a and b centred
        lab = cv2.cvtColor(np.ascontiguousarray(resized), cv2.COLOR_RGB2LAB).astype(np.float32)
        lab *= np.array([100.0 / 255.0, 1.0, 1.0], dtype=np.float32)
        lab -= np.array([0.0, 128.0, 128.0], dtype=np.float32)
        grid = size[0] // self.patch_size, size[1] // self.patch_size
        blocks = np.concatenate(
            [self._colour_histograms(lab), self._texture(np.ascontiguousarray(lab[..., 0]))],
            axis=1,
        ).reshape(*grid, -1)
        sigma = self.window_px * (size[0] / height) / self.patch_size
        if sigma > 0.3:
            blocks = cv2.GaussianBlur(blocks, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
            blocks = blocks.reshape(*grid, -1)
        features = self._assemble(blocks.reshape(grid[0] * grid[1], -1), grid)
        return PatchFeatures(features.reshape(*grid, -1), self.patch_size, (height, width), size)

    def _assemble(
        self, blocks: npt.NDArray[np.float32], grid: tuple[int, int]
    ) -> npt.NDArray[np.float32]:
        hist, texture = blocks[:, :_HIST_DIMS], blocks[:, _HIST_DIMS:]
        hist = hist / np.maximum(np.linalg.norm(hist, axis=1, keepdims=True), 1e-12)
        ring = np.zeros(grid, dtype=bool)
        ring[[0, -1], :] = True
        ring[:, [0, -1]] = True
        similarity = hist @ hist[ring.reshape(-1)].T  # (n, ring)
        # mean of the best 10 % rather than the maximum: a little clutter on the border must
        # not make its colour "background" everywhere
        top = max(1, similarity.shape[1] // 10)
        best = np.partition(similarity, similarity.shape[1] - top, axis=1)[:, -top:]
        contrast = np.clip(1.0 - best.mean(axis=1), 0.0, 1.0)
        yy, xx = np.mgrid[0 : grid[0], 0 : grid[1]].astype(np.float32)
        scale = max(grid) / 2.0
        position = np.stack([(xx + 0.5 - grid[1] / 2) / scale, (yy + 0.5 - grid[0] / 2) / scale])
        w = self.weights
        features = np.concatenate(
            [
                w.colour * hist,
                w.texture * texture,
                w.position * position.reshape(2, -1).T,
                w.border_contrast * contrast[:, None],
            ],
            axis=1,
        )
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        unit: npt.NDArray[np.float32] = features.astype(np.float32)
        return unit

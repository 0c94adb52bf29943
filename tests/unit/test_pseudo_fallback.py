"""The fallback instance: an image with a visible object never ends without masks."""

from __future__ import annotations

import numpy as np

from labeling_pipeline.pseudo_labels import PseudoLabelConfig, pseudo_label_image
from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
from labeling_pipeline.pseudo_labels.fallback import contrast_segmentation, fallback_instance
from labeling_pipeline.pseudo_labels.features import PatchFeatures


class UniformFeatures:
    """Every patch gets the same feature, so the divide can find nothing (a stand-in for
    features that fail on an image, which real extractors do on unusual scenes)."""

    name = "uniform"
    patch_size = 8

    def extract(self, image):
        h, w = image.shape[0] // 8 or 1, image.shape[1] // 8 or 1
        return PatchFeatures(np.ones((h, w, 4), np.float32), 8, image.shape[:2], (h * 8, w * 8))


def disc_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.full((120, 160, 3), (120, 125, 130), np.float32)
    yy, xx = np.mgrid[0:120, 0:160]
    disc = (yy - 60) ** 2 + (xx - 85) ** 2 < 30**2
    image[disc] = (220, 40, 40)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), disc


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_contrast_segmentation_finds_the_object() -> None:
    image, disc = disc_image()
    found = contrast_segmentation(image, min_area_fraction=0.01, min_contrast=12.0)
    assert found is not None and iou(found, disc) > 0.85


def test_plain_noise_has_no_fallback_region() -> None:
    rng = np.random.default_rng(1)
    noise = np.clip(rng.normal(128, 4, (120, 160, 3)), 0, 255).astype(np.uint8)
    mask, reason = fallback_instance(noise, [], min_area_fraction=0.01, min_contrast=12.0)
    assert mask is None and "no object found" in reason


def test_largest_divide_proposal_comes_first() -> None:
    image, _ = disc_image()
    small, large = np.zeros((120, 160), bool), np.zeros((120, 160), bool)
    small[:5, :5], large[10:30, 10:40] = True, True
    mask, reason = fallback_instance(image, [small, large], min_area_fraction=0.01,
                                     min_contrast=12.0)  # fmt: skip
    assert mask is large and "largest" in reason


def test_pipeline_falls_back_and_says_why() -> None:
    image, disc = disc_image()
    trace = StageTrace()
    masks = pseudo_label_image(image, UniformFeatures(), trace=trace)
    assert masks, "an image with a visible object must get masks"
    assert "colour-contrast" in trace.fallback
    head = next(m for m in masks if not m.is_part)
    assert head.source == "fallback" and iou(head.decode(), disc) > 0.8


def test_fallback_can_be_switched_off() -> None:
    image, _ = disc_image()
    config = PseudoLabelConfig(fallback=False)
    assert pseudo_label_image(image, UniformFeatures(), config=config) == []

"""Feature-extractor factory, resize rule and the weight-free colour/texture extractor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labeling_pipeline.evaluation.synthetic import generate_scene
from labeling_pipeline.pseudo_labels import FeatureExtractor, FeatureExtractorError
from labeling_pipeline.pseudo_labels.color_features import (
    ColorTextureExtractor,
    flatten_illumination,
)
from labeling_pipeline.pseudo_labels.extractors import build_feature_extractor
from labeling_pipeline.pseudo_labels.features import resized_hw


@pytest.mark.parametrize(
    ("hw", "long_side", "patch", "expected"),
    [
        ((480, 640), 768, 16, (576, 768)),
        ((1000, 600), 768, 16, (768, 464)),  # 460.8 rounded up to a multiple of 16
        ((100, 100), 768, 14, (770, 770)),  # DINOv2: 768 is not a multiple of 14
        ((3, 4000), 768, 16, (16, 768)),  # at least one patch
    ],
)
def test_resize_keeps_aspect_and_rounds_up(hw, long_side, patch, expected) -> None:
    assert resized_hw(*hw, long_side=long_side, patch_size=patch) == expected


def test_color_extractor_grid_and_normalisation() -> None:
    image = generate_scene(0).image  # 256 x 320
    extractor = build_feature_extractor("color")
    assert isinstance(extractor, FeatureExtractor) and extractor.patch_size == 8
    features = extractor.extract(image)
    assert features.resized_hw == (312, 384) and features.grid_hw == (39, 48)
    assert features.image_hw == (256, 320)
    assert features.features.dtype == np.float32
    assert np.allclose(np.linalg.norm(features.features, axis=-1), 1.0, atol=1e-5)
    assert build_feature_extractor("color:16").extract(image).grid_hw == (20, 24)


def test_color_features_separate_parts_and_background() -> None:
    scene = generate_scene(1)
    extractor = ColorTextureExtractor()
    features = extractor.extract(scene.image)
    grid = features.normalised().reshape(*features.grid_hw, -1)
    # sample the image masks at the patch centres (the image was upscaled by 1.2)
    scale = features.resized_hw[0] / scene.image.shape[0]
    ys = (np.arange(grid.shape[0]) * 8 + 4) / scale
    xs = (np.arange(grid.shape[1]) * 8 + 4) / scale
    centre = np.ix_(ys.astype(int), xs.astype(int))
    obj = scene.objects[0]
    background = ~np.logical_or.reduce([o.mask for o in scene.objects])
    a, b = (grid[p.mask[centre]] for p in obj.parts[:2])
    bg = grid[background[centre]]
    assert (a @ a.T).mean() > 0.8
    assert (a @ b.T).mean() < 0.5  # different parts do not merge at the last level
    assert (a @ bg.T).mean() < 0.2 and (b @ bg.T).mean() < 0.2  # below the N-cut tau


def test_flatten_illumination_removes_a_ramp_and_keeps_colours() -> None:
    # two colour halves under a left-to-right illumination ramp from 0.6 to 1.4
    height, width = 96, 128
    base = np.zeros((height, width, 3), dtype=np.float32)
    base[:, : width // 2] = (160, 80, 40)
    base[:, width // 2 :] = (40, 120, 160)
    ramp = np.linspace(0.6, 1.4, width, dtype=np.float32)[None, :, None]
    lit = np.clip(base * ramp, 0, 255).astype(np.uint8)
    flat = flatten_illumination(lit, 0.2).astype(np.float32)
    left, right = flat[:, 4 : width // 2 - 4], flat[:, width // 2 + 4 : -4]
    # the ramp is mostly gone within each half (the blur also spreads the step between the
    # halves, so not all of it): brightness varies far less than under the ramp
    for half, lit_half in ((left, lit[:, 4 : width // 2 - 4]), (right, lit[:, width // 2 + 4 :])):
        lit_brightness = lit_half.astype(np.float32).sum(axis=2)
        brightness = half.sum(axis=2)
        spread = brightness.std() / brightness.mean()
        assert spread < 0.5 * lit_brightness.std() / lit_brightness.mean()
    # colours keep their channel ratios
    assert abs(left[..., 0].mean() / left[..., 2].mean() - 4.0) < 0.3
    assert abs(right[..., 2].mean() / right[..., 1].mean() - 160 / 120) < 0.1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sift", "unknown feature extractor"),
        ("color:x", "integer"),
        ("color:1", "patch_size"),
        ("dinov3", "needs a weights folder"),
        ("dinov2:/no/such/folder", "config.json"),
    ],
)
def test_bad_specs_raise_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(FeatureExtractorError, match=message):
        build_feature_extractor(spec)


def test_wrong_model_kind_in_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(FeatureExtractorError, match="not dinov3"):
        build_feature_extractor(f"dinov3:{tmp_path}")


def test_extractor_refuses_bad_images() -> None:
    extractor = ColorTextureExtractor()
    with pytest.raises(FeatureExtractorError):
        extractor.extract(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(FeatureExtractorError):
        extractor.extract(np.zeros((10, 10, 3), dtype=np.float32))

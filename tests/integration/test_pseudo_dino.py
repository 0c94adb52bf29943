"""DINOv2 / DINOv3 extractors: tiny random configs saved with save_pretrained and loaded back
the way users' downloaded weights are (`dinov3:PATH`, `local_files_only`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
)

from labeling_pipeline.evaluation.synthetic import generate_scene
from labeling_pipeline.pseudo_labels import build_feature_extractor, pseudo_label_image_file
from labeling_pipeline.pseudo_labels.dino_features import dinov3_vit_config

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    models = {
        "dinov3": DINOv3ViTModel(
            DINOv3ViTConfig(patch_size=16, intermediate_size=64, num_register_tokens=4, **TINY)
        ),
        "dinov2": Dinov2Model(Dinov2Config(patch_size=14, mlp_ratio=2, image_size=56, **TINY)),
        "dinov2-registers": Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(
                patch_size=14, mlp_ratio=2, image_size=56, num_register_tokens=4, **TINY
            )
        ),
    }
    paths = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def reference_tokens(model, image: np.ndarray, size: tuple[int, int], prefix: int) -> np.ndarray:
    """Resize RGB with antialias, ImageNet-normalise, run the model, drop CLS and registers."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model(pixel_values=(x - mean) / std).last_hidden_state[0, prefix:]
    return tokens.numpy()


@pytest.mark.parametrize(
    ("kind", "folder", "patch", "prefix"),
    [
        ("dinov3", "dinov3", 16, 5),
        ("dinov2", "dinov2", 14, 1),
        ("dinov2", "dinov2-registers", 14, 5),
    ],
)
def test_extractor_returns_rgb_patch_tokens(weights, kind, folder, patch, prefix) -> None:
    image = generate_scene(0).image  # 256 x 320
    extractor = build_feature_extractor(f"{kind}:{weights[folder]}", long_side=96)
    features = extractor.extract(image)
    expected_hw = (96 * 256 // 320 + patch - 1) // patch * patch, (96 + patch - 1) // patch * patch
    assert features.resized_hw == expected_hw and features.patch_size == patch
    assert features.features.shape == (expected_hw[0] // patch, expected_hw[1] // patch, 32)
    model = extractor.model  # the loaded copy: weights came from the folder
    reference = reference_tokens(model, image, expected_hw, prefix)
    assert np.allclose(features.features.reshape(-1, 32), reference, atol=1e-5)
    bgr = reference_tokens(model, np.ascontiguousarray(image[..., ::-1]), expected_hw, prefix)
    assert not np.allclose(features.features.reshape(-1, 32), bgr, atol=1e-3)  # fed RGB, not BGR


def test_loaded_weights_equal_the_saved_ones(weights) -> None:
    extractor = build_feature_extractor(f"dinov3:{weights['dinov3']}")
    saved = DINOv3ViTModel.from_pretrained(weights["dinov3"], local_files_only=True)
    for (name, a), (_, b) in zip(
        extractor.model.state_dict().items(), saved.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert extractor.long_side == 768


def test_pipeline_runs_with_dino_features(weights, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(generate_scene(1).image).save(path)
    extractor = build_feature_extractor(f"dinov3:{weights['dinov3']}", long_side=128)
    result = pseudo_label_image_file(path, tmp_path / "out", extractor=extractor)
    assert result.status == "done"
    payload = json.loads(result.json_path.read_text())
    assert payload["info"]["features"].startswith("dinov3")
    assert len(payload["annotations"]) == result.num_masks


def test_real_size_config_fields() -> None:
    config = dinov3_vit_config("vitb16")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        768,
        12,
        12,
    )
    assert (config.patch_size, config.num_register_tokens, config.intermediate_size) == (
        16,
        4,
        3072,
    )
    assert dinov3_vit_config("vits16").hidden_size == 384

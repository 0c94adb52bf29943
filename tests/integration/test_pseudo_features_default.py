"""The default extractor: the best DINO model in the weights folder, else color with a warning.

Models are tiny random DINOv2/DINOv3 configs saved with `save_pretrained` in the layout that
`unsamv2 weights download` writes (``weights/features/<name>/``).
"""

from __future__ import annotations

import json

import torch
from transformers import Dinov2Config, Dinov2Model, DINOv3ViTConfig, DINOv3ViTModel

from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.model_files.hub import best_feature_spec, model_dir
from labeling_pipeline.pseudo_labels import build_feature_extractor, pseudo_label_image_file
from ml_backend.settings import Settings

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def save_dinov2_small(weights):
    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(patch_size=14, mlp_ratio=2, image_size=56, **TINY))
    model.save_pretrained(model_dir(weights, "dinov2-small"))


def save_dinov3_vitb16(weights):
    torch.manual_seed(0)
    config = DINOv3ViTConfig(patch_size=16, intermediate_size=64, num_register_tokens=4, **TINY)
    DINOv3ViTModel(config).save_pretrained(model_dir(weights, "dinov3-vitb16"))


def test_empty_weights_folder_falls_back_to_color_with_a_warning(tmp_path) -> None:
    spec, warning = best_feature_spec(tmp_path)
    assert spec == "color"
    assert "unsamv2 weights download" in warning
    extractor = build_feature_extractor(f"auto:{tmp_path}")
    assert extractor.name == "color" and extractor.warning == warning


def test_the_best_model_present_is_chosen(tmp_path) -> None:
    save_dinov2_small(tmp_path)
    spec, warning = best_feature_spec(tmp_path)
    assert spec == f"dinov2:{model_dir(tmp_path, 'dinov2-small')}" and warning == ""
    save_dinov3_vitb16(tmp_path)
    spec, _ = best_feature_spec(tmp_path)
    assert spec.startswith("dinov3:") and spec.endswith("dinov3-vitb16")
    extractor = build_feature_extractor(f"auto:{tmp_path}", long_side=64)
    assert extractor.name.startswith("dinov3")
    assert getattr(extractor, "warning", "") == ""


def test_a_half_written_model_folder_is_not_chosen(tmp_path) -> None:
    folder = model_dir(tmp_path, "dinov2-base")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # no weights file yet
    assert best_feature_spec(tmp_path)[0] == "color"


def test_settings_default_to_auto_in_the_weights_folder(tmp_path) -> None:
    settings = Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path)})
    assert settings.pipeline.features == f"auto:{tmp_path / 'weights'}"
    explicit = Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path), "UNSAMV2_FEATURES": "color"})
    assert explicit.pipeline.features == "color"


def test_the_fallback_warning_is_written_with_every_image(tmp_path) -> None:
    from PIL import Image

    scene = generate_scene(0, SceneConfig(height=96, width=128, min_objects=1, max_objects=1))
    Image.fromarray(scene.image).save(tmp_path / "a.png")
    extractor = build_feature_extractor(f"auto:{tmp_path / 'weights'}")
    result = pseudo_label_image_file(tmp_path / "a.png", tmp_path / "out", extractor=extractor)
    info = json.loads(result.json_path.read_text())["info"]
    assert "no DINO feature weights" in info["features_warning"]

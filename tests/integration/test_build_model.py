"""build_model: packaged variants, YAML files (ours, official-style, stock SAM-2.1), errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from core_model.build import build_model
from core_model.config import MODEL_VARIANTS, load_model_config, sam2_package_dir
from core_model.errors import ModelConfigError


def test_variants_are_listed() -> None:
    assert set(MODEL_VARIANTS) == {"tiny", "small", "base_plus", "large", "test-tiny"}


def test_test_tiny_builds_in_eval_mode_frozen(tiny_model) -> None:
    assert not tiny_model.training
    assert not any(p.requires_grad for p in tiny_model.parameters())
    assert tiny_model.image_size == 256 and tiny_model.low_res_size == 64
    assert tiny_model.info.checkpoint_kind == "random"
    assert tiny_model.info.granularity_mode == "granularity"


def test_same_seed_gives_the_same_weights_and_distinct_versions() -> None:
    torch.manual_seed(3)
    a = build_model("test-tiny")
    torch.manual_seed(3)
    b = build_model("test-tiny")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert a.info.version != b.info.version  # random weights are never confused in caches


def test_small_matches_the_official_parameter_layout() -> None:
    """Hiera-S + granularity modules: 533 tensors, 46,312,162 elements, as released."""
    model = build_model("small")
    state = model.state_dict()
    assert len(state) == 533
    assert sum(v.numel() for v in state.values()) == 46_312_162


def _write_yaml(tmp_path: Path, model_cfg: dict, name: str = "custom.yaml") -> Path:
    path = tmp_path / name
    OmegaConf.save(OmegaConf.create({"model": model_cfg}), path)
    return path


def test_yaml_path_official_style_builds_the_same_model(tmp_path: Path) -> None:
    cfg, _ = load_model_config("test-tiny")
    as_dict = OmegaConf.to_container(cfg)
    as_dict["_target_"] = "sam2.modeling.sam2_base.SAM2Base"  # as in unsamv2_small.yaml
    as_dict["lora_rank"] = 8
    path = _write_yaml(tmp_path, as_dict)
    torch.manual_seed(1)
    from_yaml = build_model(path)
    torch.manual_seed(1)
    from_variant = build_model("test-tiny")
    assert from_yaml.info.config_name == "custom"
    for key, value in from_variant.state_dict().items():
        assert torch.equal(from_yaml.state_dict()[key], value)


def test_stock_sam2_yaml_gets_the_granularity_modules(tmp_path: Path) -> None:
    stock = OmegaConf.load(sam2_package_dir() / "configs/sam2.1/sam2.1_hiera_t.yaml")
    cfg, _ = load_model_config(Path(_write_yaml(tmp_path, OmegaConf.to_container(stock.model))))
    assert cfg.fourier_dim == 128 and cfg.temperature == 100
    assert cfg._target_ == "core_model.modeling.unsamv2.UnSAMv2Model"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("medium", "unknown model config 'medium'.*small"),
        ("missing.yaml", "unknown model config"),
    ],
)
def test_unknown_configs(config: str, match: str) -> None:
    with pytest.raises(ModelConfigError, match=match):
        build_model(config)


def test_bad_yaml_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ModelConfigError, match="cannot read"):
        build_model(broken)
    no_model = tmp_path / "nomodel.yaml"
    no_model.write_text("trainer: {}\n")
    with pytest.raises(ModelConfigError, match="no 'model' section"):
        build_model(no_model)
    wrong_target = _write_yaml(tmp_path, {"_target_": "os.system"}, "target.yaml")
    with pytest.raises(ModelConfigError, match="_target_"):
        build_model(wrong_target)
    cfg, _ = load_model_config("test-tiny")
    bad = OmegaConf.to_container(cfg)
    bad["bogus_argument"] = 1
    with pytest.raises(ModelConfigError, match="cannot build"):
        build_model(_write_yaml(tmp_path, bad, "bad.yaml"))


def test_unknown_device_is_a_config_error() -> None:
    with pytest.raises(ModelConfigError, match="device"):
        build_model("test-tiny", device="quantum")

"""The task specialist network: shapes, parameter counts, base weights and the specialist file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from core_model.errors import CheckpointError, CheckpointMismatchError, ModelConfigError
from core_model.specialist import (
    DEFAULT_VARIANT,
    BaseRef,
    BaseWeightsChangedError,
    SpecialistModel,
    build_specialist,
    get_variant,
    load_dino_weights,
    load_hiera_weights,
    load_specialist,
    parameter_counts,
    regions,
    save_specialist,
    trainable_state_dict,
    uncertain_share,
)
from core_model.specialist.model import is_frozen_key
from core_model.specialist.weights import TRUNK_PREFIX


@pytest.fixture(scope="module")
def tiny() -> SpecialistModel:
    return build_specialist("test-tiny", seed=1)


def test_default_variant_matches_the_reference_parameter_table() -> None:
    model = build_specialist("default", device="meta")
    counts = parameter_counts(model)
    assert model.variant.name == DEFAULT_VARIANT
    assert round(counts["adapters"] / 1e6, 2) == 1.71
    assert round(counts["glue"] / 1e6, 2) == 2.77
    assert round(counts["decoder"] / 1e6, 2) == 1.48
    assert round(counts["trainable"] / 1e6, 2) == 5.96
    assert round(counts["trunk"] / 1e6, 1) == 212.1
    assert 303e6 < counts["dino"] < 305e6
    assert next(model.parameters()).device.type == "meta"


def test_unknown_variant_names_the_known_ones() -> None:
    with pytest.raises(ModelConfigError, match="test-tiny"):
        get_variant("hiera-huge")


def test_forward_shapes_and_only_the_task_parts_learn(tiny: SpecialistModel) -> None:
    side = tiny.variant.sam_size
    tiny.train()
    logits = tiny(torch.rand(2, 3, side, side))
    assert logits.shape == (2, 1, side, side)
    logits.mean().backward()
    with_grad = {n for n, p in tiny.named_parameters() if p.grad is not None}
    assert with_grad, "no gradient reached the trainable parts"
    assert all(not is_frozen_key(n) for n in with_grad)
    assert any(".adapter." in n for n in with_grad)  # through the frozen trunk
    assert all(not p.requires_grad for n, p in tiny.named_parameters() if n.startswith("dino."))
    tiny.zero_grad(set_to_none=True)
    tiny.eval()


def test_multi_class_head() -> None:
    model = build_specialist("test-tiny", num_classes=3)
    out = model(torch.rand(1, 3, 128, 128))
    assert out.shape == (1, 3, 128, 128)


def _sam_checkpoint(model: SpecialistModel, path: Path) -> Path:
    trunk = {}
    for key, value in model.trunk.state_dict().items():
        if ".adapter." not in key:
            trunk[TRUNK_PREFIX + key.replace(".block.", ".", 1)] = value.clone() + 1.0
    trunk["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 4)
    torch.save({"model": trunk}, path)
    return path


def test_hiera_trunk_loads_strictly_from_a_sam2_checkpoint(tmp_path: Path) -> None:
    model = build_specialist("test-tiny")
    path = _sam_checkpoint(build_specialist("test-tiny", seed=5), tmp_path / "sam.pt")
    ref = load_hiera_weights(model, path)
    state = torch.load(path, weights_only=True)["model"]
    loaded = model.trunk.state_dict()["blocks.0.block.attn.qkv.weight"]
    assert torch.equal(loaded, state[TRUNK_PREFIX + "blocks.0.attn.qkv.weight"])
    assert ref.sha256 is not None and len(ref.sha256) == 64

    del state[TRUNK_PREFIX + "blocks.1.mlp.layers.0.weight"]
    torch.save({"model": state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        load_hiera_weights(model, tmp_path / "broken.pt")
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="image_encoder.trunk"):
        load_hiera_weights(model, tmp_path / "other.pt")


def _to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write a saved transformers DINOv2 state dict under timm names (the inverse of the loader)."""
    top = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    out = {top[k]: v for k, v in state.items() if k in top}
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}
    for i in layers:
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [state[f"{p}attention.attention.{n}.{kind}"] for n in ("query", "key", "value")]
            )
            out[f"blocks.{i}.attn.proj.{kind}"] = state[f"{p}attention.output.dense.{kind}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"blocks.{i}.{name}.{kind}"] = state[f"{p}{name}.{kind}"]
        out[f"blocks.{i}.ls1.gamma"] = state[f"{p}layer_scale1.lambda1"]
        out[f"blocks.{i}.ls2.gamma"] = state[f"{p}layer_scale2.lambda1"]
    return {k: v.contiguous() for k, v in out.items()}


def test_dinov2_loads_from_save_pretrained_and_from_timm_names(tmp_path: Path) -> None:
    source = build_specialist("test-tiny", seed=7)
    source.dino.save_pretrained(tmp_path / "dino")
    x = torch.rand(1, 3, 128, 128)
    want = source.dino_features(source.normalise(x))

    from_folder = build_specialist("test-tiny")
    load_dino_weights(from_folder, tmp_path / "dino")
    assert torch.allclose(from_folder.dino_features(from_folder.normalise(x)), want, atol=1e-6)

    saved = load_file(str(tmp_path / "dino" / "model.safetensors"))  # the Hub's naming
    state = {k: v for k, v in saved.items() if k != "embeddings.mask_token"}
    save_file(_to_timm(state), str(tmp_path / "timm.safetensors"))
    from_timm = build_specialist("test-tiny")
    load_dino_weights(from_timm, tmp_path / "timm.safetensors")
    assert torch.allclose(from_timm.dino_features(from_timm.normalise(x)), want, atol=1e-6)

    save_file({"blocks.0.reg_token": torch.zeros(1)}, str(tmp_path / "reg.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="reg_token"):
        load_dino_weights(from_timm, tmp_path / "reg.safetensors")
    big = build_specialist("hiera-tiny256_dinov2-small224", device="meta")
    with pytest.raises(CheckpointMismatchError, match="hidden_size"):
        load_dino_weights(big, tmp_path / "dino")


def test_specialist_file_holds_only_trained_tensors_and_checks_its_bases(tmp_path: Path) -> None:
    model = build_specialist("test-tiny")
    sam = _sam_checkpoint(build_specialist("test-tiny", seed=3), tmp_path / "sam.pt")
    hiera = load_hiera_weights(model, sam)
    for p in model.decoder.parameters():
        p.data.add_(0.5)
    norm = next(m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert norm.running_mean is not None
    norm.running_mean.fill_(0.25)  # a BatchNorm buffer
    path = save_specialist(
        tmp_path / "s.pt", model, hiera=hiera, dino=BaseRef(seed=0), labels=["ship"]
    )
    saved = torch.load(path, weights_only=True)["state"]
    assert set(saved) == set(trainable_state_dict(model))
    assert not any(is_frozen_key(k) for k in saved)
    assert any(k.endswith("running_mean") for k in saved)

    loaded = load_specialist(path)
    x = torch.rand(1, 3, 128, 128)
    assert loaded.labels == ["ship"]
    assert torch.allclose(loaded.model(x), model.eval()(x), atol=1e-5)

    torch.save({"model": {}}, sam)  # the base file changed
    with pytest.raises(BaseWeightsChangedError, match="changed"):
        load_specialist(path)


def test_regions_threshold_fixed_and_uncertainty() -> None:
    prob = np.zeros((1, 40, 40), np.float32)
    prob[0, 2:12, 2:12] = 0.9
    prob[0, 20:22, 20:22] = 0.8  # 4 px: below the minimum area
    prob[0, 30:40, 30:40] = 0.45  # uncertain, below the threshold
    found = regions(prob, min_area_px=16)
    assert [r.area_px for r in found] == [100]
    assert found[0].score == pytest.approx(0.9)
    assert regions(np.full((1, 8, 8), 0.2, np.float32)) == []  # no stretch of a dim map
    assert uncertain_share(prob) == pytest.approx(100 / 1600)

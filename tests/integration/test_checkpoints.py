"""The three checkpoint kinds, strict loading, LoRA merging and the official round trip."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core_model.build import build_model
from core_model.checkpoint import (
    granularity_state_dict,
    is_granularity_key,
    save_finetuned_checkpoint,
    save_official_checkpoint,
)
from core_model.errors import CheckpointError, CheckpointMismatchError
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts

PROMPTS = Prompts.from_arrays([[60.5, 40.0], [20.0, 80.0]], [1, 0])


def low_res(model, image: np.ndarray, granularity: float = 0.4) -> np.ndarray:
    predictor = GranularityPredictor(model)
    return predictor.predict(
        predictor.embed(image), PROMPTS, granularity=granularity
    ).low_res_logits


def test_the_tiny_model_has_the_real_decoder_and_lora_shapes(tiny_model) -> None:
    names = [n for n, _ in tiny_model.named_modules()]
    targets = [
        n
        for n in names
        if n.startswith("sam_mask_decoder.transformer.")
        and n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "out_proj")
    ]
    assert len(targets) == 28
    granularity = {k: v for k, v in tiny_model.state_dict().items() if is_granularity_key(k)}
    assert len(granularity) == 14
    assert sum(v.numel() for v in granularity.values()) == 251_552


def test_official_checkpoint_loads_with_lora_merged(official_checkpoint: Path) -> None:
    model = build_model("test-tiny", official_checkpoint)
    assert model.info.checkpoint_kind == "official"
    assert model.info.granularity_mode == "granularity"
    assert model.info.version.startswith("test-tiny-official-")
    raw = torch.load(official_checkpoint, weights_only=True)["model"]
    key = "sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.v_proj"
    base = raw[f"{key}.original_layer.weight"]
    expected = base + 2.0 * raw[f"{key}.lora_B"] @ raw[f"{key}.lora_A"]
    assert not torch.allclose(expected, base)
    torch.testing.assert_close(model.state_dict()[f"{key}.weight"], expected)
    assert torch.equal(model.state_dict()[f"{key}.bias"], raw[f"{key}.original_layer.bias"])


def test_lora_merge_equals_unmerged_peft_lora(
    make_tiny, official_checkpoint: Path, scene_image
) -> None:
    """Merged weights give the logits of peft's unmerged LoRA (r 8, alpha 16) on the base."""
    from peft import LoraConfig, inject_adapter_in_model

    raw = torch.load(official_checkpoint, weights_only=True)["model"]
    unmerged = make_tiny()
    base = {k.replace(".original_layer.", "."): v for k, v in raw.items() if "lora_" not in k}
    unmerged.load_state_dict(base)
    transformer = unmerged.sam_mask_decoder.transformer
    inject_adapter_in_model(
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.1,
            target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
        ),
        transformer,
    )
    peft_state = transformer.state_dict()
    for key in list(peft_state):
        if ".lora_A.default.weight" in key or ".lora_B.default.weight" in key:
            name, half = key.split(".lora_")
            peft_state[key] = raw[f"sam_mask_decoder.transformer.{name}.lora_{half[0]}"]
    transformer.load_state_dict(peft_state)
    unmerged.eval()

    merged = build_model("test-tiny", official_checkpoint)
    np.testing.assert_allclose(
        low_res(merged, scene_image), low_res(unmerged, scene_image), atol=1e-5, rtol=0
    )


def test_official_round_trip(official_checkpoint: Path, tmp_path: Path, scene_image) -> None:
    first = build_model("test-tiny", official_checkpoint)
    out = save_official_checkpoint(first, tmp_path / "exported.pt")
    original = torch.load(official_checkpoint, weights_only=True)["model"]
    exported = torch.load(out, weights_only=True)
    assert set(exported) == {"model"}
    exported = exported["model"]
    assert set(exported) == set(original)
    assert all(exported[k].shape == original[k].shape for k in original)
    assert sum(k.endswith(".lora_A") for k in exported) == 28
    second = build_model("test-tiny", out)
    assert second.info.checkpoint_kind == "official"
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key
    np.testing.assert_array_equal(low_res(first, scene_image), low_res(second, scene_image))


def test_exporting_a_peft_model_keeps_its_lora_unmerged(
    make_tiny, tmp_path: Path, scene_image
) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    model = make_tiny()
    inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
        model.sam_mask_decoder.transformer,
    )
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    model.eval()
    path = save_official_checkpoint(model, tmp_path / "from_peft.pt")
    state = torch.load(path, weights_only=True)["model"]
    key = "sam_mask_decoder.transformer.final_attn_token_to_image.q_proj"
    assert state[f"{key}.lora_A"].shape == (4, 256)
    assert state[f"{key}.lora_B"].abs().sum() > 0  # scaled from peft's alpha / r = 4 to 2
    assert not any(".base_layer." in k or ".default." in k for k in state)
    reloaded = build_model("test-tiny", path)
    np.testing.assert_allclose(
        low_res(reloaded, scene_image), low_res(model, scene_image), atol=1e-5, rtol=0
    )


def test_plain_sam2_checkpoint_falls_back_to_multimask(sam2_checkpoint: Path, scene_image) -> None:
    model = build_model("test-tiny", sam2_checkpoint)
    assert model.info.checkpoint_kind == "sam2"
    assert model.info.granularity_mode == "sam2-multimask"
    predictor = GranularityPredictor(model)
    embedding = predictor.embed(scene_image)
    result = predictor.predict_many(embedding, PROMPTS, [0.1, 0.5, 1.0])
    assert result.mode == "sam2-multimask"
    areas = result.masks.reshape(3, -1).sum(1)
    assert areas[0] <= areas[1] <= areas[2]
    coords, labels = predictor._prompt_tensors(PROMPTS, embedding.original_hw)
    stock = model.decode_sam2(embedding.image_embed, embedding.high_res_features, coords, labels)
    stock_logits = stock.low_res_logits[0].clamp(-32, 32).numpy()
    for row in result.low_res_logits:  # each answer is one of SAM-2's three masks
        assert min(np.abs(row - candidate).max() for candidate in stock_logits) < 1e-5


def test_finetuned_checkpoint_applies_its_parts_on_the_base(
    make_tiny, official_checkpoint: Path, tmp_path: Path
) -> None:
    base_model = build_model("test-tiny", official_checkpoint)
    trained = make_tiny(99)  # stands in for trained granularity modules
    granularity = granularity_state_dict(trained)
    key = "sam_mask_decoder.transformer.layers.0.self_attn.q_proj"
    a, b = torch.randn(8, 256), torch.randn(256, 8) * 0.01
    path = save_finetuned_checkpoint(
        tmp_path / "versions" / "v1.pt",
        base_checkpoint=official_checkpoint,
        granularity_state=granularity,
        lora_tensors={f"{key}.lora_A": a, f"{key}.lora_B": b},
        metadata={"steps": 10, "loss": 0.5},
    )
    model = build_model("test-tiny", path)
    assert model.info.checkpoint_kind == "finetuned"
    state, base_state = model.state_dict(), base_model.state_dict()
    for name, value in granularity.items():
        assert torch.equal(state[name], value)
    torch.testing.assert_close(state[f"{key}.weight"], base_state[f"{key}.weight"] + 2.0 * b @ a)
    other = "sam_mask_decoder.transformer.layers.0.self_attn.k_proj.weight"
    assert torch.equal(state[other], base_state[other])


def test_finetuned_checkpoint_refuses_a_changed_or_missing_base(
    make_tiny, official_checkpoint: Path, tmp_path: Path
) -> None:
    model = make_tiny()
    path = save_finetuned_checkpoint(
        tmp_path / "v.pt",
        base_checkpoint=official_checkpoint,
        granularity_state=granularity_state_dict(model),
    )
    data = torch.load(official_checkpoint, weights_only=True)
    data["epoch"] = 6
    torch.save(data, official_checkpoint)
    with pytest.raises(CheckpointError, match="changed"):
        build_model("test-tiny", path)
    official_checkpoint.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("test-tiny", path)


def test_finetuned_checkpoint_with_incomplete_granularity_is_refused(
    make_tiny, official_checkpoint: Path, tmp_path: Path
) -> None:
    partial = dict(list(granularity_state_dict(make_tiny()).items())[:-1])
    path = save_finetuned_checkpoint(
        tmp_path / "v.pt", base_checkpoint=official_checkpoint, granularity_state=partial
    )
    with pytest.raises(CheckpointMismatchError, match="1 missing key"):
        build_model("test-tiny", path)


def _save(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "edited.pt"
    torch.save({"model": state}, path)
    return path


def test_mismatch_names_the_first_missing_and_unexpected_keys(
    official_checkpoint: Path, tmp_path: Path
) -> None:
    state = torch.load(official_checkpoint, weights_only=True)["model"]
    del state["sam_mask_decoder.iou_token.weight"]
    state["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError) as info:
        build_model("test-tiny", _save(tmp_path, state))
    message = str(info.value)
    assert "sam_mask_decoder.iou_token.weight" in message
    assert "sam_mask_decoder.extra_head.weight" in message
    assert "1 missing" in message and "1 unexpected" in message


def test_mismatch_names_mis_shaped_tensors(official_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(official_checkpoint, weights_only=True)["model"]
    state["sam_mask_decoder.gra_token.weight"] = torch.zeros(1, 128)
    with pytest.raises(CheckpointMismatchError, match=r"gra_token.weight.*\(1, 128\).*\(1, 256\)"):
        build_model("test-tiny", _save(tmp_path, state))


def test_a_checkpoint_of_another_size_is_refused(official_checkpoint: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="another model size"):
        build_model("tiny", official_checkpoint)


def test_non_strict_loading_skips_unmatched_tensors(
    official_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = torch.load(official_checkpoint, weights_only=True)["model"]
    state["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    model = build_model("test-tiny", _save(tmp_path, state), strict=False)
    assert model.info.checkpoint_kind == "official"
    assert "skipping 1 unmatched" in caplog.text


def test_incomplete_lora_pair_is_refused(official_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(official_checkpoint, weights_only=True)["model"]
    del state["sam_mask_decoder.transformer.layers.0.self_attn.q_proj.lora_B"]
    with pytest.raises(CheckpointMismatchError, match="incomplete"):
        build_model("test-tiny", _save(tmp_path, state))


@pytest.mark.parametrize(
    "content",
    [
        b"not a checkpoint at all",
        pickle.dumps({"model": object()}, protocol=2),
        None,
        "list",
        "empty",
    ],
)
def test_unreadable_or_unknown_files_give_checkpoint_errors(tmp_path: Path, content) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        path = tmp_path / "missing.pt"
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif content == "empty":
        torch.save({"model": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError):
        build_model("test-tiny", path)

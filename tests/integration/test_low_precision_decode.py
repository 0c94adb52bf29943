"""The bfloat16 grid decoder against the float32 one, on the tiny random model.

The tiny model's logits are small (|logit| < 0.5), so bfloat16 rounding moves more pixels
across the threshold here than on trained weights, whose logits are far from it almost
everywhere: the bounds below are loose for trained models.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import core_model.low_precision as low_precision
from core_model.build import build_model
from core_model.grid_decode import decode_shared
from core_model.low_precision import LowPrecisionDecoders, resolve_precision
from core_model.predictor import GranularityPredictor
from core_model.preprocess import to_model_frame
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from core_model.whole_image_reference import compare_masks
from ml_backend.cli.bench_images import bench_image

ALL_KEPT = WholeImageConfig(
    points_per_side=8,
    points_per_batch=16,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    box_nms_thresh=1.0,
    max_masks=1000,
)


@pytest.fixture(scope="module")
def predictor(tiny_model) -> GranularityPredictor:
    return GranularityPredictor(tiny_model)


@pytest.fixture(scope="module", params=[0, 1])
def embedding(request, predictor):
    return predictor.embed(bench_image(128, 96, seed=request.param))


def _clicks(embedding, predictor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    points = np.random.default_rng(5).uniform(0, 96, size=(count, 2)).astype(np.float32)
    coords = to_model_frame(points, embedding.original_hw, predictor.image_size)[:, None]
    return coords, torch.ones(count, 1, dtype=torch.int32), torch.linspace(0.1, 1.0, count)


def test_bfloat16_decoder_stays_close_to_float32(tiny_model, predictor, embedding) -> None:
    coords, labels, g = _clicks(embedding, predictor, 20)
    args = (embedding.image_embed, embedding.high_res_features, coords, labels, g[:, None])
    low = LowPrecisionDecoders().get(tiny_model.sam_mask_decoder)
    with torch.no_grad():
        full = decode_shared(tiny_model, *args)
        half = decode_shared(tiny_model, *args, decoder=low)
    assert half.low_res_logits.dtype == torch.float32 and half.iou.dtype == torch.float32
    assert not torch.equal(full.low_res_logits, half.low_res_logits)  # it did run in bfloat16
    torch.testing.assert_close(half.low_res_logits, full.low_res_logits, atol=0.02, rtol=0.0)
    torch.testing.assert_close(half.iou, full.iou, atol=0.01, rtol=0.0)


def test_predictor_uses_bfloat16_only_for_shared_grid_decodes(predictor, embedding) -> None:
    coords, labels, g = _clicks(embedding, predictor, 16)
    full = predictor.decode(embedding, coords, labels, g.tolist())
    half = predictor.decode(embedding, coords, labels, g.tolist(), precision="bfloat16")
    assert not torch.equal(full.low_res_logits, half.low_res_logits)
    few = predictor.decode(embedding, coords[:4], labels[:4], g[:4].tolist(), precision="bfloat16")
    torch.testing.assert_close(few.low_res_logits, full.low_res_logits[:4])  # float32 path


def test_bfloat16_grid_masks_agree_click_by_click(predictor, embedding) -> None:
    granularities = (0.3, 1.0)
    full = WholeImageSegmenter(predictor, replace(ALL_KEPT, decode_precision="float32")).run(
        embedding, granularities=granularities
    )
    half = WholeImageSegmenter(predictor, replace(ALL_KEPT, decode_precision="bfloat16")).run(
        embedding, granularities=granularities
    )
    assert len(full.masks) == len(half.masks) == 128
    by_click = {(m.granularity, m.point_xy): m for m in half.masks}
    assert set(by_click) == {(m.granularity, m.point_xy) for m in full.masks}
    for m in full.masks:
        other = by_click[(m.granularity, m.point_xy)]
        assert abs(m.score - other.score) < 0.01
        assert (m.mask != other.mask).mean() < 0.02
    assert compare_masks(full.masks, half.masks).worst == 1.0


def test_auto_precision_follows_the_cpu(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(low_precision, "native_bfloat16_matmul", lambda: True)
    assert resolve_precision("auto", cpu) == "bfloat16"
    assert resolve_precision("auto", cuda) == "float32"  # CUDA decodes under bf16 autocast
    monkeypatch.setattr(low_precision, "native_bfloat16_matmul", lambda: False)
    assert resolve_precision("auto", cpu) == "float32"  # emulated bfloat16 would be slower
    assert resolve_precision("bfloat16", cpu) == "bfloat16"
    with pytest.raises(ValueError, match="decode precision"):
        resolve_precision("half", cpu)
    with pytest.raises(ValueError, match="decode_precision"):
        WholeImageConfig(decode_precision="float16")


def test_low_precision_copy_follows_weight_changes() -> None:
    torch.manual_seed(0)
    decoder = build_model("test-tiny").sam_mask_decoder
    copies = LowPrecisionDecoders()
    first = copies.get(decoder)
    assert copies.get(decoder) is first
    assert first.iou_token.weight.dtype == torch.bfloat16
    with torch.no_grad():
        decoder.iou_token.weight.add_(1.0)  # as load_state_dict does: in place
    second = copies.get(decoder)
    assert second is not first
    torch.testing.assert_close(second.iou_token.weight, decoder.iou_token.weight.bfloat16())

"""The fast whole-image path against the first algorithm, on the tiny random model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import core_model.whole_image as whole_image
from core_model.grid_decode import decode_shared
from core_model.masks.geometry import masks_to_boxes_xyxy, nms_xyxy
from core_model.predictor import GranularityPredictor
from core_model.preprocess import to_model_frame
from core_model.whole_image import (
    WholeImageConfig,
    WholeImageSegmenter,
    coarse_to_fine_order,
    grid_points,
    interior_at,
)
from core_model.whole_image_reference import compare_masks, reference_run
from ml_backend.cli.bench_images import bench_image

OPEN = WholeImageConfig(
    points_per_side=8,
    points_per_batch=16,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    decode_precision="float32",  # the first algorithm's arithmetic
)
GRANULARITIES = (0.3, 1.0)


@pytest.fixture(scope="module")
def predictor(tiny_model) -> GranularityPredictor:
    return GranularityPredictor(tiny_model)


@pytest.fixture(scope="module", params=[0, 1])
def embedding(request, predictor):
    return predictor.embed(bench_image(128, 96, seed=request.param))


@pytest.fixture(scope="module")
def solid(tiny_model) -> GranularityPredictor:
    """A lower mask threshold: the random model's noisy masks become large and solid, so
    accepted masks have interiors and coverage skipping has clicks to skip."""
    return GranularityPredictor(tiny_model, mask_threshold=-0.1)


def test_shared_decoder_matches_the_model(tiny_model, predictor, embedding) -> None:
    points = np.random.default_rng(3).uniform(0, 96, size=(20, 2)).astype(np.float32)
    coords = to_model_frame(points, embedding.original_hw, predictor.image_size)[:, None]
    labels = torch.ones(20, 1, dtype=torch.int32)
    g = torch.linspace(0.1, 1.0, 20)[:, None]
    args = (embedding.image_embed, embedding.high_res_features, coords, labels)
    with torch.no_grad():
        expected = tiny_model.decode_granularity(*args, g)
        for micro_batch in (1, 3, None):
            got = decode_shared(tiny_model, *args, g, micro_batch=micro_batch)
            torch.testing.assert_close(got.low_res_logits, expected.low_res_logits)
            torch.testing.assert_close(got.iou, expected.iou)
    served = predictor.decode(embedding, coords, labels, g[:, 0].tolist())  # 20 >= 16: shared
    torch.testing.assert_close(served.low_res_logits, expected.low_res_logits)


def test_without_skipping_the_masks_are_the_first_algorithms(predictor, embedding) -> None:
    config = replace(OPEN, box_nms_thresh=1.0, max_masks=1000)  # every grid mask is kept
    first = reference_run(predictor, config, embedding, granularities=GRANULARITIES)
    new = WholeImageSegmenter(predictor, config).run(embedding, granularities=GRANULARITIES)
    assert len(new.masks) == len(first.masks) == 128 and new.points_skipped == 0
    for a, b in zip(first.masks, new.masks, strict=True):
        assert (a.granularity, a.point_xy) == (b.granularity, b.point_xy)
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert np.array_equal(a.box_xyxy, b.box_xyxy)
        assert (a.mask != b.mask).mean() < 1e-3  # float rounding at the threshold at most


@pytest.mark.parametrize("nms", [0.7, 0.95])
def test_skipping_stays_within_the_tolerance(solid, embedding, nms) -> None:
    config = replace(OPEN, box_nms_thresh=nms)
    first = reference_run(solid, config, embedding, granularities=GRANULARITIES)
    new = WholeImageSegmenter(solid, config).run(embedding, granularities=GRANULARITIES)
    agreement = compare_masks(first.masks, new.masks)
    assert agreement.worst == 1.0, agreement  # every mask has a match at IoU >= 0.9, both ways
    assert new.points_skipped > 0 and new.complete
    assert new.points_decoded + new.points_skipped == first.points_total


def test_compare_masks_counts_matches_both_ways(predictor, embedding) -> None:
    masks = WholeImageSegmenter(predictor, replace(OPEN, box_nms_thresh=1.0)).segment(
        embedding, granularities=(1.0,)
    )
    assert compare_masks(masks, masks).worst == 1.0
    shifted = [replace(masks[0], mask=~masks[0].mask)]
    agreement = compare_masks(masks[:2], shifted)
    assert (agreement.reference_matched, agreement.candidate_matched) == (0.0, 0.0)
    assert compare_masks([], []).worst == 1.0


def test_covered_points_are_not_decoded(solid, embedding, monkeypatch) -> None:
    """Every decoded click lies outside the NMS survivors of the chunks decoded before it."""
    chunks: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []  # g, clicks, masks, iou
    real_decode = solid.decode

    def recording_decode(emb, coords, labels, granularities, **kwargs):
        out = real_decode(emb, coords, labels, granularities, **kwargs)
        logits = out.low_res_logits[:, 0].to(torch.float16)
        binary = (logits > solid.mask_threshold).numpy()
        clicks = coords[:, 0].numpy().copy()
        chunks.append((granularities[0], clicks, binary, out.iou[:, 0].numpy()))
        return out

    monkeypatch.setattr(solid, "decode", recording_decode)
    config = replace(OPEN, box_nms_thresh=0.7)
    run = WholeImageSegmenter(solid, config).run(embedding, granularities=GRANULARITIES)
    assert run.points_skipped > 0 and run.complete
    assert run.points_decoded == sum(len(c[1]) for c in chunks) < 128
    height, width = embedding.original_hw
    scale = np.array([width, height], dtype=np.float32) / solid.image_size
    side = chunks[0][2].shape[-1]
    for k, (granularity, clicks, _, _) in enumerate(chunks):
        before = [c for c in chunks[:k] if c[0] == granularity]
        if not before:
            continue
        binary = np.concatenate([c[2] for c in before])
        scores = np.concatenate([c[3] for c in before])
        boxes = masks_to_boxes_xyxy(binary) * np.array([width, height] * 2) / side
        survivors = nms_xyxy(boxes, scores, 0.7)
        assert not interior_at(binary[survivors], clicks * scale, (height, width)).any()


def test_only_kept_masks_are_upsampled(predictor, embedding, monkeypatch) -> None:
    calls: list[int] = []
    real = whole_image.upsample_masks

    def counting(logits, original_hw, *, threshold=0.0):
        calls.append(len(logits))
        return real(logits, original_hw, threshold=threshold)

    monkeypatch.setattr(whole_image, "upsample_masks", counting)
    config = replace(OPEN, box_nms_thresh=1.0, max_masks=5)
    masks = WholeImageSegmenter(predictor, config).segment(embedding, granularities=(1.0,))
    assert len(masks) == 5 and sum(calls) == 5  # 64 candidates, 5 upsampled


def test_deadline_and_hook_still_stop_early(predictor, embedding) -> None:
    late = WholeImageSegmenter(predictor, replace(OPEN, deadline_s=0.0)).run(embedding)
    assert late.masks == [] and late.points_decoded == 0 and not late.complete
    asked: list[int] = []

    def stop_after_one_chunk() -> bool:
        asked.append(1)
        return len(asked) > 1

    run = WholeImageSegmenter(predictor, replace(OPEN, box_nms_thresh=1.0)).run(
        embedding, granularities=GRANULARITIES, should_stop=stop_after_one_chunk
    )
    assert (run.points_decoded, run.points_skipped, run.complete) == (16, 0, False)
    assert len(run.masks) == 16


def test_coarse_to_fine_order_is_a_permutation_sparse_first() -> None:
    order = coarse_to_fine_order(32)
    assert sorted(order.tolist()) == list(range(1024))
    first = grid_points(32, 32, 32)[order[:64]]
    assert sorted(set(first[:, 0].tolist())) == [0.5 + 4 * i for i in range(8)]
    assert sorted(set(first[:, 1].tolist())) == [0.5 + 4 * i for i in range(8)]
    assert coarse_to_fine_order(1).tolist() == [0]


def test_interior_needs_the_cell_and_its_neighbours() -> None:
    mask = np.zeros((1, 8, 8), dtype=bool)
    mask[0, 1:6, 1:6] = True
    mask[0, 4, 4] = False  # a hole
    # (x, y) pixels of a 16 x 16 image: 2 pixels per low-resolution cell
    points = np.array([[4.5, 4.5], [6.5, 6.5], [2.5, 2.5], [10.5, 4.5], [0.5, 0.5]], np.float32)
    inside = interior_at(mask, points, (16, 16))[0]
    # cell (2,2): 3x3 all in; (3,3): next to the hole; (1,1), (5,2): on the edge; (0,0): out
    assert inside.tolist() == [True, False, False, False, False]


def test_bench_prints_both_paths_and_the_agreement(tmp_path, capsys) -> None:
    from ml_backend.cli import main

    out = tmp_path / "bench.json"
    args = ["bench", "whole-image", "--config", "test-tiny", "--size", "64x48", "--grids", "4"]
    assert main([*args, "--granularities", "1", "--json", str(out)]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:2] == ["4x4", "1"] and row[-3] == "1.00/1.00"  # same masks both ways
    (result,) = json.loads(out.read_text())["results"]
    assert result["new_points_decoded"] + result["new_points_skipped"] == 16
    assert result["first_s"] > 0 and result["speedup"] == result["first_s"] / result["new_s"]

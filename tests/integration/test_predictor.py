"""GranularityPredictor on the tiny model: outputs, batching, caching, threads, bad input."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from core_model.cache import LRUEmbeddingCache
from core_model.errors import GranularityError, InvalidImageError, InvalidPromptError
from core_model.predictor import GranularityPredictor, multimask_rank
from core_model.types import Box, Prompts

CLICK = Prompts.from_arrays([[60.0, 45.0]], [1])


@pytest.fixture
def predictor(tiny_model) -> GranularityPredictor:
    return GranularityPredictor(tiny_model)


def test_predict_shapes_and_types(predictor, scene_image) -> None:
    embedding = predictor.embed(scene_image)
    assert embedding.original_hw == (96, 128)
    assert embedding.image_embed.shape == (1, 256, 16, 16)
    result = predictor.predict(embedding, CLICK, granularity=0.3)
    assert result.masks.shape == (1, 96, 128) and result.masks.dtype == np.bool_
    assert result.scores.shape == (1,) and result.scores.dtype == np.float32
    assert result.low_res_logits.shape == (1, 64, 64) and result.low_res_logits.dtype == np.float32
    assert np.abs(result.low_res_logits).max() <= 32.0
    assert result.granularities == (0.3,)
    assert result.mode == "granularity"
    assert result.model_version == predictor.model_version


def test_granularity_changes_the_mask(predictor, scene_image) -> None:
    embedding = predictor.embed(scene_image)
    fine = predictor.predict(embedding, CLICK, granularity=0.1)
    whole = predictor.predict(embedding, CLICK, granularity=1.0)
    assert not np.allclose(fine.low_res_logits, whole.low_res_logits)


def test_predict_many_is_one_batch_equal_to_single_calls(predictor, scene_image) -> None:
    embedding = predictor.embed(scene_image)
    values = [0.1, 0.45, 1.0]
    many = predictor.predict_many(embedding, CLICK, values)
    assert many.masks.shape == (3, 96, 128) and many.granularities == tuple(values)
    for i, g in enumerate(values):
        single = predictor.predict(embedding, CLICK, granularity=g)
        np.testing.assert_allclose(many.low_res_logits[i], single.low_res_logits[0], atol=1e-5)
        assert many.scores[i] == pytest.approx(single.scores[0], abs=1e-5)


def test_box_and_clicks_and_mask_input(predictor, scene_image) -> None:
    embedding = predictor.embed(scene_image)
    prompts = Prompts.from_arrays([[60.0, 45.0], [5.0, 5.0]], [1, 0], box=[30, 20, 90, 70])
    first = predictor.predict(embedding, prompts, granularity=0.7)
    again = predictor.predict(embedding, prompts, granularity=0.7, mask_input=first.low_res_logits)
    assert again.masks.shape == (1, 96, 128)
    assert not np.allclose(again.low_res_logits, first.low_res_logits)
    refined = predictor.predict(embedding, prompts, granularity=0.7, refine=True)
    np.testing.assert_allclose(refined.low_res_logits, again.low_res_logits, atol=1e-5)
    box_only = predictor.predict(embedding, Prompts(box=Box(30, 20, 90, 70)), granularity=1.0)
    assert box_only.masks.shape == (1, 96, 128)


def test_multimask_output_only_changes_the_score(predictor, scene_image) -> None:
    embedding = predictor.embed(scene_image)
    single = predictor.predict(embedding, CLICK, granularity=0.5)
    multi = predictor.predict(embedding, CLICK, granularity=0.5, multimask_output=True)
    # the single-mask click runs through the cached image terms, the multimask one through the
    # model's decoder: the same arithmetic up to float rounding
    np.testing.assert_allclose(single.low_res_logits, multi.low_res_logits, atol=1e-6, rtol=0)
    assert single.scores[0] != multi.scores[0]


def test_embedding_is_cached_by_content(tiny_model, scene_image) -> None:
    cache = LRUEmbeddingCache(1 << 30)
    predictor = GranularityPredictor(tiny_model, cache=cache)
    first = predictor.embed(scene_image)
    assert predictor.embed(scene_image.copy()) is first
    other = scene_image.copy()
    other[0, 0, 0] ^= 1
    assert predictor.embed(other) is not first
    assert predictor.embed(scene_image, key="file-sha") is not first
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 3, 3)


def test_concurrent_embeds_of_one_image_run_the_encoder_once(tiny_model, scene_image, monkeypatch):
    predictor = GranularityPredictor(tiny_model, cache=LRUEmbeddingCache(1 << 30))
    calls = []
    original = type(tiny_model).encode_image
    gate = threading.Barrier(6)

    def counting(self, images):
        calls.append(1)
        return original(self, images)

    monkeypatch.setattr(type(tiny_model), "encode_image", counting)
    results = []

    def worker() -> None:
        gate.wait()
        embedding = predictor.embed(scene_image)
        results.append(predictor.predict(embedding, CLICK, granularity=0.5).low_res_logits)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 6
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-6)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((20, 30, 3), np.float32), "uint8"),
        (np.zeros((20, 30), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((20, 30, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 30, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images(predictor, image, match: str) -> None:
    with pytest.raises(InvalidImageError, match=match):
        predictor.embed(image)


def test_too_many_pixels(tiny_model) -> None:
    predictor = GranularityPredictor(tiny_model, max_image_pixels=1000)
    with pytest.raises(InvalidImageError, match="limit"):
        predictor.embed(np.zeros((40, 30, 3), np.uint8))


@pytest.mark.parametrize("granularity", [math.nan, math.inf, 0.0, 0.05, 1.2, -0.5, True, "0.5"])
def test_bad_granularity(predictor, scene_image, granularity) -> None:
    embedding = predictor.embed(scene_image)
    with pytest.raises(GranularityError):
        predictor.predict(embedding, CLICK, granularity=granularity)
    with pytest.raises(GranularityError):
        predictor.predict_many(embedding, CLICK, [0.5, granularity])


@pytest.mark.parametrize(
    "prompts",
    [
        Prompts.from_arrays([[128.5, 10.0]], [1]),
        Prompts.from_arrays([[10.0, -1.0]], [1]),
        Prompts(box=Box(10, 10, 200, 50)),
    ],
)
def test_prompts_outside_the_image(predictor, scene_image, prompts) -> None:
    with pytest.raises(InvalidPromptError, match="outside|leaves"):
        predictor.predict(predictor.embed(scene_image), prompts, granularity=0.5)


def test_other_bad_arguments(predictor, tiny_model, scene_image) -> None:
    embedding = predictor.embed(scene_image)
    with pytest.raises(InvalidPromptError, match="Prompts"):
        predictor.predict(embedding, [[1, 2]], granularity=0.5)
    with pytest.raises(InvalidPromptError, match="mask_input"):
        predictor.predict(embedding, CLICK, granularity=0.5, mask_input=np.zeros((1, 32, 32)))
    with pytest.raises(GranularityError):
        predictor.predict_many(embedding, CLICK, [])
    import torch

    from core_model.build import build_model

    torch.manual_seed(0)
    other = GranularityPredictor(build_model("test-tiny"))
    with pytest.raises(InvalidImageError, match="computed by model"):
        other.predict(embedding, CLICK, granularity=0.5)


def test_multimask_rank_bands() -> None:
    assert [multimask_rank(g) for g in (0.1, 0.39, 0.4, 0.69, 0.7, 1.0)] == [0, 0, 1, 1, 2, 2]


def test_sam2_multimask_baseline_gives_three_masks(predictor, scene_image) -> None:
    embedding = predictor.embed(scene_image)
    result = predictor.predict_sam2(embedding, CLICK)
    assert result.masks.shape == (3, 96, 128) and result.scores.shape == (3,)
    assert result.mode == "sam2-multimask" and result.granularities == ()
    assert not np.allclose(result.low_res_logits[0], result.low_res_logits[1])
    single = predictor.predict_sam2(embedding, CLICK, multimask_output=False)
    assert single.masks.shape == (1, 96, 128) and single.scores.shape == (1,)

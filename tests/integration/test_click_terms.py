"""Interactive clicks through the cached image-side decoder terms, on the tiny random model."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from core_model.click_terms import ClickTerms
from core_model.grid_decode import foldable
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts
from ml_backend.cli.bench_images import bench_image

CLICK = Prompts.from_arrays([[40.0, 30.0], [70.0, 50.0]], [1, 0])
BOXED = Prompts.from_arrays([[40.0, 30.0]], [1], box=[20.0, 10.0, 90.0, 70.0])


def _model_decoder(model, embedding, predictor, prompts, granularity):
    """What the model's own decoder gives for the click (the reference)."""
    coords, labels = predictor._prompt_tensors(prompts, embedding.original_hw)
    g = torch.tensor([[granularity]])
    with torch.no_grad():
        return model.decode_granularity(
            embedding.image_embed, embedding.high_res_features, coords, labels, g
        )


def test_clicks_reuse_the_image_terms_and_match_the_model(tiny_model) -> None:
    predictor = GranularityPredictor(tiny_model)
    embedding = predictor.embed(bench_image(128, 96, seed=2))
    calls: list[int] = []
    real_get = predictor._click_terms.get

    def counting_get(key, build):
        return real_get(key, lambda: (calls.append(1), build())[1])

    predictor._click_terms.get = counting_get  # type: ignore[method-assign]
    for prompts, g in ((CLICK, 0.2), (CLICK, 0.6), (BOXED, 1.0)):
        got = predictor.predict(embedding, prompts, granularity=g)
        expected = _model_decoder(tiny_model, embedding, predictor, prompts, g)
        torch.testing.assert_close(
            torch.from_numpy(got.low_res_logits),
            expected.low_res_logits[:, 0].clamp(-32, 32),
            atol=1e-5,
            rtol=1e-5,
        )
        np.testing.assert_allclose(got.scores, expected.iou[:, 0].numpy(), atol=1e-5)
    assert len(calls) == 1  # computed on the first click only
    many = predictor.predict_many(embedding, CLICK, [0.2, 0.6, 1.0])  # 3 rows, same terms
    assert many.masks.shape[0] == 3 and len(calls) == 1


def test_new_weights_never_meet_old_terms(tiny_model) -> None:
    model = copy.deepcopy(tiny_model)
    predictor = GranularityPredictor(model)
    embedding = predictor.embed(bench_image(128, 96, seed=3))
    before = predictor.predict(embedding, CLICK, granularity=0.5)
    with torch.no_grad():  # in place, as load_state_dict does
        layer = model.sam_mask_decoder.transformer.layers[0].cross_attn_image_to_token.q_proj
        layer.weight.mul_(3.0)
    after = predictor.predict(embedding, CLICK, granularity=0.5)
    expected = _model_decoder(model, embedding, predictor, CLICK, 0.5)
    assert not np.allclose(before.low_res_logits, after.low_res_logits)
    torch.testing.assert_close(
        torch.from_numpy(after.low_res_logits),
        expected.low_res_logits[:, 0].clamp(-32, 32),
        atol=1e-5,
        rtol=1e-5,
    )


def test_mask_inputs_and_keyless_embeddings_take_the_model_path(tiny_model) -> None:
    predictor = GranularityPredictor(tiny_model)
    embedding = predictor.embed(bench_image(128, 96, seed=4))
    first = predictor.predict(embedding, CLICK, granularity=0.5)
    predictor._click_terms = ClickTerms()  # start empty
    predictor.predict(embedding, CLICK, granularity=0.5, mask_input=first.low_res_logits)
    predictor.predict(replace(embedding, key=""), CLICK, granularity=0.5)
    assert len(predictor._click_terms) == 0


def test_click_terms_keep_the_most_recent_images() -> None:
    terms = ClickTerms(capacity=2)
    built: list[str] = []

    def build(name: str):
        return lambda: (built.append(name), name)[1]

    for name in ("a", "b", "a", "c", "b", "a"):
        terms.get(name, build(name))  # type: ignore[arg-type]
    # a, b built; a hit (a most recent); c evicts b; b evicts a; a evicts c
    assert built == ["a", "b", "c", "b", "a"] and len(terms) == 2
    with pytest.raises(ValueError, match="capacity"):
        ClickTerms(capacity=0)


def test_adapters_and_training_mode_keep_the_models_decoder(tiny_model) -> None:
    """The shared path folds projection weights; a wrapped or dropping projection must not be."""
    from peft import LoraConfig, inject_adapter_in_model

    assert foldable(tiny_model.sam_mask_decoder)
    training = copy.deepcopy(tiny_model.sam_mask_decoder).train()
    assert not foldable(training)
    wrapped = copy.deepcopy(tiny_model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"])
    inject_adapter_in_model(config, wrapped.sam_mask_decoder.transformer)
    wrapped.eval()
    assert not foldable(wrapped.sam_mask_decoder)
    predictor = GranularityPredictor(wrapped)
    embedding = predictor.embed(bench_image(128, 96, seed=5))
    predictor.predict(embedding, CLICK, granularity=0.5)
    assert len(predictor._click_terms) == 0  # the model's decoder ran

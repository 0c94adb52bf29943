"""The encoder's inference forward gives the stock SAM-2 modules' features and masks."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import torch

from core_model.cache import LRUEmbeddingCache
from core_model.modeling import fast_encoder
from core_model.modeling.fast_encoder import FastImageEncoder, supports_fast_path
from core_model.modeling.unsamv2 import UnSAMv2Model
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts

Features = tuple[torch.Tensor, tuple[torch.Tensor, ...]]
MakeTiny = Callable[[int], UnSAMv2Model]

CLICKS = [
    Prompts.from_arrays([[60.0, 45.0]], [1]),
    Prompts.from_arrays([[10.0, 90.0], [60.0, 45.0]], [1, 0]),
]


def padded_tiny(make_tiny: MakeTiny) -> UnSAMv2Model:
    """test-tiny with windows that do not tile its feature maps (64, 32 and 16 tokens wide).

    Block 0 (plain), 2 and 4 (query-pooling) get 6-token windows: zero padding, pooled windows
    of 3 and a crop after the un-partition, as Hiera-S's 14- and 7-token windows at 1024 px.
    """
    model = make_tiny(3)
    for index in (0, 2, 4):
        model.image_encoder.trunk.blocks[index].window_size = 6
    return model


def encode_both(model: UnSAMv2Model, images: torch.Tensor) -> tuple[Features, Features]:
    with torch.no_grad():
        stock = model.encode_image(images, fast=False)
        fast = model.encode_image(images)
    return stock, fast


def assert_features_close(stock: Features, fast: Features) -> None:
    torch.testing.assert_close(fast[0], stock[0], atol=1e-5, rtol=1e-5)
    assert len(fast[1]) == len(stock[1]) == 2
    for a, b in zip(fast[1], stock[1], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_fast_features_equal_stock_features(make_tiny: MakeTiny, padded: bool) -> None:
    model = padded_tiny(make_tiny) if padded else make_tiny(3)
    assert supports_fast_path(model)
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    assert_features_close(*encode_both(model, images))


def test_fast_trunk_outputs_equal_hiera_outputs(make_tiny: MakeTiny) -> None:
    trunk = padded_tiny(make_tiny).image_encoder.trunk
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stock = trunk(images)
        fast = FastImageEncoder().trunk_features(trunk, images)
    assert [f.permute(0, 3, 1, 2).shape for f in fast] == [s.shape for s in stock]
    for f, s in zip(fast, stock, strict=True):
        torch.testing.assert_close(f.permute(0, 3, 1, 2), s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_predictions_match_the_stock_encoder(
    make_tiny: MakeTiny, scene_image: npt.NDArray[np.uint8], padded: bool
) -> None:
    model = padded_tiny(make_tiny) if padded else make_tiny(3)
    fast = GranularityPredictor(model, cache=LRUEmbeddingCache(0))
    stock = GranularityPredictor(model, cache=LRUEmbeddingCache(0))
    stock_embed = type(model).encode_image

    for prompts in CLICKS:
        result = fast.predict_many(fast.embed(scene_image), prompts, [0.2, 0.6, 1.0])
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                type(model),
                "encode_image",
                lambda self, x: stock_embed(self, x, fast=False),
            )
            expected = stock.predict_many(stock.embed(scene_image), prompts, [0.2, 0.6, 1.0])
        np.testing.assert_allclose(
            result.low_res_logits, expected.low_res_logits, atol=1e-4, rtol=0
        )
        np.testing.assert_allclose(result.scores, expected.scores, atol=1e-5, rtol=0)
        assert np.array_equal(result.masks, expected.masks)


def test_caches_follow_weight_updates_and_copies(make_tiny: MakeTiny) -> None:
    model = make_tiny(3)
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    encode_both(model, images)  # fills the caches
    with torch.no_grad():
        model.image_encoder.trunk.pos_embed.add_(0.5)
        model.sam_mask_decoder.conv_s0.weight.mul_(-2.0)
    assert_features_close(*encode_both(model, images))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.image_encoder.trunk.pos_embed_window.add_(1.0)
        twin.image_encoder.neck.convs[3].conv.bias.add_(1.0)
    assert_features_close(*encode_both(twin, images))
    stock, _ = encode_both(model, images)
    assert not torch.allclose(encode_both(twin, images)[1][0], stock[0])


def test_stock_modules_run_with_autograd_or_in_training_mode(
    make_tiny: MakeTiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_tiny(3)
    images = torch.randn(1, 3, 256, 256)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the inference forward ran")

    monkeypatch.setattr(fast_encoder.FastImageEncoder, "encode_features", refuse)
    model.encode_image(images)  # autograd enabled: stock modules
    model.train()
    assert not supports_fast_path(model)
    with torch.no_grad():
        model.encode_image(images)

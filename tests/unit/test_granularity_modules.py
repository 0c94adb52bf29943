"""Granularity encoder and the sub-pixel upscaling, against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.modeling.sam2_utils import LayerNorm2d
from torch import nn

from core_model.errors import ModelConfigError
from core_model.modeling.granularity import GranularityFourierMLP
from core_model.modeling.subpixel import from_subpixel, to_subpixel, upscale_and_project


def test_fourier_features_follow_the_official_formula() -> None:
    encoder = GranularityFourierMLP()
    g = torch.tensor([[0.1], [0.37], [1.0]])
    phi = encoder.fourier_features(g).double().numpy()
    k = np.arange(64)
    freqs = 100.0 ** (k / 64)  # f_0 = 1, f_63 = 100^(63/64), no 2*pi
    assert freqs[63] == pytest.approx(93.06, abs=0.01)
    expected = np.empty((3, 128))
    expected[:, 0::2] = np.sin(freqs[None] * g.double().numpy())
    expected[:, 1::2] = np.cos(freqs[None] * g.double().numpy())
    np.testing.assert_allclose(phi, expected, atol=2e-5)


def test_mlp_shapes_match_the_official_checkpoint_keys() -> None:
    encoder = GranularityFourierMLP(fourier_dim=128, out_dim=256)
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes == {
        "mlp.mlp.0.weight": (192, 128),
        "mlp.mlp.0.bias": (192,),
        "mlp.mlp.3.weight": (192, 192),
        "mlp.mlp.3.bias": (192,),
        "mlp.mlp.6.weight": (256, 192),
        "mlp.mlp.6.bias": (256,),
    }  # the frequency buffer is not persistent
    assert encoder(torch.tensor([[0.5], [0.6]])).shape == (2, 256)


def test_odd_fourier_dim_is_refused() -> None:
    with pytest.raises(ModelConfigError):
        GranularityFourierMLP(fourier_dim=127)


@pytest.mark.parametrize("levels", [1, 2])
def test_subpixel_layout_round_trips(levels: int) -> None:
    x = torch.randn(2, 3, 4 << levels, 5 << levels)
    sub = to_subpixel(x, levels)
    assert sub.shape[:3] == (2, 4, 5)
    assert torch.equal(from_subpixel(sub, levels), x)
    # pixel (2i + ay, 2j + ax) of a level-1 map sits at [i, j, 2 * ay + ax]
    if levels == 1:
        assert torch.equal(sub[1, 3, 2, 2 * 1 + 0], x[1, :, 7, 4])


def test_upscaling_as_matmuls_equals_the_transposed_convolutions() -> None:
    torch.manual_seed(0)
    c, h, w = 32, 4, 6
    upscaling = nn.Sequential(
        nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
        LayerNorm2d(c // 4),
        nn.GELU(),
        nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
        nn.GELU(),
    )
    nn.init.uniform_(upscaling[1].weight, 0.5, 1.5)
    nn.init.normal_(upscaling[1].bias)
    src = torch.randn(3, c, h, w)
    feat_s1, feat_s0 = torch.randn(1, c // 4, 2 * h, 2 * w), torch.randn(1, c // 8, 4 * h, 4 * w)
    hyper = torch.randn(3, 2, c // 8)
    d1, ln, a1, d2, a2 = upscaling
    reference = a2(d2(a1(ln(d1(src) + feat_s1))) + feat_s0)
    expected = (hyper @ reference.flatten(2)).reshape(3, 2, 4 * h, 4 * w)
    tokens = src.flatten(2).transpose(1, 2)
    got = upscale_and_project(
        upscaling, tokens, (h, w), (to_subpixel(feat_s0, 2), to_subpixel(feat_s1, 1)), hyper
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

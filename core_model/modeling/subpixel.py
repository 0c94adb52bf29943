"""The decoder's upscaling (two 2x2 stride-2 transposed convolutions) as plain matmuls.

A 2x2 stride-2 transposed convolution maps each input pixel to its own 2x2 output block, so it
is a matmul followed by a pixel shuffle. Instead of shuffling, every map is kept in a
"sub-pixel" layout indexed by the coarse pixel (i, j) of the h x w image embedding and the
position inside its block:

* 2h x 2w map, pixel (2i + a_y, 2j + a_x): shape (B, h, w, 4, C), a = 2 a_y + a_x;
* 4h x 4w map, pixel (4i + 2a_y + b_y, 4j + 2a_x + b_x): shape (B, h, w, 4, 4, C).

The image's high-resolution features are rearranged into this layout once per image, so a click
needs no large copies; only the final (B, h, w, 4, 4) logits are shuffled back. The arithmetic
is the one of SAM-2's `MaskDecoder.output_upscaling` (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


def to_subpixel(feature: torch.Tensor, levels: int) -> torch.Tensor:
    """Rearrange (B, C, h * 2^levels, w * 2^levels) into the sub-pixel layout (levels 1 or 2)."""
    b, c, height, width = feature.shape
    h, w = height >> levels, width >> levels
    if levels == 1:
        x = feature.reshape(b, c, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, h, w, 4, c).contiguous()
    x = feature.reshape(b, c, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
    return x.reshape(b, h, w, 4, 4, c).contiguous()


def from_subpixel(feature: torch.Tensor, levels: int) -> torch.Tensor:
    """Inverse of `to_subpixel`: back to (B, C, h * 2^levels, w * 2^levels)."""
    if levels == 1:
        b, h, w, _, c = feature.shape
        x = feature.reshape(b, h, w, 2, 2, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, 2 * h, 2 * w)
    b, h, w, _, _, c = feature.shape
    x = feature.reshape(b, h, w, 2, 2, 2, 2, c).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, c, 4 * h, 4 * w)


def _deconv_add(x: torch.Tensor, deconv: nn.Module, feature: torch.Tensor) -> torch.Tensor:
    """A 2x2 stride-2 transposed conv of channels-last x plus a sub-pixel feature map.

    Args:
        x: (B, ..., C_in) channels-last input.
        deconv: The transposed convolution (weight (C_in, C_out, 2, 2), bias (C_out,) or None).
        feature: (1 or B, ..., 4, C_out) added to the output (its batch is broadcast).

    Returns:
        (B, ..., 4, C_out): deconv(x) + feature, the sum accumulated by the matmul itself (no
        separate pass over the output for the bias or the feature).
    """
    weight: torch.Tensor = deconv.weight  # type: ignore[assignment]  # (C_in, C_out, 2, 2)
    c_in, c_out = weight.shape[0], weight.shape[1]
    matrix = weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    b = x.shape[0]
    rows = x.reshape(b, -1, c_in)
    base = feature.reshape(feature.shape[0], rows.shape[1], 4 * c_out)
    if deconv.bias is not None:
        base = base + deconv.bias.repeat(4)  # type: ignore[operator]
    out = torch.baddbmm(base.expand(b, -1, -1), rows, matrix.expand(b, -1, -1))
    return out.reshape(*x.shape[:-1], 4, c_out)


def upscale_and_project(
    output_upscaling: nn.Sequential,
    src_tokens: torch.Tensor,
    hw: tuple[int, int],
    high_res_features: tuple[torch.Tensor, torch.Tensor],
    hyper: torch.Tensor,
) -> torch.Tensor:
    """Upscale the transformer's image tokens with the high-res features and dot with `hyper`.

    Args:
        output_upscaling: The decoder's ``(deconv, LayerNorm2d, act, deconv, act)`` stack.
        src_tokens: (B, h * w, C) image tokens from the two-way transformer.
        hw: (h, w) of the image embedding.
        high_res_features: Sub-pixel layout (1 or B, h, w, 4, 4, C/8) and (1 or B, h, w, 4, C/4).
        hyper: (B, K, C/8) hypernetwork outputs (one row per output mask).

    Returns:
        (B, K, 4h, 4w) mask logits.
    """
    deconv1, norm1, act1, deconv2, act2 = output_upscaling
    feat_s0, feat_s1 = high_res_features
    b = src_tokens.shape[0]
    h, w = hw
    x = _deconv_add(src_tokens.reshape(b, h, w, -1), deconv1, feat_s1)
    x = act1(F.layer_norm(x, (x.shape[-1],), norm1.weight, norm1.bias, float(norm1.eps)))  # type: ignore[arg-type]
    x = act2(_deconv_add(x, deconv2, feat_s0))  # (B, h, w, 4, 4, C/8)
    k = hyper.shape[1]
    logits = x.reshape(b, -1, x.shape[-1]) @ hyper.transpose(1, 2)  # (B, h*w*16, K)
    logits = logits.reshape(b, h, w, 4, 4, k).permute(0, 5, 1, 2, 3, 4)
    return from_subpixel(logits.reshape(b * k, h, w, 4, 4, 1), 2).reshape(b, k, 4 * h, 4 * w)

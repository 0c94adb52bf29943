"""Inference forward of SAM-2's image encoder (Hiera trunk + FPN neck) with less memory traffic.

`encode_features` computes what `SAM2Base.forward_image` followed by the decoder's `conv_s0` /
`conv_s1` computes, with the same weights (no state-dict change), up to float rounding. On CPU
the encoder is bound by the matmuls plus a long tail of memory-bound passes; this forward
removes the passes that are not needed for inference:

* the window position embedding (a bicubic interpolation plus a tiling) depends only on the
  weights and the input size: it is computed once and cached;
* the neck's sine position encodings are not used by the decoder and are not computed;
* the lateral 1x1 convolutions of the two high-resolution levels and the decoder's 1x1
  projections `conv_s0` / `conv_s1` are both linear, so each pair is one matmul with the
  composed weight (computed in float64, cached);
* bias and the residual additions run in the epilogue of oneDNN matmuls
  (`torch.ops.mkldnn._linear_pointwise`) instead of separate passes over the activations;
  the exact GELU runs in place after the matmul (oneDNN's erf-GELU epilogue made the MLP's
  first matmul slower than the matmul plus a separate in-place pass: 1.10x on the whole
  encoder, AVX2, `unsamv2 bench encoder`);
* the 2x2 max pools run on the channels-last tokens (a strided `amax`), without a transpose
  and a copy;
* the attention output projection runs after the window un-partition, on real tokens only
  (not on the zero padding of windows that do not tile the feature map).

The forward is only used without autograd and in eval mode (see `supports_fast_path`); the
stock modules remain the reference and the training path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from sam2.modeling.backbones.hieradet import Hiera, MultiScaleAttention, MultiScaleBlock
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.backbones.utils import window_partition, window_unpartition
from torch import nn

_Key = tuple[Any, ...]


def _mkldnn_linear_available() -> bool:
    return bool(
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class _FastLinear:
    """Linear layers with fused epilogues (oneDNN on CPU, plain torch elsewhere)."""

    def __init__(self, fused: bool) -> None:
        self.fused = fused

    def _use_fused(self, x: torch.Tensor) -> bool:
        return self.fused and x.device.type == "cpu" and x.dtype == torch.float32

    def linear(self, x: torch.Tensor, layer: nn.Linear, gelu: bool = False) -> torch.Tensor:
        """Return layer(x), followed by an exact (erf) GELU if `gelu`."""
        if self._use_fused(x):
            y: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
                x, layer.weight, layer.bias, "none", [], ""
            )
        else:
            y = F.linear(x, layer.weight, layer.bias)
        if gelu:  # in place on the fresh output: no second activation-sized buffer
            y = torch.ops.aten.gelu_(y)
        return y

    def linear_add(self, x: torch.Tensor, layer: nn.Linear, residual: torch.Tensor) -> torch.Tensor:
        """Return layer(x) + residual (same shape as the output)."""
        if self._use_fused(x) and residual.is_contiguous():
            out: torch.Tensor = torch.ops.mkldnn._linear_pointwise.binary(
                x, residual, layer.weight, layer.bias, "add"
            )
            return out
        return F.linear(x, layer.weight, layer.bias) + residual


def _max_pool_nhwc(x: torch.Tensor, pool: nn.MaxPool2d | None) -> torch.Tensor:
    """Apply `pool` (k x k, stride k, no padding) to (B, H, W, C) tokens."""
    if pool is None:
        return x
    k = int(pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0])
    b, h, w, c = x.shape
    x = x[:, : h - h % k, : w - w % k]  # floor mode: trailing rows/columns are dropped
    blocks = x.reshape(b, h // k, k, w // k, k, c)
    # elementwise maxima of the k * k strided sub-grids: vectorised along C, unlike a
    # reduction over the two strided window dimensions (amax), which is several times slower
    out = torch.maximum(blocks[:, :, 0, :, 0], blocks[:, :, 0, :, 1 % k])
    for index in range(2, k * k):
        torch.maximum(out, blocks[:, :, index // k, :, index % k], out=out)
    return out


def _pool_is_plain(pool: nn.Module | None) -> bool:
    if pool is None:
        return True
    if not isinstance(pool, nn.MaxPool2d) or pool.ceil_mode or pool.padding not in (0, (0, 0)):
        return False
    sizes = {pool.kernel_size, pool.stride}
    return len(sizes) == 1 and pool.dilation in (1, (1, 1))


def _block_is_plain(block: nn.Module) -> bool:
    return (
        isinstance(block, MultiScaleBlock)
        and isinstance(block.attn, MultiScaleAttention)
        and isinstance(block.drop_path, nn.Identity)
        and _pool_is_plain(block.pool)
        and _pool_is_plain(block.attn.q_pool)
        and len(block.mlp.layers) == 2
        and isinstance(block.mlp.act, nn.GELU)
        and block.mlp.act.approximate == "none"
        and not block.mlp.sigmoid_output
    )


def _neck_is_plain(neck: nn.Module) -> bool:
    if not isinstance(neck, FpnNeck) or neck.fuse_type != "sum" or len(neck.convs) != 4:
        return False
    convs = [seq.conv for seq in neck.convs]
    return all(
        c.kernel_size == (1, 1) and c.stride == (1, 1) and c.padding == (0, 0) for c in convs
    ) and not ({0, 1} & set(neck.fpn_top_down_levels))


def supports_fast_path(model: nn.Module) -> bool:
    """Tell whether `encode_features` computes this model's image features.

    True for SAM-2.1's Hiera + FPN image encoders (all packaged variants) with high-resolution
    features, in eval mode.
    """
    encoder = getattr(model, "image_encoder", None)
    decoder = getattr(model, "sam_mask_decoder", None)
    return (
        not model.training
        and isinstance(encoder, ImageEncoder)
        and isinstance(encoder.trunk, Hiera)
        and encoder.trunk.return_interm_layers
        and _neck_is_plain(encoder.neck)
        and encoder.scalp == 1
        and getattr(model, "num_feature_levels", 0) == 3
        and bool(getattr(model, "use_high_res_features_in_sam", False))
        and hasattr(decoder, "conv_s0")
        and all(_block_is_plain(b) for b in encoder.trunk.blocks)
    )


def _weights_key(*tensors: torch.Tensor) -> _Key:
    """Identify tensor contents cheaply: object, storage, version counter, device and dtype."""
    return tuple((id(t), t.data_ptr(), t._version, t.device, t.dtype) for t in tensors)


class FastImageEncoder:
    """Inference forward of a SAM-2 image encoder with cached input-independent tensors.

    Holds only caches derived from a model's weights, keyed by the weights' identity, storage
    and version counters (so in-place updates and moves invalidate them); copies of this object
    start empty.

    Args:
        fused_linear: Use oneDNN matmuls with fused epilogues on CPU when available.
    """

    def __init__(self, *, fused_linear: bool = True) -> None:
        self.fused_linear = fused_linear
        self._linear = _FastLinear(fused_linear and _mkldnn_linear_available())
        self._pos_cache: dict[_Key, torch.Tensor] = {}
        self._proj_cache: dict[_Key, tuple[torch.Tensor, torch.Tensor]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> FastImageEncoder:
        return FastImageEncoder(fused_linear=self.fused_linear)

    def __getstate__(self) -> dict[str, Any]:
        return {"fused_linear": self.fused_linear}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(fused_linear=bool(state["fused_linear"]))  # type: ignore[misc]

    def encode_features(
        self, model: Any, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Compute the decoder's image features.

        Args:
            model: A `SAM2Base` (e.g. `UnSAMv2Model`) for which `supports_fast_path` is True.
            images: (B, 3, S, S) float32, normalised.

        Returns:
            (s0, s1, embed): s0 (B, C/8, S/4, S/4) = conv_s0 of FPN level 0, s1
            (B, C/4, S/8, S/8) = conv_s1 of level 1, embed (B, C, S/16, S/16) = level 2,
            each as `SAM2Base.forward_image` returns them (s0 and s1 in channels-last memory).
        """
        trunk: Hiera = model.image_encoder.trunk
        feats = self.trunk_features(trunk, images)  # (B, H, W, C) tokens, high to low resolution
        neck: FpnNeck = model.image_encoder.neck
        decoder = model.sam_mask_decoder
        convs = [seq.conv for seq in neck.convs]  # convs[3 - i] serves level i
        low = self._conv1x1(feats[3], convs[0])
        mid = self._conv1x1(feats[2], convs[1])
        if 2 in neck.fpn_top_down_levels:
            mid = mid + _upsample_nhwc(low, neck.fpn_interp_model)
        embed = mid.permute(0, 3, 1, 2).contiguous()
        s1 = self._fused_projection(feats[1], convs[2], decoder.conv_s1)
        s0 = self._fused_projection(feats[0], convs[3], decoder.conv_s0)
        return s0.permute(0, 3, 1, 2), s1.permute(0, 3, 1, 2), embed

    # ------------------------------------------------------------------------- trunk
    def trunk_features(self, trunk: Hiera, images: torch.Tensor) -> list[torch.Tensor]:
        """Return the Hiera stage outputs as (B, H, W, C) tokens, high to low resolution."""
        # channels-last convolution: its (B, H, W, C) view is contiguous
        conv = trunk.patch_embed.proj(images.contiguous(memory_format=torch.channels_last))
        x = conv.permute(0, 2, 3, 1)
        x = x + self._pos_embed(trunk, (int(x.shape[1]), int(x.shape[2])))
        outputs = []
        for i, block in enumerate(trunk.blocks):
            x = self._block(block, x)
            if i in trunk.stage_ends:
                outputs.append(x)
        return outputs

    def _pos_embed(self, trunk: Hiera, hw: tuple[int, int]) -> torch.Tensor:
        key = (hw, *_weights_key(trunk.pos_embed, trunk.pos_embed_window))
        cached = self._pos_cache.get(key)
        if cached is None:
            self._pos_cache.clear()  # one input size at a time; old weights are dropped
            cached = trunk._get_pos_embed(hw).contiguous()
            self._pos_cache[key] = cached
        return cached

    def _block(self, block: MultiScaleBlock, x: torch.Tensor) -> torch.Tensor:
        lin = self._linear
        shortcut = x
        y = block.norm1(x)
        if block.dim != block.dim_out:
            shortcut = _max_pool_nhwc(lin.linear(y, block.proj), block.pool)
        window = block.window_size
        height, width = int(y.shape[1]), int(y.shape[2])
        if window > 0:
            y, pad_hw = window_partition(y, window)
        y = self._attention(block.attn, y)  # before the output projection
        if window > 0:
            if block.q_stride:  # the attention pooled the queries: smaller windows
                window //= block.q_stride[0]
                height, width = int(shortcut.shape[1]), int(shortcut.shape[2])
                pad_hw = (height + (-height) % window, width + (-width) % window)
            y = window_unpartition(y, window, pad_hw, (height, width)).contiguous()
        x = lin.linear_add(y, block.attn.proj, shortcut.contiguous())
        hidden = lin.linear(block.norm2(x), block.mlp.layers[0], gelu=True)
        return lin.linear_add(hidden, block.mlp.layers[1], x)

    def _attention(self, attn: MultiScaleAttention, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        qkv = self._linear.linear(x, attn.qkv).reshape(batch, height * width, 3, attn.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if attn.q_pool is not None:
            q = _max_pool_nhwc(q.reshape(batch, height, width, -1), attn.q_pool)
            height, width = int(q.shape[1]), int(q.shape[2])
            q = q.reshape(batch, height * width, attn.num_heads, -1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return out.transpose(1, 2).reshape(batch, height, width, -1)

    # -------------------------------------------------------------------------- neck
    def _conv1x1(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """Apply a 1x1 convolution to (B, H, W, C_in) tokens -> (B, H, W, C_out)."""
        weight = conv.weight.flatten(1)
        return F.linear(x, weight, conv.bias)

    def _fused_projection(
        self, x: torch.Tensor, lateral: nn.Conv2d, projection: nn.Conv2d
    ) -> torch.Tensor:
        """Apply projection(lateral(x)) as one matmul on (B, H, W, C_in) tokens."""
        tensors = [lateral.weight, projection.weight]
        tensors += [b for b in (lateral.bias, projection.bias) if b is not None]
        key = _weights_key(*tensors)
        cached = self._proj_cache.get(key)
        if cached is None:
            if len(self._proj_cache) >= 4:
                self._proj_cache.clear()
            w1, b1 = lateral.weight.flatten(1).double(), _bias(lateral)
            w2, b2 = projection.weight.flatten(1).double(), _bias(projection)
            dtype = lateral.weight.dtype
            cached = ((w2 @ w1).to(dtype), (w2 @ b1 + b2).to(dtype))
            self._proj_cache[key] = cached
        return F.linear(x, *cached)


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    """Return the bias of `conv` in float64 (zeros if it has none)."""
    if conv.bias is None:
        return conv.weight.new_zeros(conv.out_channels, dtype=torch.float64)
    return conv.bias.double()


def _upsample_nhwc(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Upsample (B, H, W, C) by 2 as the FPN neck does (float32), back to (B, 2H, 2W, C)."""
    if mode == "nearest":
        b, h, w, c = x.shape
        return x[:, :, None, :, None].expand(b, h, 2, w, 2, c).reshape(b, 2 * h, 2 * w, c)
    up = F.interpolate(
        x.permute(0, 3, 1, 2).float(),
        scale_factor=2.0,
        mode=mode,
        align_corners=False,
        antialias=False,
    )
    return up.permute(0, 2, 3, 1)

"""Granularity decoding of many click prompts on one image, with the image-side work shared.

`decode_shared` computes what `UnSAMv2Model.decode_granularity` computes for B prompt sets on
one image without a mask input, but never copies the image embedding per prompt:

* the first two-way block's image-side projections (keys, values and image queries: the image
  tokens have not yet seen any prompt) run once, on a batch of 1;
* the positional encoding enters every later projection as a shared, pre-projected term
  (projections are linear), so no (B, h*w, C) sums of image tokens and encodings are built;
* the keys, values and image queries of the second block come from one fused matmul;
* the final token-to-image attention runs only for the tokens the outputs use (the IoU and the
  granularity tokens), with the projection folded into those few queries.

The arithmetic is SAM-2's up to float rounding (tests compare both paths).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from core_model.modeling.subpixel import upscale_and_project
from core_model.modeling.unsamv2 import DecoderOutput, UnSAMv2Model

SHARED_DECODE_MIN_BATCH = 16  # prompt sets per call from which the predictor uses this path
# image-token values per pass on CPU (4 prompts of a 64x64x256 embedding): the per-prompt image
# tensors of a pass stay in cache; 64 prompts of that size run about twice as slow per prompt
CPU_PASS_ELEMENTS = 4 * 64 * 64 * 256


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, heads, T, C / heads)."""
    b, t, c = x.shape
    return x.reshape(b, t, heads, c // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, c) -> (B, T, heads * c)."""
    b, h, t, c = x.shape
    return x.transpose(1, 2).reshape(b, t, h * c)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention of head-split tensors; batch dimensions broadcast."""
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
    return torch.softmax(scores, dim=-1) @ v


def _image_to_token(
    attn: Any,
    image_q: torch.Tensor,
    queries: torch.Tensor,
    query_pe: torch.Tensor,
) -> torch.Tensor:
    """Image tokens attend to prompt tokens: image_q (1 or B, h*w, D) projected, -> (B, h*w, C).

    The scores are laid out (B, heads, T, h*w) so the softmax over the few prompt tokens runs
    along a strided axis with the long image axis contiguous (much faster than a softmax over
    a last axis of ~10 entries).
    """
    heads = attn.num_heads
    k = _heads(attn.k_proj(queries + query_pe), heads)  # (B, H, T, d)
    v = _heads(attn.v_proj(queries), heads)
    q = _heads(image_q, heads)  # (1 or B, H, h*w, d)
    scale = 1.0 / math.sqrt(k.shape[-1])
    scores = (k * scale) @ q.transpose(-1, -2)  # (B, H, T, h*w)
    probs = torch.softmax(scores, dim=2)
    out = probs.transpose(-1, -2) @ v  # (B, H, h*w, d)
    projected: torch.Tensor = attn.out_proj(_merge(out))
    return projected


def _token_to_image_folded(
    attn: Any,
    q_tokens: torch.Tensor,
    keys: torch.Tensor,
    pe_k: torch.Tensor,
) -> torch.Tensor:
    """Prompt tokens attend to image tokens without projecting the h*w image tokens.

    Args:
        attn: The attention module (q_proj, k_proj, v_proj, out_proj).
        q_tokens: (B, T, C) queries (positional encoding added).
        keys: (B, h*w, C) image tokens (the values; keys before projection).
        pe_k: (1, h*w, D) k_proj(pe) (the positional encoding's projection plus bias).

    Returns:
        (B, T, C) attention output after out_proj.
    """
    heads = attn.num_heads
    b, t, _ = q_tokens.shape
    q = _heads(attn.q_proj(q_tokens), heads) * (1.0 / math.sqrt(attn.internal_dim // heads))
    w_k = attn.k_proj.weight.reshape(heads, -1, keys.shape[-1])  # (H, d, C)
    w_v = attn.v_proj.weight.reshape(heads, -1, keys.shape[-1])
    q_in = q @ w_k  # (B, H, T, C): query folded through the key projection
    scores = (q_in.reshape(b, heads * t, -1) @ keys.transpose(1, 2)).reshape(b, heads, t, -1)
    scores = scores + q @ _heads(pe_k, heads).transpose(-1, -2)
    probs = torch.softmax(scores, dim=-1)  # (B, H, T, h*w)
    mixed = (probs.reshape(b, heads * t, -1) @ keys).reshape(b, heads, t, -1)  # (B, H, T, C)
    out = mixed @ w_v.transpose(1, 2) + attn.v_proj.bias.reshape(heads, 1, -1)
    projected: torch.Tensor = attn.out_proj(_merge(out))
    return projected


def _first_block(
    block: Any, tokens: torch.Tensor, keys: torch.Tensor, pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two-way block (no PE on its self-attention).

    Args:
        block: The block.
        tokens: (B, T, C) prompt tokens (also their positional encoding).
        keys: (1, h*w, C) image tokens, shared by all prompts.
        pe: (1, h*w, C) positional encoding of the image tokens.

    Returns:
        queries (B, T, C) and image tokens (B, h*w, C).
    """
    queries = block.norm1(block.self_attn(q=tokens, k=tokens, v=tokens))
    b, t, c = queries.shape
    cross = block.cross_attn_token_to_image
    heads = cross.num_heads
    # prompts x tokens folded into one query set against the shared image keys
    q = _heads(cross.q_proj(queries + tokens).reshape(1, b * t, -1), heads)
    k = _heads(cross.k_proj(keys + pe), heads)
    v = _heads(cross.v_proj(keys), heads)
    out = _merge(_attend(q, k, v)).reshape(b, t, -1)
    queries = block.norm2(queries + cross.out_proj(out))
    queries = block.norm3(queries + block.mlp(queries))
    back = block.cross_attn_image_to_token
    image_q = back.q_proj(keys + pe)  # (1, h*w, D)
    keys = block.norm4(keys + _image_to_token(back, image_q, queries, tokens))
    return queries, keys


def _later_block(
    block: Any,
    queries: torch.Tensor,
    tokens: torch.Tensor,
    keys: torch.Tensor,
    pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-way block after the first: keys (B, h*w, C) per prompt, pe (1, h*w, C)."""
    q = queries + tokens
    queries = block.norm1(queries + block.self_attn(q=q, k=q, v=queries))
    cross = block.cross_attn_token_to_image
    out = _token_to_image_folded(cross, queries + tokens, keys, cross.k_proj(pe))
    queries = block.norm2(queries + out)
    queries = block.norm3(queries + block.mlp(queries))
    back = block.cross_attn_image_to_token
    image_q = F.linear(keys, back.q_proj.weight) + back.q_proj(pe)
    keys = block.norm4(keys + _image_to_token(back, image_q, queries, tokens))
    return queries, keys


def use_shared_decode(
    image_embed: torch.Tensor,
    point_coords: torch.Tensor,
    mask_input: torch.Tensor | None,
    multimask_output: bool,
) -> bool:
    """Whether `decode_shared` applies and pays: many prompt sets, one image, no mask input."""
    return (
        image_embed.shape[0] == 1
        and point_coords.shape[0] >= SHARED_DECODE_MIN_BATCH
        and mask_input is None
        and not multimask_output
    )


def decode_shared(
    model: UnSAMv2Model,
    image_embed: torch.Tensor,
    high_res_features: tuple[torch.Tensor, ...],
    point_coords: torch.Tensor,
    point_labels: torch.Tensor,
    granularity: torch.Tensor,
    *,
    micro_batch: int | None = None,
) -> DecoderOutput:
    """Decode one granularity mask per prompt set of one image (no mask input).

    The prompts go through in passes of `micro_batch` (on CPU a few prompts' (h*w, C) image
    tensors stay in cache; 64 Hiera-S prompts at once do not and run about twice as slow).

    Args:
        model: The model (granularity modules in use).
        image_embed: (1, C, h, w) from `UnSAMv2Model.encode_image`.
        high_res_features: Its high-resolution features (sub-pixel layout, batch 1) or ().
        point_coords: (B, N, 2) float, (x, y) in the model's input frame.
        point_labels: (B, N) int32.
        granularity: (B, 1) float in [0.1, 1].
        micro_batch: Prompt sets per pass (None: `CPU_PASS_ELEMENTS` image-token values per
            pass on CPU, all at once elsewhere).

    Returns:
        `DecoderOutput` with logits (B, 1, S/4, S/4) and IoU (B, 1), as
        `UnSAMv2Model.decode_granularity` with ``multimask_output=False``.
    """
    batch = point_coords.shape[0]
    if micro_batch is None:
        on_cpu = point_coords.device.type == "cpu"
        micro_batch = max(1, CPU_PASS_ELEMENTS // image_embed[0].numel()) if on_cpu else batch
    parts = [
        _decode_part(
            model,
            image_embed,
            high_res_features,
            point_coords[i : i + micro_batch],
            point_labels[i : i + micro_batch],
            granularity[i : i + micro_batch],
        )
        for i in range(0, batch, max(1, micro_batch))
    ]
    return DecoderOutput(
        low_res_logits=torch.cat([p.low_res_logits for p in parts]),
        iou=torch.cat([p.iou for p in parts]),
    )


def _decode_part(
    model: UnSAMv2Model,
    image_embed: torch.Tensor,
    high_res_features: tuple[torch.Tensor, ...],
    point_coords: torch.Tensor,
    point_labels: torch.Tensor,
    granularity: torch.Tensor,
) -> DecoderOutput:
    """Decode one pass of `decode_shared`."""
    encoder = model.sam_prompt_encoder
    decoder = model.sam_mask_decoder
    sparse, dense = encoder.encode(point_coords, point_labels, granularity=granularity)
    shift = 1 if decoder.pred_obj_scores else 0
    heads = [decoder.obj_score_token.weight] if decoder.pred_obj_scores else []
    output_tokens = torch.cat(
        [*heads, decoder.iou_token.weight, decoder.mask_tokens.weight, decoder.gra_token.weight]
    )
    batch = sparse.shape[0]
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse), dim=1)
    src = image_embed[:1] + dense[:1]
    _, c, h, w = src.shape
    keys = src.flatten(2).transpose(1, 2).contiguous()
    pe = encoder.get_dense_pe().flatten(2).transpose(1, 2).contiguous()
    transformer = decoder.transformer
    layers = list(transformer.layers)
    queries, keys = _first_block(layers[0], tokens, keys, pe)
    for block in layers[1:]:
        queries, keys = _later_block(block, queries, tokens, keys, pe)
    used = [shift, shift + 1 + decoder.num_mask_tokens]  # IoU token, granularity token
    final = transformer.final_attn_token_to_image
    q_used = queries[:, used] + tokens[:, used]
    out = _token_to_image_folded(final, q_used, keys, final.k_proj(pe))
    hs = transformer.norm_final_attn(queries[:, used] + out)
    hyper = decoder.gra_output_token_mlp(hs[:, 1]).unsqueeze(1)  # (B, 1, C/8)
    if decoder.use_high_res_features:
        feat_s0, feat_s1 = high_res_features
        logits = upscale_and_project(
            decoder.output_upscaling, keys, (h, w), (feat_s0[:1], feat_s1[:1]), hyper
        )
    else:
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(batch, c, h, w))
        logits = (hyper @ upscaled.flatten(2)).reshape(batch, 1, *upscaled.shape[-2:])
    iou = decoder.iou_prediction_head(hs[:, 0])[:, :1]
    return DecoderOutput(low_res_logits=logits, iou=iou)

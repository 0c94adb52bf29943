"""Granularity decoding of click prompts on one image, with the image-side work shared.

`decode_shared` computes what `UnSAMv2Model.decode_granularity` computes for B prompt sets on
one image without a mask input, but never copies the image embedding per prompt:

* the image-side terms (`SharedImage`: the first two-way block's keys, values and image
  queries, which no prompt has touched yet, and the positional terms of every later
  projection, which are linear) are computed once per call on a batch of 1, or taken from a
  cache (`core_model.click_terms` keeps them for interactive clicks);
* in the image-to-token attentions, the image queries' projection is folded into the prompt
  keys and the output projection (with its bias) into the prompt values, so no projection runs
  over a prompt's h*w image tokens that can run over its ~10 prompt tokens;
* the final token-to-image attention runs only for the tokens the outputs use (the IoU and the
  granularity tokens), with the projection folded into those few queries.

The arithmetic is SAM-2's up to float rounding (tests compare both paths). A bfloat16 copy of
the decoder (`core_model.low_precision`) runs the same code in bfloat16.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from core_model.modeling.subpixel import upscale_and_project
from core_model.modeling.unsamv2 import DecoderOutput, UnSAMv2Model

# prompt sets per call from which the predictor computes the image-side terms for the call
# (fewer use the cached terms of `core_model.click_terms` on CPU, or the model's decoder)
SHARED_DECODE_MIN_BATCH = 16
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
    scores: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    """Finish an image-to-token attention without materialising per-head image tensors.

    Each head's output projection is folded into the few prompt-token values, so the h*w image
    tokens meet one (B, h*w, H*T) x (B, H*T, C) product instead of a head merge (a copy) and a
    (D -> C) projection per image token.

    Args:
        attn: The attention module (its out_proj).
        scores: (B, H, T, h*w) scaled scores of the image tokens against the T prompt tokens.
            The softmax over the few prompt tokens runs along a strided axis with the long
            image axis contiguous (much faster than a softmax over a last axis of ~10 entries).
        v: (B, H, T, d) head-split values of the prompt tokens.

    Returns:
        (B, h*w, C) attention output after out_proj.
    """
    b, heads, t, _ = scores.shape
    probs = torch.softmax(scores, dim=2).reshape(b, heads * t, -1)  # (B, H*T, h*w)
    w_o = attn.out_proj.weight  # (C, H*d)
    w_heads = w_o.reshape(w_o.shape[0], heads, -1).permute(1, 2, 0)  # (H, d, C)
    # every head's probabilities sum to 1, so the output bias spread as bias / H over all H*T
    # values comes out whole on every image token, without a pass over the (B, h*w, C) output
    v_out = (v @ w_heads).reshape(b, heads * t, -1) + attn.out_proj.bias / heads  # (B, H*T, C)
    out: torch.Tensor = probs.transpose(1, 2) @ v_out  # (B, h*w, C)
    return out


def _prompt_heads(
    attn: Any, queries: torch.Tensor, query_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled keys and values (B, H, T, d) of the prompt tokens for an image-to-token attention."""
    heads = attn.num_heads
    k = _heads(attn.k_proj(queries + query_pe), heads)
    v = _heads(attn.v_proj(queries), heads)
    return k * (1.0 / math.sqrt(k.shape[-1])), v


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
        pe_k: (1, H, d, h*w) k_proj(pe) per head, transposed (the positional encoding's
            projection plus bias).

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
    scores = scores + q @ pe_k
    probs = torch.softmax(scores, dim=-1)  # (B, H, T, h*w)
    mixed = (probs.reshape(b, heads * t, -1) @ keys).reshape(b, heads, t, -1)  # (B, H, T, C)
    out = mixed @ w_v.transpose(1, 2) + attn.v_proj.bias.reshape(heads, 1, -1)
    projected: torch.Tensor = attn.out_proj(_merge(out))
    return projected


def _heads_t(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(1, T, C) -> (1, heads, C / heads, T), contiguous (the layout of a matmul's right side)."""
    return _heads(x, heads).transpose(-1, -2).contiguous()


@dataclass(frozen=True)
class SharedImage:
    """Image-side terms of a decode: they depend on the image and the decoder's weights only.

    Attributes:
        keys: (1, h*w, C) image tokens (embedding plus the no-mask dense embedding).
        hw: (h, w) of the embedding.
        first_k: (1, H, h*w, d) first block's token-to-image keys, k_proj(keys + pe).
        first_v: (1, H, h*w, d) its values, v_proj(keys).
        first_image_q: (1, H, d, h*w) first block's image-to-token queries, q_proj(keys + pe).
        later_pe: Per later block, k_proj(pe) of its token-to-image attention and q_proj(pe)
            of its image-to-token attention, each (1, H, d, h*w).
        final_pe_k: (1, H, d, h*w) k_proj(pe) of the final token-to-image attention.
        high_res: (feat_s0, feat_s1) in the sub-pixel layout, batch 1, or ().
    """

    keys: torch.Tensor
    hw: tuple[int, int]
    first_k: torch.Tensor
    first_v: torch.Tensor
    first_image_q: torch.Tensor
    later_pe: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    final_pe_k: torch.Tensor
    high_res: tuple[torch.Tensor, ...]


def shared_image_terms(
    decoder: Any,
    pe_grid: torch.Tensor,
    image_embed: torch.Tensor,
    dense: torch.Tensor,
    high_res_features: tuple[torch.Tensor, ...],
) -> SharedImage:
    """Compute the image-side terms: pe_grid (1, C, h, w), image_embed and dense (1, C, h, w)."""
    src = image_embed[:1] + dense[:1]
    _, _, h, w = src.shape
    keys = src.flatten(2).transpose(1, 2).contiguous()
    pe = pe_grid.flatten(2).transpose(1, 2).contiguous()
    layers = list(decoder.transformer.layers)
    first = layers[0]
    cross, back = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    with_pe = keys + pe
    later = tuple(
        (
            _heads_t(b.cross_attn_token_to_image.k_proj(pe), b.cross_attn_token_to_image.num_heads),
            _heads_t(b.cross_attn_image_to_token.q_proj(pe), b.cross_attn_image_to_token.num_heads),
        )
        for b in layers[1:]
    )
    final = decoder.transformer.final_attn_token_to_image
    return SharedImage(
        keys=keys,
        hw=(h, w),
        first_k=_heads(cross.k_proj(with_pe), cross.num_heads).contiguous(),
        first_v=_heads(cross.v_proj(keys), cross.num_heads).contiguous(),
        first_image_q=_heads_t(back.q_proj(with_pe), back.num_heads),
        later_pe=later,
        final_pe_k=_heads_t(final.k_proj(pe), final.num_heads),
        high_res=tuple(f[:1] for f in high_res_features),
    )


def _first_block(
    block: Any, tokens: torch.Tensor, image: SharedImage
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two-way block (no PE on its self-attention).

    Args:
        block: The block.
        tokens: (B, T, C) prompt tokens (also their positional encoding).
        image: The shared image-side terms.

    Returns:
        queries (B, T, C) and image tokens (B, h*w, C).
    """
    queries = block.norm1(block.self_attn(q=tokens, k=tokens, v=tokens))
    b, t, c = queries.shape
    cross = block.cross_attn_token_to_image
    heads = cross.num_heads
    # prompts x tokens folded into one query set against the shared image keys
    q = _heads(cross.q_proj(queries + tokens).reshape(1, b * t, -1), heads)
    out = _merge(_attend(q, image.first_k, image.first_v)).reshape(b, t, -1)
    queries = block.norm2(queries + cross.out_proj(out))
    queries = block.norm3(queries + block.mlp(queries))
    back = block.cross_attn_image_to_token
    k, v = _prompt_heads(back, queries, tokens)
    scores = k @ image.first_image_q  # (B, H, T, h*w)
    keys = block.norm4(image.keys + _image_to_token(back, scores, v))
    return queries, keys


def _later_block(
    block: Any,
    queries: torch.Tensor,
    tokens: torch.Tensor,
    keys: torch.Tensor,
    pe_terms: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-way block after the first (keys (B, h*w, C) per prompt).

    `pe_terms` are the block's entry of `SharedImage.later_pe`.
    """
    pe_k, pe_q = pe_terms
    q = queries + tokens
    queries = block.norm1(queries + block.self_attn(q=q, k=q, v=queries))
    cross = block.cross_attn_token_to_image
    out = _token_to_image_folded(cross, queries + tokens, keys, pe_k)
    queries = block.norm2(queries + out)
    queries = block.norm3(queries + block.mlp(queries))
    back = block.cross_attn_image_to_token
    k, v = _prompt_heads(back, queries, tokens)
    b, heads, t, d = k.shape
    # the image queries' projection folded into the prompt keys: (k W_q) . x + k . q_proj(pe)
    w_q = back.q_proj.weight.reshape(heads, d, -1)  # (H, d, C)
    k_in = (k @ w_q).reshape(b, heads * t, -1)  # (B, H*T, C)
    scores = (k_in @ keys.transpose(1, 2)).reshape(b, heads, t, -1) + k @ pe_q
    keys = block.norm4(keys + _image_to_token(back, scores, v))
    return queries, keys


_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def foldable(decoder: Any) -> bool:
    """Whether `decode_shared` may run this decoder: eval mode, plain linear projections.

    The shared path reads the attention projections' weights to fold them into the prompt
    tokens, so a projection wrapped by an adapter (peft's unmerged LoRA layers) or dropout
    in training mode would be skipped silently; such decoders take the model's own path.
    """
    if decoder.training:
        return False
    for name, module in decoder.transformer.named_modules():
        if name.rsplit(".", 1)[-1] in _PROJECTIONS and type(module) is not torch.nn.Linear:
            return False
    return True


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
    decoder: Any = None,
    terms: Callable[[Callable[[], SharedImage]], SharedImage] | None = None,
    part: Callable[[Any, SharedImage, torch.Tensor], DecoderOutput] | None = None,
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
        decoder: The mask decoder to run (None: the model's). A copy in another floating
            dtype (see `core_model.low_precision.LowPrecisionDecoders`) runs in that dtype; the
            prompt encoder always runs in float32.
        terms: Where the image-side terms come from: called with a function that computes
            them, returns them (e.g. from a cache keyed by the image and the decoder's
            weights). None: computed for this call.
        part: What runs each pass (None: `decode_part`; `core_model.traced_decode` gives a
            recorded one with the same arithmetic).

    Returns:
        `DecoderOutput` with float32 logits (B, 1, S/4, S/4) and IoU (B, 1), as
        `UnSAMv2Model.decode_granularity` with ``multimask_output=False``.
    """
    batch = point_coords.shape[0]
    if micro_batch is None:
        on_cpu = point_coords.device.type == "cpu"
        micro_batch = max(1, CPU_PASS_ELEMENTS // image_embed[0].numel()) if on_cpu else batch
    encoder = model.sam_prompt_encoder
    decoder = model.sam_mask_decoder if decoder is None else decoder
    dtype = decoder.iou_token.weight.dtype
    sparse, dense = encoder.encode(point_coords, point_labels, granularity=granularity)

    def build() -> SharedImage:
        return shared_image_terms(
            decoder,
            encoder.get_dense_pe().to(dtype),
            image_embed.to(dtype),
            dense[:1].to(dtype),
            tuple(f.to(dtype) for f in high_res_features),
        )

    image = build() if terms is None else terms(build)
    sparse = sparse.to(dtype)
    run = decode_part if part is None else part
    parts = [
        run(decoder, image, sparse[i : i + micro_batch])
        for i in range(0, batch, max(1, micro_batch))
    ]
    return DecoderOutput(
        low_res_logits=torch.cat([p.low_res_logits for p in parts]).float(),
        iou=torch.cat([p.iou for p in parts]).float(),
    )


def decode_part(decoder: Any, image: SharedImage, sparse: torch.Tensor) -> DecoderOutput:
    """Decode one pass of `decode_shared`: sparse (B, N', C) prompt embeddings.

    Returns logits (B, 1, S/4, S/4) and IoU (B, 1) in the decoder's dtype.
    """
    shift = 1 if decoder.pred_obj_scores else 0
    heads = [decoder.obj_score_token.weight] if decoder.pred_obj_scores else []
    output_tokens = torch.cat(
        [*heads, decoder.iou_token.weight, decoder.mask_tokens.weight, decoder.gra_token.weight]
    )
    batch = sparse.shape[0]
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse), dim=1)
    transformer = decoder.transformer
    layers = list(transformer.layers)
    queries, keys = _first_block(layers[0], tokens, image)
    for block, pe_terms in zip(layers[1:], image.later_pe, strict=True):
        queries, keys = _later_block(block, queries, tokens, keys, pe_terms)
    used = [shift, shift + 1 + decoder.num_mask_tokens]  # IoU token, granularity token
    final = transformer.final_attn_token_to_image
    q_used = queries[:, used] + tokens[:, used]
    out = _token_to_image_folded(final, q_used, keys, image.final_pe_k)
    hs = transformer.norm_final_attn(queries[:, used] + out)
    hyper = decoder.gra_output_token_mlp(hs[:, 1]).unsqueeze(1)  # (B, 1, C/8)
    h, w = image.hw
    if decoder.use_high_res_features:
        feat_s0, feat_s1 = image.high_res
        logits = upscale_and_project(
            decoder.output_upscaling, keys, (h, w), (feat_s0, feat_s1), hyper
        )
    else:
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(batch, -1, h, w))
        logits = (hyper @ upscaled.flatten(2)).reshape(batch, 1, *upscaled.shape[-2:])
    iou = decoder.iou_prediction_head(hs[:, 0])[:, :1]
    return DecoderOutput(low_res_logits=logits, iou=iou)

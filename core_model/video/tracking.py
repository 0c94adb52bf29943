"""One tracking step of SAM-2's video model with UnSAMv2's granularity token.

SAM-2's `SAM2Base.track_step` runs the stock mask decoder. UnSAMv2's video predictor runs the
same step with the granularity prompt token and the granularity output token (official
`yujunwei04/UnSAMv2`, `sam2/sam2/modeling/sam2_base.py`, commit 9114164): the mask is the
granularity mask and the object pointer comes from the granularity output token; mask prompts
used as outputs build their pointer without a granularity. This module computes that step from
the model's own modules, so one `UnSAMv2Model` serves images and video. Memory conditioning is
SAM-2's (`_prepare_memory_conditioned_features`, unchanged in UnSAMv2) and reads an
`output_dict` of the shape SAM-2 uses: ``{"cond_frame_outputs": {t: out},
"non_cond_frame_outputs": {t: out}}``, ``out`` holding ``maskmem_features``, ``maskmem_pos_enc``
and ``obj_ptr``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from core_model.modeling.subpixel import to_subpixel

if TYPE_CHECKING:
    from core_model.modeling.unsamv2 import UnSAMv2Model

NO_OBJECT_LOGIT = -1024.0  # SAM-2's NO_OBJ_SCORE: logits of a frame where the object is absent
MASK_OUTPUT_SCALE, MASK_OUTPUT_BIAS = 20.0, -10.0  # mask prompts as logits: -10 / +10
FrameOutput = dict[str, Any]
"""A frame's result for one object: ``pred_masks`` (1, 1, S/4, S/4) float32 logits,
``obj_ptr`` (1, C), ``object_score_logits`` (1, 1), ``maskmem_features`` (1, C_mem, h, w) or
None, ``maskmem_pos_enc`` (list of (1, C_mem, h, w)) or None."""


@dataclass(frozen=True)
class FrameFeatures:
    """Image features of one frame in SAM-2's flattened layout (batch 1).

    Attributes:
        top: (h*w, 1, C) lowest-resolution features (the memory attention's input).
        top_pos: (h*w, 1, C) their sine positional encoding.
        top_size: (h, w) = (S/16, S/16).
        high_res: High-resolution decoder features in the sub-pixel layout of
            `core_model.modeling.subpixel`, or () if the model does not use them.
    """

    top: torch.Tensor
    top_pos: torch.Tensor
    top_size: tuple[int, int]
    high_res: tuple[torch.Tensor, ...]

    def top_map(self) -> torch.Tensor:
        """Return the top-level features as (1, C, h, w)."""
        return self.top.permute(1, 2, 0).reshape(1, -1, *self.top_size)

    def nbytes(self) -> int:
        """Return the bytes held by the tensors."""
        tensors = (self.top, self.top_pos, *self.high_res)
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class HeadOutput:
    """Decoder output for B objects on one frame.

    Attributes:
        low_res: (B, 1, S/4, S/4) float32 mask logits.
        high_res: (B, 1, S, S) float32 mask logits.
        obj_ptr: (B, C) object pointer.
        object_score_logits: (B, 1) object-score logits (> 0: object present).
    """

    low_res: torch.Tensor
    high_res: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor


def frame_features(model: UnSAMv2Model, image: torch.Tensor) -> FrameFeatures:
    """Encode one preprocessed frame.

    Args:
        model: The model (eval mode).
        image: (1, 3, S, S) float32 normalised frame (`core_model.video.frames`).
    """
    levels = model.backbone_levels(image)
    top = levels[-1]
    pos = model.image_encoder.neck.position_encoding(top).to(top.dtype)
    high_res: tuple[torch.Tensor, ...] = ()
    if model.use_high_res_features_in_sam:
        high_res = (to_subpixel(levels[0], 2), to_subpixel(levels[1], 1))
    return FrameFeatures(
        top=top.flatten(2).permute(2, 0, 1),
        top_pos=pos.flatten(2).permute(2, 0, 1),
        top_size=(int(top.shape[-2]), int(top.shape[-1])),
        high_res=high_res,
    )


def granularity_heads(
    model: UnSAMv2Model,
    pix_feat: torch.Tensor,
    high_res: tuple[torch.Tensor, ...],
    *,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    mask_input: torch.Tensor | None,
    granularity: float | None,
) -> HeadOutput:
    """Run the prompt encoder and the granularity mask decoder on (memory-conditioned) features.

    Args:
        model: The model.
        pix_feat: (B, C, h, w) features of the frame.
        high_res: High-resolution features of the frame (sub-pixel layout), batch 1 or B.
        points: (B, N, 2) float32 (x, y) in the model frame and (B, N) int32 labels, or None
            (a padding point is used, as SAM-2 does on frames without clicks).
        mask_input: (B, 1, H', W') mask logits or binary mask, resized to the prompt encoder's
            mask size if needed; or None.
        granularity: g in [0.1, 1] for every object, or None for no granularity token.
    """
    batch, device = pix_feat.shape[0], pix_feat.device
    if points is None:
        coords = torch.zeros(batch, 1, 2, device=device)
        labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
    else:
        coords, labels = points
    encoder = model.sam_prompt_encoder
    if mask_input is not None and tuple(mask_input.shape[-2:]) != tuple(encoder.mask_input_size):
        mask_input = F.interpolate(
            mask_input.float(),
            size=encoder.mask_input_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    gra = None if granularity is None else torch.full((batch, 1), granularity, device=device)
    sparse, dense = encoder.encode(coords, labels, granularity=gra, mask_input=mask_input)
    logits, _, token, object_score = model.sam_mask_decoder.predict_granularity_mask(
        pix_feat,
        encoder.get_dense_pe(),
        sparse,
        dense,
        high_res_features=high_res or None,
        multimask_output=False,
    )
    appearing = object_score > 0
    if model.pred_obj_scores:
        # the mask kept for memory is a hard choice between object and no object
        logits = torch.where(appearing[:, None, None], logits, NO_OBJECT_LOGIT)
    logits = logits.float()
    size = int(model.image_size)
    upsampled = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    obj_ptr = model.obj_ptr_proj(token[:, 0])
    if model.pred_obj_scores:
        weight = object_score.sigmoid() if model.soft_no_obj_ptr else appearing.float()
        obj_ptr = _blend_no_object_pointer(model, obj_ptr, weight)
    return HeadOutput(logits, upsampled, obj_ptr, object_score)


def _blend_no_object_pointer(
    model: UnSAMv2Model, obj_ptr: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    if model.fixed_no_obj_ptr:
        obj_ptr = weight * obj_ptr
    no_object: torch.Tensor = model.no_obj_ptr
    return obj_ptr + (1 - weight) * no_object


def mask_as_output(
    model: UnSAMv2Model,
    pix_feat: torch.Tensor,
    high_res: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
) -> HeadOutput:
    """Use a mask prompt directly as the frame's output (SAM-2's `_use_mask_as_output`).

    Args:
        model: The model.
        pix_feat: (B, C, h, w) frame features without memory.
        high_res: High-resolution features (sub-pixel layout).
        mask: (B, 1, S, S) float binary mask in the model frame.
    """
    high = mask * MASK_OUTPUT_SCALE + MASK_OUTPUT_BIAS
    low = F.interpolate(
        high,
        size=(high.shape[-2] // 4, high.shape[-1] // 4),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    if model.use_obj_ptrs_in_encoder:
        # the official code builds this pointer without a granularity token
        obj_ptr = granularity_heads(
            model,
            pix_feat,
            high_res,
            points=None,
            mask_input=model.mask_downsample(mask),
            granularity=None,
        ).obj_ptr
    else:
        obj_ptr = torch.zeros(mask.shape[0], model.hidden_dim, device=mask.device)
    weight = torch.any(mask.flatten(1) > 0.0, dim=1)[..., None].float()
    object_score = MASK_OUTPUT_SCALE * weight + MASK_OUTPUT_BIAS
    if model.pred_obj_scores:
        obj_ptr = _blend_no_object_pointer(model, obj_ptr, weight)
    return HeadOutput(low, high, obj_ptr, object_score)


def encode_memory(
    model: UnSAMv2Model,
    features: FrameFeatures,
    high_res_masks: torch.Tensor,
    object_score_logits: torch.Tensor,
    *,
    binarize: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Encode a frame and its mask into a memory (SAM-2's `_encode_new_memory`, one object).

    Args:
        model: The model.
        features: The frame's features.
        high_res_masks: (1, 1, S, S) float32 mask logits.
        object_score_logits: (1, 1) object-score logits.
        binarize: Threshold the mask at 0 instead of a sigmoid (masks from clicks, when the
            video settings ask for it).

    Returns:
        Memory features (1, C_mem, h, w) and their positional encodings (list of
        (1, C_mem, h, w)).
    """
    mask = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
    if model.sigmoid_scale_for_mem_enc != 1.0:
        mask = mask * model.sigmoid_scale_for_mem_enc
    if model.sigmoid_bias_for_mem_enc != 0.0:
        mask = mask + model.sigmoid_bias_for_mem_enc
    out = model.memory_encoder(features.top_map(), mask, skip_mask_sigmoid=True)
    memory: torch.Tensor = out["vision_features"]
    if model.no_obj_embed_spatial is not None:
        absent = 1 - (object_score_logits > 0).float()
        memory = memory + absent[..., None, None] * model.no_obj_embed_spatial[..., None, None]
    return memory, list(out["vision_pos_enc"])


class _MemoryInDtype(Mapping[int, FrameOutput]):
    """Outputs whose memory features (stored in bfloat16) read back in the compute dtype.

    SAM-2 concatenates memories with float32 object pointers, which promotes them; a frame with
    no pointer would mix bfloat16 memories with float32 weights, so they are converted here.
    """

    def __init__(self, outputs: Mapping[int, FrameOutput], dtype: torch.dtype) -> None:
        self._outputs = outputs
        self._dtype = dtype

    def __getitem__(self, frame: int) -> FrameOutput:
        out = self._outputs[frame]
        memory = out.get("maskmem_features")
        if isinstance(memory, torch.Tensor) and memory.dtype != self._dtype:
            out = {**out, "maskmem_features": memory.to(self._dtype)}
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


def track_step(
    model: UnSAMv2Model,
    features: FrameFeatures,
    *,
    frame_idx: int,
    is_init_cond_frame: bool,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    mask_input: torch.Tensor | None,
    memory: Mapping[str, Mapping[int, FrameOutput]],
    num_frames: int,
    reverse: bool,
    granularity: float | None,
    prev_mask_logits: torch.Tensor | None = None,
) -> tuple[FrameOutput, HeadOutput]:
    """Segment one object on one frame from its prompts and memory (no memory encoding).

    Args:
        model: The model (eval mode, inference only).
        features: The frame's features.
        frame_idx: Index of the frame in the clip.
        is_init_cond_frame: A prompted frame not tracked before: no memory is used.
        points: Prompt points in the model frame and labels (batch 1), or None.
        mask_input: (1, 1, S, S) float binary mask prompt, or None.
        memory: The object's `output_dict` (see module docstring).
        num_frames: Frames in the clip.
        reverse: Tracking runs backwards in time.
        granularity: The object's granularity (None: no granularity token).
        prev_mask_logits: (1, 1, S/4, S/4) earlier logits of this frame, fed with new clicks.

    Returns:
        The frame output (without memory features) and the raw head output.
    """
    if mask_input is not None and model.use_mask_input_as_output_without_sam:
        heads = mask_as_output(model, features.top_map(), features.high_res, mask_input)
    else:
        pix_feat = model._prepare_memory_conditioned_features(
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=[features.top],
            current_vision_pos_embeds=[features.top_pos],
            feat_sizes=[features.top_size],
            output_dict={k: _MemoryInDtype(v, features.top.dtype) for k, v in memory.items()},
            num_frames=num_frames,
            track_in_reverse=reverse,
        )
        if prev_mask_logits is not None:
            mask_input = prev_mask_logits
        heads = granularity_heads(
            model,
            pix_feat,
            features.high_res,
            points=points,
            mask_input=mask_input,
            granularity=granularity,
        )
    out: FrameOutput = {
        "pred_masks": heads.low_res,
        "obj_ptr": heads.obj_ptr,
        "object_score_logits": heads.object_score_logits,
        "maskmem_features": None,
        "maskmem_pos_enc": None,
    }
    return out, heads


def fill_small_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill background components of at most `max_area` pixels with logit 0.1.

    SAM-2's `fill_holes_in_mask_scores` (8-connected components of ``logits <= 0``), which needs
    SAM-2's CUDA extension; this is the same rule with OpenCV on the CPU.

    Args:
        logits: (B, 1, h, w) float mask logits.
        max_area: Largest hole filled, in low-resolution pixels (0: nothing is filled).
    """
    if max_area <= 0:
        return logits
    import cv2

    filled = logits.clone()
    background = (logits <= 0).cpu().numpy().astype(np.uint8)
    for b in range(background.shape[0]):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(background[b, 0], connectivity=8)
        small = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] <= max_area]
        if small:
            holes = torch.from_numpy(np.isin(labels, small)).to(logits.device)
            filled[b, 0] = torch.where(holes, 0.1, filled[b, 0])
    return filled

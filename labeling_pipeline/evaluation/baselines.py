"""SAM-2 single-mask output (the non-oracle SAM-2 baseline of the interactive protocol).

`GranularityPredictor.predict_sam2_multimask` gives SAM-2's three multimask outputs (the oracle
baseline takes the best of them). The single-mask output is what SAM-2's image predictor returns
with `multimask_output=False`: the stock decoder's mask token 0, replaced by the most confident
multimask output when token 0 is unstable (SAM-2's "dynamic multimask via stability", active at
inference when the model config enables it, as stock SAM-2.1 configs do). No granularity token
is given. The predictor has no public call for it, so it is built here from the model's public
modules with the predictor's own pre- and post-processing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from core_model.types import ImageEmbedding, MaskPrediction, Prompts

if TYPE_CHECKING:
    from core_model.predictor import GranularityPredictor

LOW_RES_CLAMP = 32.0


def sam2_single_mask(
    predictor: GranularityPredictor,
    embedding: ImageEmbedding,
    prompts: Prompts,
    *,
    mask_input: npt.NDArray[np.float32] | None = None,
) -> MaskPrediction:
    """Decode SAM-2's single-mask output for one prompt set (no granularity).

    Args:
        predictor: The predictor whose model decodes.
        embedding: From `predictor.embed`.
        prompts: Clicks only, (x, y) pixels of the original image.
        mask_input: (1, S/4, S/4) float32 low-resolution logits of a previous mask, or None.

    Returns:
        masks (1, H, W) bool, scores (1,) float32, low_res_logits (1, S/4, S/4) float32;
        `granularities` is empty and `mode` is "sam2-multimask" (stock SAM-2 tokens).
    """
    import torch

    from core_model.modeling.subpixel import from_subpixel
    from core_model.preprocess import to_model_frame, upsample_masks

    model = predictor.model
    height, width = embedding.original_hw
    prompts.check_inside(height, width)
    device = predictor.device
    coords = to_model_frame(prompts.coords_array(), embedding.original_hw, model.image_size)
    labels = torch.as_tensor(prompts.labels_array(), device=device)[None]
    dense_mask = None
    if mask_input is not None:
        side = model.low_res_size
        dense_mask = torch.as_tensor(mask_input, dtype=torch.float32, device=device)
        dense_mask = dense_mask.reshape(1, 1, side, side)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    high_res = embedding.high_res_features
    with torch.no_grad(), autocast:
        sparse, dense = model.sam_prompt_encoder.encode(
            coords.to(device)[None], labels, granularity=None, mask_input=dense_mask
        )
        logits, iou, _, _ = model.sam_mask_decoder(
            image_embeddings=embedding.image_embed,
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=[from_subpixel(high_res[0], 2), from_subpixel(high_res[1], 1)]
            if high_res
            else None,
        )
    low_res = logits[0].float()  # (1, S/4, S/4)
    return MaskPrediction(
        masks=upsample_masks(low_res, embedding.original_hw, threshold=predictor.mask_threshold),
        scores=iou[0].float().cpu().numpy().astype(np.float32),
        low_res_logits=low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP).cpu().numpy(),
        granularities=(),
        mode="sam2-multimask",
        model_version=predictor.model_version,
    )

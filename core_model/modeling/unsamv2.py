"""UnSAMv2 model: SAM-2 (`sam2.modeling.sam2_base.SAM2Base`) with the granularity modules.

The class keeps every SAM-2 module, name and state-dict key (official checkpoints load
strictly) and replaces only the prompt encoder and mask decoder by their granularity-aware
subclasses. It adds three plain entry points used by the predictor and by training:
`encode_image`, `decode_granularity` and `decode_sam2` (stock SAM-2: fallback and baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from sam2.modeling.sam.transformer import TwoWayTransformer
from sam2.modeling.sam2_base import SAM2Base
from sam2.modeling.sam2_utils import MLP

from core_model.modeling.fast_encoder import FastImageEncoder, supports_fast_path
from core_model.modeling.granularity import GranularityMaskDecoder, GranularityPromptEncoder
from core_model.modeling.subpixel import from_subpixel, to_subpixel

GranularityMode = Literal["granularity", "sam2-multimask"]


@dataclass(frozen=True)
class ModelInfo:
    """Where a built model comes from.

    Attributes:
        config_name: Variant name or YAML stem.
        version: Stable identifier of the weights (used in cache keys and `model_version`).
        checkpoint_kind: "official", "sam2", "finetuned" or "random".
        checkpoint_sha256: sha256 of the checkpoint file, or None for random weights.
        granularity_mode: "granularity" when the granularity modules are to be used;
            "sam2-multimask" when they are untrained (plain SAM-2.1 checkpoint).
    """

    config_name: str
    version: str
    checkpoint_kind: str
    checkpoint_sha256: str | None
    granularity_mode: GranularityMode


@dataclass(frozen=True)
class DecoderOutput:
    """Raw decoder output for B prompt sets.

    Attributes:
        low_res_logits: (B, K, S/4, S/4) float logits in the model's square frame (K = 1 for the
            granularity path, 3 for the stock multimask path).
        iou: (B, K) predicted IoU.
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor


class UnSAMv2Model(SAM2Base):  # type: ignore[misc]
    """SAM-2 with UnSAMv2's granularity prompt token and granularity output token.

    Args:
        fourier_dim: Fourier features of the granularity encoder (128 in UnSAMv2).
        temperature: Frequency base of the Fourier features (100 in UnSAMv2).
        *args: Positional arguments of `SAM2Base` (image encoder, memory attention/encoder).
        **kwargs: Keyword arguments of `SAM2Base`, as in SAM-2's YAML configs.
    """

    info: ModelInfo
    _fast_encoder: FastImageEncoder | None = None  # created on the first fast encode

    def __init__(
        self, *args: Any, fourier_dim: int = 128, temperature: float = 100.0, **kwargs: Any
    ) -> None:
        # read by _build_sam_heads, which SAM2Base.__init__ calls
        self._granularity_fourier_dim = fourier_dim
        self._granularity_temperature = temperature
        super().__init__(*args, **kwargs)
        self.info = ModelInfo(self.__class__.__name__, "unset", "random", None, "granularity")

    def _build_sam_heads(self) -> None:
        """Build the heads like SAM2Base does, with granularity-aware encoder and decoder.

        Construction order equals the official model's, so the same seed gives the same random
        weights.
        """
        self.sam_prompt_embed_dim = self.hidden_dim
        self.sam_image_embedding_size = self.image_size // self.backbone_stride
        self.sam_prompt_encoder = GranularityPromptEncoder(
            embed_dim=self.sam_prompt_embed_dim,
            image_embedding_size=(self.sam_image_embedding_size, self.sam_image_embedding_size),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=16,
            fourier_dim=self._granularity_fourier_dim,
            temperature=self._granularity_temperature,
        )
        self.sam_mask_decoder = GranularityMaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=self.sam_prompt_embed_dim, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=self.sam_prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=self.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=self.iou_prediction_use_sigmoid,
            pred_obj_scores=self.pred_obj_scores,
            pred_obj_scores_mlp=self.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=self.use_multimask_token_for_obj_ptr,
            **(self.sam_mask_decoder_extra_args or {}),
        )
        self.obj_ptr_proj: torch.nn.Module = torch.nn.Identity()
        if self.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = torch.nn.Linear(self.hidden_dim, self.hidden_dim)
            if self.use_mlp_for_obj_ptr_proj:
                self.obj_ptr_proj = MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
        self.obj_ptr_tpos_proj: torch.nn.Module = torch.nn.Identity()
        if self.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = torch.nn.Linear(self.hidden_dim, self.mem_dim)

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (image_size / 4)."""
        return int(self.image_size) // 4

    def backbone_levels(self, images: torch.Tensor, *, fast: bool = True) -> Sequence[torch.Tensor]:
        """Return the image encoder's feature levels that the heads use, high to low resolution.

        Args:
            images: (B, 3, S, S) float, normalised with ImageNet mean/std, S = image_size.
            fast: As in `encode_image`.

        Returns:
            `num_feature_levels` maps as `SAM2Base.forward_image` returns them (levels 0 and 1
            already through the decoder's 1x1 convolutions): (B, C/8, S/4, S/4),
            (B, C/4, S/8, S/8) and (B, C, S/16, S/16) for SAM-2.1 models; no memory embedding
            added.
        """
        if fast and not torch.is_grad_enabled() and supports_fast_path(self):
            if self._fast_encoder is None:
                self._fast_encoder = FastImageEncoder()
            return self._fast_encoder.encode_features(self, images)
        levels: Sequence[torch.Tensor] = self.forward_image(images)["backbone_fpn"]
        return levels[-self.num_feature_levels :]

    def encode_image(
        self, images: torch.Tensor, *, fast: bool = True
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Compute the features the decoder needs.

        Args:
            images: (B, 3, S, S) float, normalised with ImageNet mean/std, S = image_size.
            fast: Without autograd and in eval mode, run the encoder's inference forward
                (`core_model.modeling.fast_encoder`: same weights, equal up to float rounding);
                False always runs SAM-2's modules.

        Returns:
            image_embed (B, C, h, w), h = w = S/16, with the no-memory embedding added, and the
            high-resolution features, projected by the decoder's 1x1 convolutions and stored in
            the decoder's sub-pixel layout (see `core_model.modeling.subpixel`):
            ((B, h, w, 4, 4, C/8), (B, h, w, 4, C/4)); an empty tuple if the model does not
            use them.
        """
        levels = self.backbone_levels(images, fast=fast)
        image_embed = levels[-1]
        if self.directly_add_no_mem_embed:
            image_embed = image_embed + self.no_mem_embed.reshape(1, -1, 1, 1)
        if not self.use_high_res_features_in_sam:
            return image_embed, ()
        return image_embed, (to_subpixel(levels[0], 2), to_subpixel(levels[1], 1))

    def _prompt_batch(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        granularity: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoder: GranularityPromptEncoder = self.sam_prompt_encoder
        return encoder.encode(
            point_coords, point_labels, granularity=granularity, mask_input=mask_input
        )

    def decode_granularity(
        self,
        image_embed: torch.Tensor,
        high_res_features: tuple[torch.Tensor, ...],
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        granularity: torch.Tensor,
        *,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> DecoderOutput:
        """Decode one granularity mask per prompt set.

        Args:
            image_embed: (1 or B, C, h, w) from `encode_image`.
            high_res_features: high-resolution features from `encode_image`.
            point_coords: (B, N, 2) float, (x, y) in the model's input frame (0..image_size);
                box corners first (labels 2, 3), then clicks.
            point_labels: (B, N) int32.
            granularity: (B, 1) float in [0.1, 1].
            mask_input: (B, 1, S/4, S/4) previous low-resolution logits, or None.
            multimask_output: Selects the IoU path (see `GranularityMaskDecoder`).

        Returns:
            `DecoderOutput` with logits (B, 1, S/4, S/4) and IoU (B, 1).
        """
        sparse, dense = self._prompt_batch(point_coords, point_labels, granularity, mask_input)
        decoder: GranularityMaskDecoder = self.sam_mask_decoder
        logits, iou, _, _ = decoder.predict_granularity_mask(
            image_embed,
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            high_res_features=high_res_features or None,
            multimask_output=multimask_output,
        )
        return DecoderOutput(low_res_logits=logits, iou=iou)

    def decode_sam2(
        self,
        image_embed: torch.Tensor,
        high_res_features: tuple[torch.Tensor, ...],
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        *,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> DecoderOutput:
        """Decode with stock SAM-2 tokens only (no granularity token in the prompt or output).

        Arguments as in `decode_granularity`, without granularity. With `multimask_output`,
        SAM-2's three masks: logits (B, 3, S/4, S/4) and IoU (B, 3). Without, mask token 0:
        (B, 1, ...) and (B, 1); at inference (eval mode) SAM-2 then swaps in the best multimask
        output when token 0 is unstable, if the config enables it (SAM-2.1 configs do).
        """
        sparse, dense = self._prompt_batch(point_coords, point_labels, None, mask_input)
        batch = sparse.shape[0]
        if image_embed.shape[0] != batch:
            image_embed = image_embed.expand(batch, -1, -1, -1)
        logits, iou, _, _ = self.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=[
                from_subpixel(high_res_features[0], 2),
                from_subpixel(high_res_features[1], 1),
            ]
            if high_res_features
            else None,
        )
        return DecoderOutput(low_res_logits=logits, iou=iou)

"""UnSAMv2's granularity modules on top of SAM-2's prompt encoder and mask decoder.

Architecture as released in yujunwei04/UnSAMv2 (commit 9114164), re-implemented over the
`sam2` package's modules (Apache-2.0, facebookresearch/sam2):

* prompt side: a granularity g in [0.1, 1] becomes one sparse token
  ``MLP(phi(g)) + b`` with ``phi(g) = [sin(f_0 g), cos(f_0 g), ..., sin(f_63 g), cos(f_63 g)]``,
  ``f_k = T ** (k / 64)``, T = 100 (no 2*pi), appended after the point tokens (and SAM's padding
  token);
* decoder side: one extra learned output token after SAM's four mask tokens; its transformer
  output, through a 3-layer hypernetwork MLP, gives the single granularity mask.

Attribute names (``granularity_embedding``, ``fourier_embedder.mlp.mlp``, ``gra_token``,
``gra_output_token_mlp``) are those of the official checkpoints and must not change.
"""

from __future__ import annotations

import torch
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder
from sam2.modeling.sam2_utils import MLP
from torch import nn

from core_model.errors import ModelConfigError
from core_model.modeling.subpixel import upscale_and_project


class _GranularityMLP(nn.Module):
    """Linear/ReLU/Dropout stack; hidden width (in + out) // 2, as in the official model."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        hidden = (in_dim + out_dim) // 2
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)  # type: ignore[no-any-return]


class GranularityFourierMLP(nn.Module):
    """Map granularity values to embeddings: Fourier features, then an MLP.

    Args:
        fourier_dim: Number of Fourier features (even): fourier_dim / 2 frequencies.
        out_dim: Embedding size (the prompt embedding dim, 256 for real models).
        num_layers: Linear layers of the MLP (3 in the official model).
        temperature: Frequency base T: f_k = T ** (k / (fourier_dim / 2)).
        dropout: Dropout between MLP layers (training only).
    """

    def __init__(
        self,
        *,
        fourier_dim: int = 128,
        out_dim: int = 256,
        num_layers: int = 3,
        temperature: float = 100.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if fourier_dim <= 0 or fourier_dim % 2:
            raise ModelConfigError(f"fourier_dim must be a positive even number, got {fourier_dim}")
        num_freqs = fourier_dim // 2
        # computed exactly as the official code does: float32 T ** (arange(n) / n)
        frequencies = temperature ** (torch.arange(num_freqs) / num_freqs)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.mlp = _GranularityMLP(fourier_dim, out_dim, num_layers, dropout)

    def fourier_features(self, granularity: torch.Tensor) -> torch.Tensor:
        """Return phi(g): (B, fourier_dim), sin/cos interleaved per frequency, for g (B, 1)."""
        frequencies: torch.Tensor = self.frequencies  # type: ignore[assignment]
        angles = granularity.to(frequencies.dtype) * frequencies
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)

    def forward(self, granularity: torch.Tensor) -> torch.Tensor:
        """Return MLP(phi(g)): (B, out_dim) for g of shape (B, 1)."""
        with torch.no_grad():  # g is an input, never a parameter
            features = self.fourier_features(granularity)
        return self.mlp(features)  # type: ignore[no-any-return]


class GranularityPromptEncoder(PromptEncoder):  # type: ignore[misc]
    """SAM-2 prompt encoder plus the granularity token.

    Args:
        embed_dim: Prompt embedding size.
        image_embedding_size: (h, w) of the image embedding (image_size / 16).
        input_image_size: (H, W) of the model's square input (image_size).
        mask_in_chans: Hidden channels of the mask-input encoder (16 in SAM-2).
        fourier_dim: Fourier features of the granularity encoder.
        temperature: Frequency base of the granularity encoder.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        fourier_dim: int = 128,
        temperature: float = 100.0,
    ) -> None:
        super().__init__(
            embed_dim=embed_dim,
            image_embedding_size=image_embedding_size,
            input_image_size=input_image_size,
            mask_in_chans=mask_in_chans,
        )
        self.granularity_embedding = nn.Embedding(1, embed_dim)
        self.fourier_embedder = GranularityFourierMLP(
            fourier_dim=fourier_dim, out_dim=embed_dim, temperature=temperature
        )

    def embed_granularity(self, granularity: torch.Tensor) -> torch.Tensor:
        """Return the granularity token (B, 1, embed_dim) for g of shape (B, 1)."""
        token = self.fourier_embedder(granularity) + self.granularity_embedding.weight
        return token.unsqueeze(1)  # type: ignore[no-any-return]

    def encode(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        *,
        granularity: torch.Tensor | None,
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed clicks (box corners included), an optional mask and an optional granularity.

        Args:
            point_coords: (B, N, 2) float, (x, y) in the model's input frame (0..image_size).
            point_labels: (B, N) int: 1 positive, 0 negative, 2/3 box corners, -1 padding.
            granularity: (B, 1) float, or None for no granularity token (stock SAM-2 prompts).
            mask_input: (B, 1, 4h, 4w) low-resolution mask logits, or None.

        Returns:
            sparse: (B, N + 1 [+ 1], C) tokens ordered points, padding token, granularity token.
            dense: (B, C, h, w) dense prompt embedding.
        """
        sparse, dense = self.forward(
            points=(point_coords, point_labels), boxes=None, masks=mask_input
        )
        if granularity is not None:
            sparse = torch.cat([sparse, self.embed_granularity(granularity)], dim=1)
        return sparse, dense


class GranularityMaskDecoder(MaskDecoder):  # type: ignore[misc]
    """SAM-2 mask decoder plus the granularity output token and its hypernetwork.

    Construction arguments are those of `sam2.modeling.sam.mask_decoder.MaskDecoder`. The stock
    `forward` is unchanged (SAM-2 behaviour, used when a model has no trained granularity
    modules); `predict_granularity_mask` is the UnSAMv2 path.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.gra_token = nn.Embedding(1, self.transformer_dim)
        self.gra_output_token_mlp = MLP(
            self.transformer_dim, self.transformer_dim, self.transformer_dim // 8, 3
        )

    def predict_granularity_mask(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        *,
        high_res_features: tuple[torch.Tensor, ...] | None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode the granularity mask.

        Output tokens are ``[obj_score?, iou, mask x4, gra]`` followed by the prompt tokens; the
        granularity token's output (index 6 with the object-score token) gives the mask. The
        IoU is the frozen stock head's: token 0 when `multimask_output` is False, else the
        maximum over tokens 1..3 (the official semantics; only the former was trained).

        Args:
            image_embeddings: (1 or B, C, h, w); a batch of 1 is shared by all B prompt sets.
            image_pe: (1, C, h, w) dense positional encoding.
            sparse_prompt_embeddings: (B, T, C).
            dense_prompt_embeddings: (B, C, h, w).
            high_res_features: the image's high-resolution features in the sub-pixel layout of
                `core_model.modeling.subpixel` ((1 or B, h, w, 4, 4, C/8), (1 or B, h, w, 4, C/4)),
                or None for decoders without the high-resolution path.
            multimask_output: Selects the IoU path only; there is always one mask.

        Returns:
            logits (B, 1, 4h, 4w), iou (B, 1), granularity output token (B, 1, C),
            object-score logits (B, 1).
        """
        batch = sparse_prompt_embeddings.shape[0]
        shift = 1 if self.pred_obj_scores else 0
        heads = [self.obj_score_token.weight] if self.pred_obj_scores else []
        output_tokens = torch.cat(
            [*heads, self.iou_token.weight, self.mask_tokens.weight, self.gra_token.weight], dim=0
        )
        tokens = torch.cat(
            (output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings), dim=1
        )
        src = image_embeddings
        if src.shape[0] != batch:
            if src.shape[0] != 1:
                raise ValueError(f"image batch {src.shape[0]} does not match prompt batch {batch}")
            src = src.expand(batch, -1, -1, -1)
        src = src + dense_prompt_embeddings
        pos_src = image_pe.expand(batch, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        gra_out = hs[:, shift + 1 + self.num_mask_tokens, :]
        hyper = self.gra_output_token_mlp(gra_out).unsqueeze(1)  # (B, 1, C/8)
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError("this decoder needs the image's high-resolution features")
            feat_s0, feat_s1 = high_res_features
            logits = upscale_and_project(
                self.output_upscaling, src, (h, w), (feat_s0, feat_s1), hyper
            )
        else:
            upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
            logits = (hyper @ upscaled.flatten(2)).reshape(b, 1, *upscaled.shape[-2:])

        iou_all = self.iou_prediction_head(hs[:, shift, :])
        # token 0 when single-mask, else the best of tokens 1..3
        iou = iou_all[:, 1:].max(dim=1, keepdim=True).values if multimask_output else iou_all[:, :1]
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            object_score_logits = 10.0 * iou.new_ones(iou.shape[0], 1)
        return logits, iou, gra_out.unsqueeze(1), object_score_logits

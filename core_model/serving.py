"""`MaskPredictor`: what a serving process asks of its model.

`GranularityPredictor` implements it; so does the serving process's gate in front of it, which
lets every caller (Label Studio, CVAT, the whole-image segmenter) work with either. The protocol
lists only what callers use: embeddings, batched decoding, masks, and which model this is. It
does not expose the torch module itself, so nothing can run the encoder around a gate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from core_model.cache import EmbeddingCache
from core_model.low_precision import DecodePrecision
from core_model.modeling.unsamv2 import DecoderOutput, ModelInfo
from core_model.types import ImageEmbedding, MaskPrediction, Prompts


class MaskPredictor(Protocol):
    """Embeddings and granularity-controlled masks of one model (see `GranularityPredictor`).

    Implementations are safe to call from many threads at once.
    """

    @property
    def info(self) -> ModelInfo:
        """Where the model comes from (variant, weights version, granularity mode)."""
        ...

    @property
    def model_version(self) -> str:
        """Version string of the model's weights (part of every embedding's cache key)."""
        ...

    @property
    def device(self) -> torch.device:
        """Device the model runs on."""
        ...

    @property
    def image_size(self) -> int:
        """Side S of the model's square input frame in pixels."""
        ...

    @property
    def mask_threshold(self) -> float:
        """Logit threshold of binary masks."""
        ...

    @property
    def max_image_pixels(self) -> int:
        """Largest accepted image (H * W)."""
        ...

    @property
    def cache(self) -> EmbeddingCache:
        """The embedding cache."""
        ...

    def embed(self, image: npt.NDArray[np.uint8], *, key: str | None = None) -> ImageEmbedding:
        """Return the (cached) embedding of an (H, W, 3) uint8 RGB image."""
        ...

    def embed_keyed(self, key: str, load: Callable[[], npt.NDArray[np.uint8]]) -> ImageEmbedding:
        """Return the embedding of the image identified by `key`.

        Contract: on a cache hit `load` is not called; on a miss it is called exactly once, in
        the calling thread, and the encoder runs on its result right after it returns, before
        `embed_keyed` returns. Concurrent misses of one key run the encoder once.
        """
        ...

    def decode(
        self,
        embedding: ImageEmbedding,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        granularities: Sequence[float],
        *,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = False,
        precision: DecodePrecision = "float32",
    ) -> DecoderOutput:
        """Decode B prompt sets: coords (B, N, 2) (x, y) model frame, labels (B, N)."""
        ...

    def predict(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        *,
        granularity: float,
        multimask_output: bool = False,
        mask_input: npt.ArrayLike | None = None,
        refine: bool = False,
    ) -> MaskPrediction:
        """Predict one mask (1, H, W) bool for one prompt set at one granularity."""
        ...

    def predict_many(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        granularities: Sequence[float],
        *,
        multimask_output: bool = False,
        mask_input: npt.ArrayLike | None = None,
        refine: bool = False,
    ) -> MaskPrediction:
        """Predict masks (G, H, W) bool for one prompt set at G granularities."""
        ...

    def predict_sam2(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        *,
        multimask_output: bool = True,
        mask_input: npt.ArrayLike | None = None,
    ) -> MaskPrediction:
        """Stock SAM-2 prediction without a granularity token (the paper's baseline)."""
        ...

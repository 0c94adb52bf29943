"""`GranularityPredictor`: cached image embeddings and granularity-controlled mask decoding.

The predictor holds no per-image state: `embed` returns an `ImageEmbedding` value (cached by
content), and `predict` takes it as an argument, so one predictor per process serves many
threads. Inputs are validated here; every error is an `UnSAMv2Error`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch

from core_model.cache import EmbeddingCache, LRUEmbeddingCache
from core_model.click_terms import CLICK_TERMS_IMAGES, ClickTerms
from core_model.errors import InvalidImageError, InvalidPromptError
from core_model.grid_decode import decode_shared, foldable, use_shared_decode
from core_model.imageio import MAX_IMAGE_PIXELS
from core_model.low_precision import DecodePrecision, LowPrecisionDecoders, weights_state
from core_model.modeling.unsamv2 import DecoderOutput, ModelInfo, UnSAMv2Model
from core_model.preprocess import (
    PREPROCESS_VERSION,
    check_image,
    image_digest,
    to_model_frame,
    to_model_input,
    upsample_masks,
)
from core_model.traced_decode import TracedPasses, traced_here
from core_model.types import (
    ImageEmbedding,
    MaskPrediction,
    Prompts,
    as_granularity_tuple,
    validate_granularity,
)

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024  # ~30 Hiera-S embeddings (16 MiB each in float32)
LOW_RES_CLAMP = 32.0  # the official predictor clamps returned low-resolution logits


def multimask_rank(granularity: float) -> int:
    """Map a granularity to the area rank (0 smallest .. 2 largest) of SAM-2's three masks."""
    return min(2, max(0, math.floor((granularity - 0.1) / 0.3 + 1e-9)))


class GranularityPredictor:
    """Click-to-mask prediction at a chosen granularity (a `core_model.serving.MaskPredictor`).

    Args:
        model: A built `UnSAMv2Model` (see `core_model.build_model`).
        cache: Embedding cache; default an `LRUEmbeddingCache` of 512 MiB.
        mask_threshold: Logit threshold for binary masks (0.0 as in SAM-2).
        max_image_pixels: Largest accepted image (H * W); larger images raise.
        click_terms_images: On CPU, keep the decoder's image-side terms of this many recently
            clicked images (`core_model.click_terms`) so that a click decodes only its own
            part; 0 decodes every click with the model's decoder.
    """

    def __init__(
        self,
        model: UnSAMv2Model,
        *,
        cache: EmbeddingCache | None = None,
        mask_threshold: float = 0.0,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        click_terms_images: int = CLICK_TERMS_IMAGES,
    ) -> None:
        self.model = model
        self.cache: EmbeddingCache = (
            cache if cache is not None else LRUEmbeddingCache(DEFAULT_CACHE_BYTES)
        )
        self.mask_threshold = float(mask_threshold)
        self.max_image_pixels = int(max_image_pixels)
        self._low_precision = LowPrecisionDecoders()
        self._click_terms = ClickTerms(click_terms_images) if click_terms_images > 0 else None
        self._traced = TracedPasses()

    @property
    def device(self) -> torch.device:
        """Device of the model."""
        device: torch.device = next(self.model.parameters()).device
        return device

    @property
    def model_version(self) -> str:
        """Version string of the model's weights."""
        return self.model.info.version

    @property
    def info(self) -> ModelInfo:
        """Where the model comes from (variant, weights version, granularity mode)."""
        return self.model.info

    @property
    def image_size(self) -> int:
        """Side S of the model's square input frame in pixels."""
        return int(self.model.image_size)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        # bf16 autocast on CUDA only (as the official notebooks); float32 on CPU
        device = self.device
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.no_grad(), autocast:
            yield

    def embed(self, image: npt.NDArray[np.uint8], *, key: str | None = None) -> ImageEmbedding:
        """Compute (or fetch from the cache) the features of an image.

        Args:
            image: (H, W, 3) uint8 RGB.
            key: Content identifier of the image (e.g. a file sha256) to skip hashing pixels;
                the caller guarantees equal keys mean equal pixels.

        Returns:
            The image embedding for this model.

        Raises:
            InvalidImageError: wrong type, dtype, shape, or too many pixels.
        """
        check_image(image, max_pixels=self.max_image_pixels)
        return self.embed_keyed(key if key is not None else image_digest(image), lambda: image)

    def embed_keyed(self, key: str, load: Callable[[], npt.NDArray[np.uint8]]) -> ImageEmbedding:
        """Return the embedding of the image identified by `key`, loading pixels only on a miss.

        Args:
            key: Content identifier (equal keys must mean equal pixels).
            load: Returns the (H, W, 3) uint8 RGB image; called at most once, on a cache miss.
        """
        cache_key = f"{key}|{self.model_version}|{PREPROCESS_VERSION}"

        def compute() -> ImageEmbedding:
            image = load()
            original_hw = check_image(image, max_pixels=self.max_image_pixels)
            return self._compute_embedding(image, original_hw, cache_key)

        return self.cache.get_or_compute(cache_key, compute)

    def _compute_embedding(
        self, image: npt.NDArray[np.uint8], original_hw: tuple[int, int], key: str
    ) -> ImageEmbedding:
        with self._inference():
            x = to_model_input(image, int(self.model.image_size), self.device)
            image_embed, high_res = self.model.encode_image(x)
        return ImageEmbedding(
            image_embed=image_embed,
            high_res_features=high_res,
            original_hw=original_hw,
            model_version=self.model_version,
            key=key,
        )

    def _check_embedding(self, embedding: ImageEmbedding) -> None:
        if not isinstance(embedding, ImageEmbedding):
            raise InvalidImageError(
                f"expected an ImageEmbedding from embed(), got {type(embedding).__name__}"
            )
        if embedding.model_version != self.model_version:
            raise InvalidImageError(
                f"embedding was computed by model {embedding.model_version}, this predictor "
                f"runs {self.model_version}; call embed() again"
            )

    def _prompt_tensors(
        self, prompts: Prompts, original_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (1, N, 2) model-frame coords and (1, N) labels: box corners first, then clicks."""
        coords, labels = prompts.coords_array(), prompts.labels_array()
        if prompts.box is not None:
            coords = np.concatenate([prompts.box.as_array().reshape(2, 2), coords])
            labels = np.concatenate([np.array([2, 3], dtype=np.int32), labels])
        size = int(self.model.image_size)
        frame = to_model_frame(coords, original_hw, size).to(self.device)
        return frame[None], torch.as_tensor(labels, device=self.device)[None]

    def _mask_input(self, mask_input: npt.ArrayLike | None, batch: int) -> torch.Tensor | None:
        if mask_input is None:
            return None
        side = self.model.low_res_size
        t = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=self.device)
        if t.shape[-2:] != (side, side) or t.numel() != side * side:
            raise InvalidPromptError(
                f"mask_input must be low-resolution logits of shape (1, {side}, {side}), "
                f"got {tuple(t.shape)}"
            )
        return t.reshape(1, 1, side, side).expand(batch, -1, -1, -1)

    def _click_terms_for(
        self, embedding: ImageEmbedding, mask_input: torch.Tensor | None, multimask: bool
    ) -> ClickTerms | None:
        """The image-terms cache when a few prompt sets may decode through it, else None.

        On CPU only (the decoder is the cost of a click there; a GPU decodes a click in a few
        ms), for a keyed one-image embedding without a mask input, as `decode_shared` needs.
        """
        usable = (
            self.device.type == "cpu"
            and bool(embedding.key)
            and embedding.image_embed.shape[0] == 1
            and mask_input is None
            and not multimask
            and foldable(self.model.sam_mask_decoder)
        )
        return self._click_terms if usable else None

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
        """Decode B prompt sets in one batched call (torch twin of `predict`, no checks).

        Args:
            embedding: From `embed`.
            point_coords: (B, N, 2) float32 (x, y) in the model's input frame.
            point_labels: (B, N) int32 labels (1, 0, and 2/3 for box corners).
            granularities: B validated granularity values.
            mask_input: (B, 1, S/4, S/4) logits or None.
            multimask_output: IoU path of the granularity decoder (see the model).
            precision: "bfloat16" runs the shared-image path (16+ one-image prompt sets
                without a mask input, on CPU) on a bfloat16 copy of the decoder
                (`core_model.low_precision`); anything else decodes in float32 as by default.

        Returns:
            Logits (B, 1, S/4, S/4) float32, unclamped, and IoU (B, 1) float32. Without trained
            granularity modules, the SAM-2 multimask output whose area rank matches the
            granularity (see `multimask_rank`).
        """
        args = (embedding.image_embed, embedding.high_res_features, point_coords, point_labels)
        with self._inference():
            if self.model.info.granularity_mode == "sam2-multimask":
                out = self.model.decode_sam2(*args, mask_input=mask_input)
                return _pick_by_area_rank(out, granularities)
            g = torch.tensor(granularities, dtype=torch.float32, device=self.device)[:, None]
            cache = self._click_terms_for(embedding, mask_input, multimask_output)
            shared = use_shared_decode(
                embedding.image_embed, point_coords, mask_input, multimask_output
            )
            if shared and foldable(self.model.sam_mask_decoder):
                low = precision == "bfloat16" and self.device.type == "cpu"
                decoder = self._low_precision.get(self.model.sam_mask_decoder) if low else None
                out = decode_shared(self.model, *args, g, decoder=decoder)  # image work shared
            elif cache is not None:  # a few clicks: the image's terms are reused
                key = (embedding.key, weights_state(self.model.sam_mask_decoder))
                part = self._traced.run if traced_here() else None  # see traced_decode
                out = decode_shared(
                    self.model, *args, g, terms=lambda b: cache.get(key, b), part=part
                )
            else:
                out = self.model.decode_granularity(
                    *args, g, mask_input=mask_input, multimask_output=multimask_output
                )
        return DecoderOutput(out.low_res_logits.float(), out.iou.float())

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
        """Predict one mask for one prompt set at one granularity.

        Args:
            embedding: From `embed`.
            prompts: Clicks (x, y pixels, labels 1/0) and/or a box, inside the image.
            granularity: In [0.1, 1.0]; 0.1 fine parts, 1.0 whole objects.
            multimask_output: Official IoU path switch (False: the trained token-0 IoU).
            mask_input: (1, S/4, S/4) low-resolution logits of a previous prediction, or None.
            refine: Run a second pass fed with the first pass's logits (SAM's mask-to-mask
                refinement).

        Returns:
            masks (1, H, W) bool, scores (1,), low_res_logits (1, S/4, S/4).

        Raises:
            GranularityError, InvalidPromptError, InvalidImageError: bad input.
        """
        g = validate_granularity(granularity)
        return self._predict(embedding, prompts, (g,), multimask_output, mask_input, refine)

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
        """Predict the same prompt set at several granularities in one batched decoder call.

        Returns masks (G, H, W), scores (G,), low_res_logits (G, S/4, S/4) in the order of
        `granularities`. Other arguments as in `predict`.
        """
        values = as_granularity_tuple(list(granularities))
        return self._predict(embedding, prompts, values, multimask_output, mask_input, refine)

    def predict_sam2(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        *,
        multimask_output: bool = True,
        mask_input: npt.ArrayLike | None = None,
    ) -> MaskPrediction:
        """Stock SAM-2 prediction, without any granularity token (the paper's baseline).

        With `multimask_output`, SAM-2's three masks: masks (3, H, W), scores (3,),
        low_res_logits (3, S/4, S/4); without, the single-mask output (token 0, or the most
        confident multimask output when token 0 is unstable, as SAM-2's predictor does):
        (1, H, W), (1,), (1, S/4, S/4). `granularities` is empty and `mode` is
        "sam2-multimask". Independent of the model's granularity modules.
        """
        self._check_embedding(embedding)
        height, width = embedding.original_hw
        prompts.check_inside(height, width)
        coords, labels = self._prompt_tensors(prompts, embedding.original_hw)
        with self._inference():
            out = self.model.decode_sam2(
                embedding.image_embed,
                embedding.high_res_features,
                coords,
                labels,
                mask_input=self._mask_input(mask_input, 1),
                multimask_output=multimask_output,
            )
        logits = out.low_res_logits[0].float()
        return MaskPrediction(
            masks=upsample_masks(logits, embedding.original_hw, threshold=self.mask_threshold),
            scores=out.iou[0].float().cpu().numpy().astype(np.float32),
            low_res_logits=logits.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP).cpu().numpy(),
            granularities=(),
            mode="sam2-multimask",
            model_version=self.model_version,
        )

    def _predict(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        granularities: tuple[float, ...],
        multimask_output: bool,
        mask_input: npt.ArrayLike | None,
        refine: bool,
    ) -> MaskPrediction:
        self._check_embedding(embedding)
        if not isinstance(prompts, Prompts):
            raise InvalidPromptError(
                f"prompts must be a Prompts object, got {type(prompts).__name__}"
            )
        height, width = embedding.original_hw
        prompts.check_inside(height, width)
        batch = len(granularities)
        coords, labels = self._prompt_tensors(prompts, embedding.original_hw)
        coords, labels = coords.expand(batch, -1, -1), labels.expand(batch, -1)
        out = self.decode(
            embedding,
            coords,
            labels,
            granularities,
            mask_input=self._mask_input(mask_input, batch),
            multimask_output=multimask_output,
        )
        if refine:
            out = self.decode(
                embedding,
                coords,
                labels,
                granularities,
                mask_input=out.low_res_logits.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP),
            )
        logits = out.low_res_logits[:, 0]
        return MaskPrediction(
            masks=upsample_masks(logits, embedding.original_hw, threshold=self.mask_threshold),
            scores=out.iou[:, 0].cpu().numpy().astype(np.float32),
            low_res_logits=logits.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP).cpu().numpy(),
            granularities=granularities,
            mode=self.model.info.granularity_mode,
            model_version=self.model_version,
        )


def _pick_by_area_rank(out: DecoderOutput, granularities: Sequence[float]) -> DecoderOutput:
    """Keep, per row of (B, 3) multimask outputs, the mask whose area rank fits the granularity."""
    logits, iou = out.low_res_logits.float(), out.iou.float()
    areas = (logits > 0).flatten(2).sum(-1)  # (B, 3)
    order = torch.argsort(areas, dim=1, stable=True)
    ranks = torch.tensor([multimask_rank(g) for g in granularities], device=logits.device)
    index = order.gather(1, ranks[:, None])  # (B, 1)
    rows = torch.arange(index.shape[0], device=logits.device)
    return DecoderOutput(logits[rows, index[:, 0]][:, None], iou[rows, index[:, 0]][:, None])

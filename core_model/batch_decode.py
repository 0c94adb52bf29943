"""Decode the clicks of several requests (other images, other prompts) in few decoder calls.

A serving process collects clicks that arrive close together and hands them here as
`ClickJob` values. Jobs are grouped by what the decoder cannot mix in one call: the number
of prompt tokens (clicks plus box corners; padding tokens would change the attention, so
sets are never padded) and the IoU path (`multimask_output`). Each group is decoded in
chunks of at most `max_batch` rows by `MaskPredictor.decode`: the chunk's image features are
stacked along the batch axis (a chunk on one image shares its features without a copy), and
row i is the prompt set of job i. The decoder treats rows independently, so a job's masks
equal those of `GranularityPredictor.predict` for that click alone (up to float rounding of
batched matrix products).

Whether a larger batch is faster depends on the device: on a GPU it is; on a CPU the
decoder's image-sized activations leave the caches and a batch costs more per row, so
serving processes pick a `max_batch` of 1 there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from core_model.errors import InvalidImageError, InvalidPromptError
from core_model.predictor import LOW_RES_CLAMP
from core_model.preprocess import to_model_frame, upsample_masks
from core_model.serving import MaskPredictor
from core_model.types import ImageEmbedding, MaskPrediction, Prompts, validate_granularity


@dataclass(frozen=True)
class ClickJob:
    """One interactive click: what `MaskPredictor.predict` takes, without `mask_input`/`refine`.

    Attributes:
        embedding: The image's embedding (from the predictor that decodes the job).
        prompts: Clicks (x, y pixels, labels 1/0) and/or a box, inside the image.
        granularity: In [0.1, 1.0].
        multimask_output: IoU path switch (see `GranularityPredictor.predict`).
    """

    embedding: ImageEmbedding
    prompts: Prompts
    granularity: float
    multimask_output: bool = False


def check_job(predictor: MaskPredictor, job: ClickJob) -> ClickJob:
    """Validate a job as `predict` would; return it with its granularity normalised.

    Raises:
        GranularityError, InvalidPromptError, InvalidImageError: bad input.
    """
    embedding = job.embedding
    if not isinstance(embedding, ImageEmbedding):
        raise InvalidImageError(
            f"expected an ImageEmbedding from embed(), got {type(embedding).__name__}"
        )
    if embedding.model_version != predictor.model_version:
        raise InvalidImageError(
            f"embedding was computed by model {embedding.model_version}, this predictor "
            f"runs {predictor.model_version}; call embed() again"
        )
    if not isinstance(job.prompts, Prompts):
        raise InvalidPromptError(
            f"prompts must be a Prompts object, got {type(job.prompts).__name__}"
        )
    job.prompts.check_inside(*embedding.original_hw)
    granularity = validate_granularity(job.granularity)
    return ClickJob(embedding, job.prompts, granularity, bool(job.multimask_output))


def _prompt_arrays(
    prompts: Prompts,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """(N, 2) float32 (x, y) original pixels and (N,) int32 labels: box corners first."""
    coords, labels = prompts.coords_array(), prompts.labels_array()
    if prompts.box is not None:
        coords = np.concatenate([prompts.box.as_array().reshape(2, 2), coords])
        labels = np.concatenate([np.array([2, 3], dtype=np.int32), labels])
    return coords.astype(np.float32), labels.astype(np.int32)


def _group_key(job: ClickJob) -> tuple[int, bool]:
    tokens = len(job.prompts.points) + (2 if job.prompts.box is not None else 0)
    return tokens, job.multimask_output


def _stacked(embeddings: Sequence[ImageEmbedding]) -> ImageEmbedding:
    """One embedding whose batch axis holds each row's features (shared when one image)."""
    first = embeddings[0]
    if all(e is first or e.key == first.key and e.key for e in embeddings):
        return first  # the decoder broadcasts a batch of 1 over every prompt row
    return ImageEmbedding(
        image_embed=torch.cat([e.image_embed for e in embeddings]),
        high_res_features=tuple(
            torch.cat([e.high_res_features[level] for e in embeddings])
            for level in range(len(first.high_res_features))
        ),
        original_hw=first.original_hw,
        model_version=first.model_version,
        key="",
    )


def _decode_chunk(predictor: MaskPredictor, jobs: Sequence[ClickJob]) -> list[MaskPrediction]:
    """Decode jobs of one group in one decoder call."""
    size, device = int(predictor.image_size), predictor.device
    frames, labels = [], []
    for job in jobs:
        coords, job_labels = _prompt_arrays(job.prompts)
        frames.append(to_model_frame(coords, job.embedding.original_hw, size))
        labels.append(torch.as_tensor(job_labels))
    out = predictor.decode(
        _stacked([job.embedding for job in jobs]),
        torch.stack(frames).to(device),
        torch.stack(labels).to(device),
        [job.granularity for job in jobs],
        multimask_output=jobs[0].multimask_output,
    )
    logits, scores = out.low_res_logits[:, 0].float(), out.iou[:, 0].float().cpu().numpy()
    mode = predictor.info.granularity_mode
    results = []
    for row, job in enumerate(jobs):
        row_logits = logits[row : row + 1]
        results.append(
            MaskPrediction(
                masks=upsample_masks(
                    row_logits, job.embedding.original_hw, threshold=predictor.mask_threshold
                ),
                scores=scores[row : row + 1].astype(np.float32),
                low_res_logits=row_logits.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP).cpu().numpy(),
                granularities=(job.granularity,),
                mode=mode,
                model_version=predictor.model_version,
            )
        )
    return results


def predict_clicks(
    predictor: MaskPredictor, jobs: Sequence[ClickJob], *, max_batch: int = 8
) -> list[MaskPrediction]:
    """Predict one mask per job, decoding compatible jobs together.

    Args:
        predictor: The predictor whose model computed every job's embedding.
        jobs: Checked jobs (see `check_job`).
        max_batch: Most rows of one decoder call (>= 1).

    Returns:
        One `MaskPrediction` per job, in order: masks (1, H, W) bool, scores (1,) float32,
        low_res_logits (1, S/4, S/4) float32, as `predict` returns for that job alone.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    groups: dict[tuple[int, bool], list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(_group_key(job), []).append(index)
    results: list[MaskPrediction | None] = [None] * len(jobs)
    for indices in groups.values():
        for start in range(0, len(indices), max_batch):
            chunk = indices[start : start + max_batch]
            for index, result in zip(
                chunk, _decode_chunk(predictor, [jobs[i] for i in chunk]), strict=True
            ):
                results[index] = result
    return [result for result in results if result is not None]

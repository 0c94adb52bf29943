"""The whole-image segmenter's first algorithm, kept as the reference of the current one.

`reference_run` decodes every grid point at every granularity in row-major order with
`UnSAMv2Model.decode_granularity` on whole batches (the decoder path before
`core_model.grid_decode`), filters by predicted IoU and stability, runs box NMS on all
candidates, ranks them and upsamples the survivors in batches. `WholeImageSegmenter` must give
the same masks within the tolerance of `compare_masks` (see the README); the tests and
`unsamv2 bench whole-image` compare both in one run. Nothing in the serving path calls this
module.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from core_model.masks.geometry import masks_to_boxes_xyxy, nms_xyxy
from core_model.modeling.unsamv2 import DecoderOutput
from core_model.predictor import GranularityPredictor
from core_model.preprocess import to_model_frame, upsample_masks
from core_model.serving import MaskPredictor
from core_model.types import ImageEmbedding, as_granularity_tuple
from core_model.whole_image import (
    GeneratedMask,
    WholeImageConfig,
    WholeImageRun,
    grid_points,
    stability_scores,
)

MATCH_IOU = 0.9  # a mask "has a match" when a mask of the other run overlaps it this much


@dataclass(frozen=True)
class MaskAgreement:
    """How well two sets of masks agree (see `compare_masks`).

    Attributes:
        reference_matched: Fraction of reference masks with a candidate mask of the same
            granularity at mask IoU >= `iou` (1.0 when the reference is empty).
        candidate_matched: Fraction of candidate masks with such a reference mask.
        reference_count: Masks in the reference.
        candidate_count: Masks in the candidate.
        iou: The mask IoU a match needs.
    """

    reference_matched: float
    candidate_matched: float
    reference_count: int
    candidate_count: int
    iou: float

    @property
    def worst(self) -> float:
        """The smaller of the two matched fractions."""
        return min(self.reference_matched, self.candidate_matched)


@dataclass
class _Found:
    logits: list[torch.Tensor]
    scores: list[npt.NDArray[np.float32]]
    stability: list[npt.NDArray[np.float32]]
    points: list[npt.NDArray[np.float32]]
    granularity: list[npt.NDArray[np.float64]]


def compare_masks(
    reference: Sequence[GeneratedMask],
    candidate: Sequence[GeneratedMask],
    *,
    iou: float = MATCH_IOU,
) -> MaskAgreement:
    """Match two mask sets both ways by mask IoU, granularity by granularity.

    Args:
        reference: Masks of the reference run, (H, W) bool each.
        candidate: Masks of the run under test, same image.
        iou: Mask IoU that counts as a match.
    """
    best_ref = np.zeros(len(reference))
    best_cand = np.zeros(len(candidate))
    for g in {m.granularity for m in reference} | {m.granularity for m in candidate}:
        ri = [i for i, m in enumerate(reference) if m.granularity == g]
        ci = [i for i, m in enumerate(candidate) if m.granularity == g]
        if not ri or not ci:
            continue
        a = torch.from_numpy(np.stack([reference[i].mask.ravel() for i in ri])).float()
        b = torch.from_numpy(np.stack([candidate[i].mask.ravel() for i in ci])).float()
        inter = a @ b.T
        union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
        ious = (inter / union.clamp(min=1)).numpy()
        best_ref[ri] = ious.max(axis=1)
        best_cand[ci] = ious.max(axis=0)

    def fraction(best: npt.NDArray[np.float64]) -> float:
        return float((best >= iou).mean()) if best.size else 1.0

    return MaskAgreement(
        fraction(best_ref), fraction(best_cand), len(reference), len(candidate), iou
    )


def reference_run(
    predictor: MaskPredictor,
    config: WholeImageConfig,
    image: npt.NDArray[np.uint8] | ImageEmbedding,
    *,
    granularities: Sequence[float] = (1.0,),
    should_stop: Callable[[], bool] | None = None,
) -> WholeImageRun:
    """Segment with the first algorithm (arguments as `WholeImageSegmenter.run`)."""
    started = time.monotonic()
    values = as_granularity_tuple(list(granularities))
    embedding = image if isinstance(image, ImageEmbedding) else predictor.embed(image)
    cfg = config
    height, width = embedding.original_hw
    points = grid_points(height, width, cfg.points_per_side)
    found = _Found([], [], [], [], [])
    decoded = 0

    def stop() -> bool:
        late = cfg.deadline_s is not None and time.monotonic() - started > cfg.deadline_s
        return late or (should_stop is not None and should_stop())

    for granularity in values:
        for start in range(0, len(points), cfg.points_per_batch):
            if stop():
                break
            batch = points[start : start + cfg.points_per_batch]
            _decode_batch(predictor, cfg, embedding, batch, granularity, found)
            decoded += len(batch)
    masks = _select(predictor, cfg, found, embedding.original_hw) if found.logits else []
    return WholeImageRun(masks, decoded, len(points) * len(values))


def _decode_batch(
    predictor: MaskPredictor,
    cfg: WholeImageConfig,
    embedding: ImageEmbedding,
    points: npt.NDArray[np.float32],
    granularity: float,
    found: _Found,
) -> None:
    size = predictor.image_size
    coords = to_model_frame(points, embedding.original_hw, size)[:, None, :]
    labels = torch.ones(len(points), 1, dtype=torch.int32)
    out = _first_decode(
        predictor,
        embedding,
        coords.to(predictor.device),
        labels.to(predictor.device),
        [granularity] * len(points),
    )
    logits, iou = out.low_res_logits[:, 0], out.iou[:, 0]
    stability = stability_scores(logits, predictor.mask_threshold, cfg.stability_score_offset)
    keep = (iou >= cfg.pred_iou_thresh) & (stability >= cfg.stability_score_thresh)
    keep &= (logits > predictor.mask_threshold).flatten(1).any(1)
    if not bool(keep.any()):
        return
    found.logits.append(logits[keep].to(torch.float16).cpu())
    found.scores.append(iou[keep].cpu().numpy())
    found.stability.append(stability[keep].cpu().numpy())
    found.points.append(points[keep.cpu().numpy()])
    found.granularity.append(np.full(int(keep.sum()), granularity, dtype=np.float64))


def _first_decode(
    predictor: MaskPredictor,
    embedding: ImageEmbedding,
    coords: torch.Tensor,
    labels: torch.Tensor,
    granularities: list[float],
) -> DecoderOutput:
    """Decode as `GranularityPredictor.decode` did before `core_model.grid_decode` existed."""
    if not isinstance(predictor, GranularityPredictor) or (
        predictor.info.granularity_mode == "sam2-multimask"
    ):
        return predictor.decode(embedding, coords, labels, granularities)
    g = torch.tensor(granularities, dtype=torch.float32, device=predictor.device)[:, None]
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if predictor.device.type == "cuda"
        else contextlib.nullcontext()
    )
    with torch.no_grad(), autocast:
        out = predictor.model.decode_granularity(
            embedding.image_embed, embedding.high_res_features, coords, labels, g
        )
    return DecoderOutput(out.low_res_logits.float(), out.iou.float())


def _select(
    predictor: MaskPredictor, cfg: WholeImageConfig, found: _Found, original_hw: tuple[int, int]
) -> list[GeneratedMask]:
    logits = torch.cat(found.logits)
    scores, stability = np.concatenate(found.scores), np.concatenate(found.stability)
    points, granularity = np.concatenate(found.points), np.concatenate(found.granularity)
    height, width = original_hw
    side = logits.shape[-1]
    boxes = masks_to_boxes_xyxy((logits > predictor.mask_threshold).numpy())
    boxes *= np.array([width, height, width, height], dtype=np.float32) / side
    groups = (
        [np.arange(len(scores))]
        if cfg.nms_across_granularities
        else [np.flatnonzero(granularity == g) for g in np.unique(granularity)]
    )
    kept = np.concatenate(
        [idx[nms_xyxy(boxes[idx], scores[idx], cfg.box_nms_thresh)] for idx in groups]
    )
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    results: list[GeneratedMask] = []
    for start in range(0, len(kept), cfg.points_per_batch):
        if len(results) >= cfg.max_masks:
            break
        chunk = kept[start : start + cfg.points_per_batch]
        masks = upsample_masks(
            logits[chunk].float(), original_hw, threshold=predictor.mask_threshold
        )
        full_boxes = masks_to_boxes_xyxy(masks)
        for i, mask, box in zip(chunk, masks, full_boxes, strict=True):
            area = int(mask.sum())
            if area == 0 or area < cfg.min_mask_area_px or len(results) >= cfg.max_masks:
                continue
            results.append(
                GeneratedMask(
                    mask=mask,
                    score=float(scores[i]),
                    stability_score=float(stability[i]),
                    granularity=float(granularity[i]),
                    point_xy=(float(points[i, 0]), float(points[i, 1])),
                    box_xyxy=box,
                    area_px=area,
                )
            )
    return results

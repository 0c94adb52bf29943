"""`WholeImageSegmenter`: automatic masks from a grid of single-click prompts.

For each granularity, every grid point is decoded as a one-click prompt (batched), candidates
are filtered by predicted IoU and by stability (IoU of the mask thresholded at +-offset around
the mask threshold), suppressed by box NMS and ranked by predicted IoU. Filtering, boxes and NMS
work on the low-resolution logits (boxes scaled to the image) so only the kept masks are
upsampled to full resolution: on CPU this is what keeps a 32x32 grid practical.

A run can be bounded: `WholeImageConfig.deadline_s` and a caller's ``should_stop`` hook are
checked before every decoder batch; when either says stop, the masks found so far are ranked and
returned, and `WholeImageRun` reports how much of the grid was decoded.

Defaults follow SAM-2's automatic mask generator (points_per_side 32, points_per_batch 64,
pred_iou_thresh 0.8, stability 0.95 with offset 1.0, box NMS 0.7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from core_model.masks.geometry import masks_to_boxes_xyxy, nms_xyxy
from core_model.preprocess import to_model_frame, upsample_masks
from core_model.serving import MaskPredictor
from core_model.types import ImageEmbedding, as_granularity_tuple


@dataclass(frozen=True)
class WholeImageConfig:
    """Settings of `WholeImageSegmenter`.

    Attributes:
        points_per_side: Grid of points_per_side^2 clicks at cell centres.
        points_per_batch: Clicks decoded per decoder call.
        pred_iou_thresh: Minimum predicted IoU.
        stability_score_thresh: Minimum stability score.
        stability_score_offset: Logit offset of the stability score.
        box_nms_thresh: Box IoU above which the lower-scored mask is dropped.
        nms_across_granularities: Run NMS over all granularities together (True) or per
            granularity (False, default: a part and its whole are both kept).
        min_mask_area_px: Drop masks smaller than this (original-image pixels).
        max_masks: Keep at most this many masks (highest score first).
        deadline_s: Stop decoding grid batches once this many seconds have passed since the
            run started (None: no limit); the masks found so far are returned.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    nms_across_granularities: bool = False
    min_mask_area_px: int = 0
    max_masks: int = 100
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1 or self.max_masks < 1:
            raise ValueError("points_per_side, points_per_batch and max_masks must be >= 1")
        if self.deadline_s is not None and not self.deadline_s >= 0:
            raise ValueError(f"deadline_s must be >= 0 or None, got {self.deadline_s}")


@dataclass(frozen=True, eq=False)
class GeneratedMask:
    """One automatic mask.

    Attributes:
        mask: (H, W) bool, original image size.
        score: Ranking score (the predicted IoU).
        stability_score: Stability of the mask under +-offset logit thresholds.
        granularity: Granularity it was decoded at.
        point_xy: (x, y) pixel of the grid click that produced it.
        box_xyxy: (4,) float32 tight box in pixels.
        area_px: Foreground pixel count.
    """

    mask: npt.NDArray[np.bool_]
    score: float
    stability_score: float
    granularity: float
    point_xy: tuple[float, float]
    box_xyxy: npt.NDArray[np.float32]
    area_px: int


@dataclass(frozen=True, eq=False)
class WholeImageRun:
    """The outcome of one `WholeImageSegmenter.run`.

    Attributes:
        masks: Masks ranked by score (highest first).
        points_decoded: Grid clicks decoded, over all granularities.
        points_total: Grid clicks of a complete run (points_per_side^2 per granularity).
    """

    masks: list[GeneratedMask]
    points_decoded: int
    points_total: int

    @property
    def complete(self) -> bool:
        """Whether the whole grid was decoded (False: stopped by the deadline or the hook)."""
        return self.points_decoded >= self.points_total


@dataclass
class _Candidates:
    logits: list[torch.Tensor]
    scores: list[npt.NDArray[np.float32]]
    stability: list[npt.NDArray[np.float32]]
    points: list[npt.NDArray[np.float32]]
    granularity: list[npt.NDArray[np.float64]]


def grid_points(height: int, width: int, points_per_side: int) -> npt.NDArray[np.float32]:
    """Return (n*n, 2) float32 (x, y) pixel centres of an n x n grid over the image."""
    offsets = (np.arange(points_per_side, dtype=np.float32) + 0.5) / points_per_side
    xs, ys = np.meshgrid(offsets * width, offsets * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """Return (B,) IoU between masks at threshold+offset and threshold-offset of (B, h, w)."""
    flat = logits.flatten(1)
    inner = (flat > threshold + offset).sum(1).float()
    outer = (flat > threshold - offset).sum(1).float()
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer))


class WholeImageSegmenter:
    """Segment everything in an image at one or several granularities.

    Args:
        predictor: The predictor (its model and embedding cache are shared).
        config: Grid, thresholds and limits.
    """

    def __init__(self, predictor: MaskPredictor, config: WholeImageConfig | None = None):
        self.predictor = predictor
        self.config = config or WholeImageConfig()

    def segment(
        self,
        image: npt.NDArray[np.uint8] | ImageEmbedding,
        *,
        granularities: Sequence[float] = (1.0,),
    ) -> list[GeneratedMask]:
        """Return masks ranked by score (highest first), at most `config.max_masks`.

        Args:
            image: (H, W, 3) uint8 RGB image, or its embedding from the predictor.
            granularities: One or more values in [0.1, 1.0].
        """
        return self.run(image, granularities=granularities).masks

    def run(
        self,
        image: npt.NDArray[np.uint8] | ImageEmbedding,
        *,
        granularities: Sequence[float] = (1.0,),
        should_stop: Callable[[], bool] | None = None,
    ) -> WholeImageRun:
        """Segment like `segment`, stopping early at the deadline or when `should_stop` says so.

        Args:
            image: (H, W, 3) uint8 RGB image, or its embedding from the predictor.
            granularities: One or more values in [0.1, 1.0].
            should_stop: Called before every decoder batch; True stops decoding (e.g. the
                caller's request deadline has passed).

        Returns:
            The masks found in the decoded part of the grid and how much of it was decoded.
        """
        started = time.monotonic()
        values = as_granularity_tuple(list(granularities))
        embedding = image if isinstance(image, ImageEmbedding) else self.predictor.embed(image)
        cfg = self.config
        height, width = embedding.original_hw
        points = grid_points(height, width, cfg.points_per_side)
        found = _Candidates([], [], [], [], [])
        decoded = 0

        def stop() -> bool:
            late = cfg.deadline_s is not None and time.monotonic() - started > cfg.deadline_s
            return late or (should_stop is not None and should_stop())

        for granularity in values:
            for start in range(0, len(points), cfg.points_per_batch):
                if stop():
                    break
                batch = points[start : start + cfg.points_per_batch]
                self._decode_batch(embedding, batch, granularity, found)
                decoded += len(batch)
        masks = self._select(found, embedding.original_hw) if found.logits else []
        return WholeImageRun(masks, decoded, len(points) * len(values))

    def _decode_batch(
        self,
        embedding: ImageEmbedding,
        points: npt.NDArray[np.float32],
        granularity: float,
        found: _Candidates,
    ) -> None:
        cfg, predictor = self.config, self.predictor
        size = predictor.image_size
        coords = to_model_frame(points, embedding.original_hw, size)[:, None, :]
        labels = torch.ones(len(points), 1, dtype=torch.int32)
        out = predictor.decode(
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

    def _select(self, found: _Candidates, original_hw: tuple[int, int]) -> list[GeneratedMask]:
        cfg = self.config
        logits = torch.cat(found.logits)
        scores, stability = np.concatenate(found.scores), np.concatenate(found.stability)
        points, granularity = np.concatenate(found.points), np.concatenate(found.granularity)
        height, width = original_hw
        side = logits.shape[-1]
        boxes = masks_to_boxes_xyxy((logits > self.predictor.mask_threshold).numpy())
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
                logits[chunk].float(), original_hw, threshold=self.predictor.mask_threshold
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

"""`WholeImageSegmenter`: automatic masks from a grid of single-click prompts.

For each granularity, grid points are decoded as one-click prompts in chunks of
`WholeImageConfig.points_per_batch` (one decoder call per chunk, all sharing the image's cached
embedding). Candidates are filtered by predicted IoU and by stability (IoU of the mask
thresholded at +-offset around the mask threshold) on the low-resolution logits, suppressed by
box NMS (boxes from the low-resolution masks, scaled to the image) and ranked by predicted IoU;
only the kept masks are upsampled to the image size.

The grid is visited coarse to fine (a sparse sub-grid first, then the points between), and after
every chunk the points inside a mask already accepted at that granularity (a box-NMS survivor so
far; inside: the point's low-resolution cell and its 8 neighbours) are dropped, as a mask decoded
from them would mostly be suppressed by that one (`WholeImageConfig.skip_covered_points`; off
when NMS is off). This changes the result within the tolerance that
`core_model.whole_image_reference.compare_masks` measures against the first algorithm (kept as
`reference_run`); without skipping the masks are the same.

`WholeImageConfig.decode_precision` picks the decoder's arithmetic: "auto" is bfloat16 on a
CPU with native bfloat16 matmuls (`core_model.low_precision`), float32 elsewhere. In bfloat16
the same clicks give masks that agree click by click with the float32 ones (tested: predicted
IoU within 0.01, under 2 % of a mask's pixels, every mask matched at IoU >= 0.9 both ways);
which of two candidates whose scores differ by less than that rounding survives NMS can change.

A run can be bounded: `WholeImageConfig.deadline_s` and a caller's ``should_stop`` hook are
checked before every decoder chunk; when either says stop, the masks found so far are ranked and
returned, and `WholeImageRun` reports how much of the grid was decoded.

Defaults follow SAM-2's automatic mask generator (points_per_side 32, points_per_batch 64,
pred_iou_thresh 0.8, stability 0.95 with offset 1.0, box NMS 0.7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from core_model.low_precision import PRECISION_SETTINGS, resolve_precision
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
        skip_covered_points: Do not decode grid points inside a mask already accepted at the
            same granularity (ignored when box_nms_thresh >= 1: nothing is suppressed then).
        decode_precision: "auto" (bfloat16 on CPUs with native bfloat16 matmuls, else
            float32), "float32" or "bfloat16"; see `core_model.low_precision` and the module
            docstring for the tolerance.
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
    skip_covered_points: bool = True
    decode_precision: str = "auto"

    def __post_init__(self) -> None:
        if self.decode_precision not in PRECISION_SETTINGS:
            raise ValueError(f"decode_precision must be one of {PRECISION_SETTINGS}")
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
        points_skipped: Grid clicks not decoded because an accepted mask covered them.
    """

    masks: list[GeneratedMask]
    points_decoded: int
    points_total: int
    points_skipped: int = 0

    @property
    def complete(self) -> bool:
        """Whether the whole grid was handled (False: stopped by the deadline or the hook)."""
        return self.points_decoded + self.points_skipped >= self.points_total


def grid_points(height: int, width: int, points_per_side: int) -> npt.NDArray[np.float32]:
    """Return (n*n, 2) float32 (x, y) pixel centres of an n x n grid over the image."""
    offsets = (np.arange(points_per_side, dtype=np.float32) + 0.5) / points_per_side
    xs, ys = np.meshgrid(offsets * width, offsets * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def coarse_to_fine_order(points_per_side: int) -> npt.NDArray[np.int64]:
    """Return a permutation of the row-major grid indices, sparse sub-grids first.

    Index i of a side has level = its number of trailing zero bits (0 counts as the highest); a
    point's level is the lower of its column's and row's, and higher levels come first (ties in
    row-major order). For a 32 x 32 grid the first 64 points are the 8 x 8 sub-grid of stride 4.
    """
    n = points_per_side
    index = np.arange(n)
    level = np.zeros(n, dtype=np.int64)
    for bit in range(1, max(1, n).bit_length() + 1):
        level[index % (1 << bit) == 0] = bit
    point_level = np.minimum.outer(level, level).ravel()  # row (y) major, as grid_points
    return np.argsort(-point_level, kind="stable").astype(np.int64)


def interior_at(
    masks: npt.NDArray[np.bool_], points: npt.NDArray[np.float32], original_hw: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """Return (K, P) bool: point p lies in the interior of low-resolution mask k.

    Args:
        masks: (K, h, w) bool low-resolution masks (the image stretched to h x w).
        points: (P, 2) float32 (x, y) pixels of the original image.
        original_hw: (H, W) of the original image.

    A point is inside when its low-resolution cell and the 8 cells around it (clipped at the
    border) are all in the mask: a click on a mask's edge, or in a mask with holes, may belong
    to something else and is still decoded.
    """
    height, width = original_hw
    side_h, side_w = masks.shape[1:]
    cols = np.minimum((points[:, 0] / width * side_w).astype(np.int64), side_w - 1)
    rows = np.minimum((points[:, 1] / height * side_h).astype(np.int64), side_h - 1)
    inside = np.ones((masks.shape[0], len(points)), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            r = np.clip(rows + dy, 0, side_h - 1)
            c = np.clip(cols + dx, 0, side_w - 1)
            inside &= masks[:, r, c]
    return inside


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """Return (B,) IoU between masks at threshold+offset and threshold-offset of (B, h, w)."""
    flat = logits.flatten(1)
    inner = (flat > threshold + offset).sum(1).float()
    outer = (flat > threshold - offset).sum(1).float()
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer))


@dataclass
class _Pool:
    """Candidates of one granularity, in decoding order."""

    logits: list[torch.Tensor] = field(default_factory=list)  # (k, h, w) float16 each
    boxes: list[npt.NDArray[np.float32]] = field(default_factory=list)  # (k, 4) image pixels
    scores: list[npt.NDArray[np.float32]] = field(default_factory=list)
    stability: list[npt.NDArray[np.float32]] = field(default_factory=list)
    grid_index: list[npt.NDArray[np.int64]] = field(default_factory=list)
    covers: list[npt.NDArray[np.bool_]] = field(default_factory=list)  # (k, n_grid) inside mask

    def covered(self, nms_thresh: float) -> npt.NDArray[np.bool_]:
        """Return (n_grid,) bool: grid points inside a box-NMS survivor of this pool."""
        survivors = nms_xyxy(np.concatenate(self.boxes), np.concatenate(self.scores), nms_thresh)
        inside = np.concatenate(self.covers)[survivors].any(axis=0)
        return np.asarray(inside, dtype=bool)


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

        def stop() -> bool:
            late = cfg.deadline_s is not None and time.monotonic() - started > cfg.deadline_s
            return late or (should_stop is not None and should_stop())

        pools: list[tuple[float, _Pool]] = []
        decoded = skipped = 0
        for granularity in values:
            pool = _Pool()
            pools.append((granularity, pool))
            done, dropped, stopped = self._decode_grid(embedding, points, granularity, pool, stop)
            decoded, skipped = decoded + done, skipped + dropped
            if stopped:
                break
        masks = self._select(pools, points, embedding.original_hw)
        return WholeImageRun(masks, decoded, len(points) * len(values), skipped)

    def _decode_grid(
        self,
        embedding: ImageEmbedding,
        points: npt.NDArray[np.float32],
        granularity: float,
        pool: _Pool,
        stop: Callable[[], bool],
    ) -> tuple[int, int, bool]:
        """Decode the grid at one granularity; return (decoded, skipped, stopped early)."""
        cfg = self.config
        skip = cfg.skip_covered_points and cfg.box_nms_thresh < 1.0
        pending = coarse_to_fine_order(cfg.points_per_side)
        position = decoded = skipped = 0
        while position < len(pending):
            if stop():
                return decoded, skipped, True
            chunk = pending[position : position + cfg.points_per_batch]
            position += len(chunk)
            decoded += len(chunk)
            added = self._decode_batch(embedding, points, chunk, granularity, pool)
            if skip and added and position < len(pending):
                rest = pending[position:]
                inside = pool.covered(cfg.box_nms_thresh)[rest]
                skipped += np.count_nonzero(inside)
                pending = np.concatenate([pending[:position], rest[~inside]])
        return decoded, skipped, False

    def _decode_batch(
        self,
        embedding: ImageEmbedding,
        points: npt.NDArray[np.float32],
        chunk: npt.NDArray[np.int64],
        granularity: float,
        pool: _Pool,
    ) -> int:
        """Decode the grid points `chunk` in one call; add the candidates that pass the filters."""
        cfg, predictor = self.config, self.predictor
        size = predictor.image_size
        coords = to_model_frame(points[chunk], embedding.original_hw, size)[:, None, :]
        labels = torch.ones(len(chunk), 1, dtype=torch.int32)
        out = predictor.decode(
            embedding,
            coords.to(predictor.device),
            labels.to(predictor.device),
            [granularity] * len(chunk),
            precision=resolve_precision(cfg.decode_precision, predictor.device),
        )
        logits, iou = out.low_res_logits[:, 0], out.iou[:, 0]
        threshold = predictor.mask_threshold
        stability = stability_scores(logits, threshold, cfg.stability_score_offset)
        keep = (iou >= cfg.pred_iou_thresh) & (stability >= cfg.stability_score_thresh)
        keep &= (logits > threshold).flatten(1).any(1)
        if not bool(keep.any()):
            return 0
        kept = logits[keep].to(torch.float16).cpu()
        binary = (kept > threshold).numpy()
        height, width = embedding.original_hw
        side = kept.shape[-1]
        boxes = masks_to_boxes_xyxy(binary)
        boxes *= np.array([width, height, width, height], dtype=np.float32) / side
        pool.logits.append(kept)
        pool.boxes.append(boxes)
        pool.scores.append(iou[keep].cpu().numpy())
        pool.stability.append(stability[keep].cpu().numpy())
        pool.grid_index.append(chunk[keep.cpu().numpy()])
        pool.covers.append(interior_at(binary, points, (height, width)))
        return len(kept)

    def _select(
        self,
        pools: list[tuple[float, _Pool]],
        points: npt.NDArray[np.float32],
        original_hw: tuple[int, int],
    ) -> list[GeneratedMask]:
        """Box NMS, rank by score, upsample the kept masks one at a time up to max_masks."""
        cfg = self.config
        filled = [(g, p) for g, p in pools if p.logits]
        if not filled:
            return []
        # candidates in (granularity, row-major grid) order, as the reference decodes them
        orders = [np.argsort(np.concatenate(p.grid_index), kind="stable") for _, p in filled]
        logits = torch.cat(
            [torch.cat(p.logits)[o] for (_, p), o in zip(filled, orders, strict=True)]
        )

        def gather(name: str) -> npt.NDArray[np.generic]:
            parts = [np.concatenate(getattr(p, name)) for _, p in filled]
            return np.concatenate([part[o] for part, o in zip(parts, orders, strict=True)])

        boxes, scores, stability = gather("boxes"), gather("scores"), gather("stability")
        grid_index = gather("grid_index")
        granularity = np.concatenate(
            [np.full(len(o), g, dtype=np.float64) for (g, _), o in zip(filled, orders, strict=True)]
        )
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
        for i in kept:
            if len(results) >= cfg.max_masks:
                break
            mask = upsample_masks(
                logits[i : i + 1].float(), original_hw, threshold=self.predictor.mask_threshold
            )
            area = np.count_nonzero(mask)
            if area == 0 or area < cfg.min_mask_area_px:
                continue
            x, y = points[grid_index[i]]
            results.append(
                GeneratedMask(
                    mask=mask[0],
                    score=float(scores[i]),
                    stability_score=float(stability[i]),
                    granularity=float(granularity[i]),
                    point_xy=(float(x), float(y)),
                    box_xyxy=masks_to_boxes_xyxy(mask)[0],
                    area_px=area,
                )
            )
        return results

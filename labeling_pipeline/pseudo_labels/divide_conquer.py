"""Granularity-aware divide-and-conquer on one image, in memory (UnSAMv2's data engine).

Stages (shared/reference/unsamv2_model.md, section 8):

1. **Divide**: N-cut proposals on the image's patch features (`ncut`), plus optional external
   proposals (detector masks, or human masks for UnSAMv2+) with a score; proposals scoring at
   most `proposal_min_score` are dropped.
2. **Relations** (`relations`): instances and their contained parts.
3. Per instance: **refine** the instance (GrabCut, `refine`; human masks are kept as they are),
   **conquer** its tight crop (`conquer.merge_patches` on the crop's features; regions more
   than `keep_inside_fraction` inside the instance are kept, clipped to it), **NMS**
   (`mask_ops.protected_nms`: the instance always survives), **refine** every part, NMS again
   on the refined masks, and **granularity** (`granularity`) over the instance and its parts.

Everything for one instance happens in a frame around its box, so memory stays proportional to
the objects, not to image size x number of masks. Masks come out as COCO RLE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.masks import decode_coco_rle, encode_coco_rle
from core_model.types import BoolMask
from labeling_pipeline.pseudo_labels.candidates import Candidate, box_of, grid_to_image
from labeling_pipeline.pseudo_labels.config import PseudoLabelConfig
from labeling_pipeline.pseudo_labels.conquer import merge_patches
from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
from labeling_pipeline.pseudo_labels.errors import ProposalError
from labeling_pipeline.pseudo_labels.fallback import fallback_instance
from labeling_pipeline.pseudo_labels.features import FeatureExtractor, check_image
from labeling_pipeline.pseudo_labels.granularity import granularity_from_areas
from labeling_pipeline.pseudo_labels.mask_ops import protected_nms
from labeling_pipeline.pseudo_labels.ncut import discover_instances
from labeling_pipeline.pseudo_labels.refine import (
    RefineConfig,
    accept_refined,
    grabcut_refine,
    snap_to_parts,
)
from labeling_pipeline.pseudo_labels.relations import InstanceHierarchy, find_hierarchies
from labeling_pipeline.pseudo_labels.scaling import (
    resize_image,
    resize_mask,
    upscale_rle,
    working_size,
)
from labeling_pipeline.pseudo_labels.split import join_adjacent_pieces, split_proposal

logger = logging.getLogger(__name__)

UNREFINED_SOURCES = ("human",)
# coarse patch-grid pieces of a crowded proposal: snapped to their parts, not GrabCut-refined
SPLIT_SOURCES = ("split", "joined")
SOURCE_PRIORITY = {
    "split": 0,
    "joined": 0,
    "ncut": 0,
    "external": 1,
    "human": 2,
}  # between near-duplicate instances


@dataclass(frozen=True)
class Proposal:
    """An external proposal: `mask` (H, W) bool in the image frame.

    `source` is "external" (detector output, refined like N-cut masks) or "human" (an accepted
    annotation for UnSAMv2+, never refined); `score` is the detector confidence (1.0 for human).
    """

    mask: BoolMask
    score: float = 1.0
    source: str = "external"


@dataclass(frozen=True)
class PseudoMask:
    """One output mask.

    Attributes:
        segmentation: COCO RLE (ASCII counts) in the frame of the processed image.
        area: Foreground pixels.
        bbox_xywh: Tight box (x, y, width, height) in pixels.
        granularity: In [0.1, 1.0], relative to its instance.
        instance_id: 1-based id of the instance hierarchy.
        is_part: False for the instance itself.
        score: Proposal score (instances and external parts) or conquer level (conquer parts).
        source: "ncut", "split" (a piece of an N-cut proposal), "joined" (two touching
            pieces, `split.join_adjacent_pieces`), "external", "human",
            "conquer" or "fallback" (see `fallback`).
    """

    segmentation: dict[str, Any]
    area: int
    bbox_xywh: tuple[float, float, float, float]
    granularity: float
    instance_id: int
    is_part: bool
    score: float
    source: str

    def decode(self) -> BoolMask:
        """Return the (H, W) bool mask."""
        return decode_coco_rle(self.segmentation)


def _divide(
    image: npt.NDArray[np.uint8],
    extractor: FeatureExtractor,
    config: PseudoLabelConfig,
    proposals: Sequence[Proposal],
) -> list[Candidate]:
    """Return N-cut and external proposals (image frame) with their refinement band widths."""
    height, width = image.shape[:2]
    found: list[Candidate] = []
    band = config.refine.min_band_px
    if config.use_ncut:
        features = extractor.extract(image)
        patch_px = features.patch_size * height / features.resized_hw[0]
        band = max(band, round(config.refine.band_patches * patch_px))
        units = features.normalised().reshape(*features.grid_hw, -1)
        min_piece = max(
            config.ncut.min_patches,
            round(config.split_min_area_fraction * units.shape[0] * units.shape[1]),
        )
        for cut in discover_instances(features, config.ncut):
            mask = grid_to_image(cut.mask, height, width)
            pieces = split_proposal(
                units,
                cut.mask,
                sigma=config.split_sigma,
                max_ncut=config.split_max_ncut,
                max_cut_weight=config.split_max_cut_weight,
                min_patches=min_piece,
                max_depth=config.split_max_depth,
            )
            found.append(Candidate(mask, cut.score, "ncut", band))
            for piece in pieces:
                found.append(
                    Candidate(grid_to_image(piece, height, width), cut.score, "split", band)
                )
            if config.join_split_leaves:
                for joined in join_adjacent_pieces(
                    pieces, cut.mask, max_overlap=config.join_max_overlap
                ):
                    found.append(
                        Candidate(grid_to_image(joined, height, width), cut.score, "joined", band)
                    )
    for index, p in enumerate(proposals):
        mask = np.asarray(p.mask)
        if mask.shape != (height, width):
            raise ProposalError(
                f"proposal {index} has shape {mask.shape}, image is {(height, width)}"
            )
        if p.source not in ("external", "human"):
            raise ProposalError(f"proposal {index}: source must be external or human")
        if p.score > config.proposal_min_score and mask.any():
            found.append(Candidate(mask.astype(bool), float(p.score), p.source, band))
    return found


def _refined(
    image: npt.NDArray[np.uint8], candidate: Candidate, config: RefineConfig
) -> BoolMask | None:
    """Return the refined mask, the mask itself when not refined, or None when discarded."""
    if not config.enabled or candidate.source in UNREFINED_SOURCES:
        return candidate.mask
    refined = grabcut_refine(
        image,
        candidate.mask,
        band_px=candidate.band_px,
        iterations=config.iterations,
        max_side=config.max_side,
    )
    return refined if accept_refined(candidate.mask, refined, config) else None


def _conquer(
    image: npt.NDArray[np.uint8],
    instance: BoolMask,
    frame: tuple[int, int, int, int],
    extractor: FeatureExtractor,
    config: PseudoLabelConfig,
    trace: StageTrace | None = None,
) -> list[Candidate]:
    """Return conquer regions of one instance, in the instance frame, clipped to the instance."""
    fy0, fy1, fx0, fx1 = frame
    y0, y1, x0, x1 = box_of(instance)
    crop_instance = instance[y0:y1, x0:x1]
    features = extractor.extract(np.ascontiguousarray(image[y0:y1, x0:x1]))
    patch_px = features.patch_size * (y1 - y0) / features.resized_hw[0]
    band = max(config.refine.min_band_px, round(config.refine.band_patches * patch_px))
    result = merge_patches(
        features.features,
        thresholds=config.merge_thresholds,
        min_patches=config.min_region_patches,
    )
    out = []
    for region in result.regions:
        mask = grid_to_image(region.mask, y1 - y0, x1 - x0)
        area = int(mask.sum())
        inside = mask & crop_instance
        if area == 0 or inside.sum() <= config.keep_inside_fraction * area:
            continue
        framed = np.zeros((fy1 - fy0, fx1 - fx0), dtype=bool)
        framed[y0 - fy0 : y1 - fy0, x0 - fx0 : x1 - fx0] = inside
        if trace is not None:
            trace.add("conquer", framed, fy0, fx0)
        out.append(Candidate(framed, region.threshold, "conquer", band))
    return out


def _is_part(
    mask: BoolMask, instance: BoolMask, instance_area: int, config: PseudoLabelConfig
) -> bool:
    area = int(mask.sum())
    inside = int((mask & instance).sum())
    return 0 < area < instance_area and inside > config.containment_threshold * area


def _parts(
    image: npt.NDArray[np.uint8],
    instance: BoolMask,
    candidates: list[Candidate],
    config: PseudoLabelConfig,
) -> list[Candidate]:
    """NMS, refine and NMS again the candidate parts of one instance (all in its frame)."""
    kept = [
        candidates[i]
        for i in protected_nms(instance, [c.mask for c in candidates], iou_threshold=config.nms_iou)
    ]
    refined = []
    instance_area = int(instance.sum())
    workers = max(1, min(config.refine.workers, len(kept)))

    def refine(candidate: Candidate) -> BoolMask | None:
        # a split piece spans several parts, too many colours for GrabCut: it is snapped to its
        # refined parts afterwards instead
        if candidate.source in SPLIT_SOURCES and config.snap_to_parts:
            return candidate.mask
        return _refined(image, candidate, config.refine)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # GrabCut releases the GIL
        masks = list(pool.map(refine, kept))
    for candidate, mask in zip(kept, masks, strict=True):
        # a refined part must still be a part: smaller than and inside its instance
        if mask is not None and _is_part(mask, instance, instance_area, config):
            refined.append(Candidate(mask, candidate.score, candidate.source, candidate.band_px))
    if kept and not refined:
        logger.debug("refinement discarded every part; keeping the unrefined parts")
        refined = kept
    order = protected_nms(instance, [c.mask for c in refined], iou_threshold=config.nms_iou)
    return [refined[i] for i in order]


def _encode(
    framed: BoolMask, frame: tuple[int, int, int, int], shape: tuple[int, int]
) -> tuple[dict[str, Any], int, tuple[float, float, float, float]]:
    full = np.zeros(shape, dtype=bool)
    fy0, fy1, fx0, fx1 = frame
    full[fy0:fy1, fx0:fx1] = framed
    y0, y1, x0, x1 = box_of(framed)
    box = (float(x0 + fx0), float(y0 + fy0), float(x1 - x0), float(y1 - y0))
    return encode_coco_rle(full), int(framed.sum()), box


def _hierarchy(
    image: npt.NDArray[np.uint8],
    head: Candidate,
    given: list[Candidate],
    extractor: FeatureExtractor,
    config: PseudoLabelConfig,
    trace: StageTrace | None = None,
) -> tuple[tuple[int, int, int, int], BoolMask, list[Candidate]]:
    """Refine one instance and find its parts.

    Returns:
        (frame (y0, y1, x0, x1) in the image, the instance mask in the frame, its parts in the
        frame, largest first).
    """
    refined = _refined(image, head, config.refine)
    chosen = head.mask if refined is None else refined  # a discarded refinement keeps the coarse
    instance = chosen
    if config.snap_to_parts:  # the conquer looks at the coarse mask too: refinement may cut
        instance = chosen | head.mask
    if trace is not None:
        trace.add("instances", instance)
    frame = box_of(instance, margin=2 * head.band_px + 2)
    fy0, fy1, fx0, fx1 = frame
    framed_given = [
        Candidate(c.mask[fy0:fy1, fx0:fx1], c.score, c.source, c.band_px)
        for c in sorted(given, key=lambda c: (-c.score, -int(c.mask.sum())))
    ]
    conquered = _conquer(image, instance, frame, extractor, config, trace)
    for piece in given:  # a piece of a crowded proposal gets a conquer at its own resolution
        if piece.source == "split" and config.conquer_split_pieces:
            conquered += _conquer(image, piece.mask & instance, frame, extractor, config, trace)
    conquered.sort(key=lambda c: -int(c.mask.sum()))
    framed_instance = instance[fy0:fy1, fx0:fx1]
    # split pieces are coarse patch masks: exact conquer regions win NMS against them
    ordered = [c for c in framed_given if c.source not in SPLIT_SOURCES] + conquered
    ordered += [c for c in framed_given if c.source in SPLIT_SOURCES]
    parts = _parts(image[fy0:fy1, fx0:fx1], framed_instance, ordered, config)
    if config.snap_to_parts and head.source not in UNREFINED_SOURCES:
        # a single object whose GrabCut refinement passed keeps it; a crowded proposal (split
        # pieces) or a discarded refinement is rebuilt from its parts
        crowded = refined is None or any(c.source in SPLIT_SOURCES for c in given)
        if not crowded:
            framed_instance = chosen[fy0:fy1, fx0:fx1]
        framed_instance, parts = _snapped(
            framed_instance, parts, head.band_px, config, snap_instance=crowded
        )
    parts.sort(key=lambda c: -int(c.mask.sum()))
    return frame, framed_instance, parts


def _snapped(
    instance: BoolMask,
    parts: list[Candidate],
    band_px: int,
    config: PseudoLabelConfig,
    *,
    snap_instance: bool,
) -> tuple[BoolMask, list[Candidate]]:
    """Snap the split pieces (and the instance if asked) to their conquer parts; NMS again."""
    leaves = [p.mask for p in parts if p.source == "conquer"]

    def snap(mask: BoolMask) -> BoolMask:
        return snap_to_parts(
            mask,
            leaves,
            band_px=band_px,
            min_inside=config.snap_min_inside,
            min_iou=config.refine.min_iou,
        )

    if snap_instance:
        instance = snap(instance)
    snapped = [
        Candidate(snap(p.mask), p.score, p.source, p.band_px) if p.source in SPLIT_SOURCES else p
        for p in parts
    ]
    area = int(instance.sum())
    snapped = [p for p in snapped if _is_part(p.mask, instance, area, config)]
    order = protected_nms(instance, [p.mask for p in snapped], iou_threshold=config.nms_iou)
    return instance, [snapped[i] for i in order]


def _fallback(
    image: npt.NDArray[np.uint8],
    candidates: list[Candidate],
    config: PseudoLabelConfig,
    trace: StageTrace | None,
) -> list[InstanceHierarchy]:
    """Append a fallback instance to `candidates` and return its hierarchy (none if nothing)."""
    mask, reason = fallback_instance(
        image,
        [c.mask for c in candidates],
        min_area_fraction=config.fallback_min_area_fraction,
        min_contrast=config.fallback_min_contrast,
    )
    logger.info("no instance found: %s", reason)
    if trace is not None:
        trace.fallback = reason
    if mask is None:
        return []
    candidates.append(Candidate(mask, 0.0, "fallback", config.refine.min_band_px))
    return [InstanceHierarchy(len(candidates) - 1, ())]


def pseudo_label_image(
    image: npt.NDArray[np.uint8],
    extractor: FeatureExtractor,
    *,
    config: PseudoLabelConfig | None = None,
    proposals: Sequence[Proposal] = (),
    trace: StageTrace | None = None,
) -> list[PseudoMask]:
    """Run divide, relations, conquer, NMS, refinement and granularity on one image.

    The stages work at `config.work_max_side` (`scaling`); masks (and the trace) come back at
    the image's own size.

    Args:
        image: (H, W, 3) uint8 RGB.
        extractor: Patch-feature extractor (used for the divide and the conquer stages).
        config: Thresholds; defaults to `PseudoLabelConfig()`.
        proposals: External proposals (masks (H, W) bool) entering the same stages.
        trace: If given, filled with every stage's masks (`diagnostics.StageTrace`).

    Returns:
        Instances and parts, each instance followed by its parts (largest part first).

    Raises:
        FeatureExtractorError: the image is not (H, W, 3) uint8.
        ProposalError: a proposal does not match the image.
    """
    config = config or PseudoLabelConfig()
    check_image(image)
    height, width = image.shape[:2]
    for index, p in enumerate(proposals):
        if np.shape(p.mask) != (height, width):
            raise ProposalError(
                f"proposal {index} has shape {np.shape(p.mask)}, image is {(height, width)}"
            )
    size = working_size(height, width, config.work_max_side)
    if size == (height, width):
        return _pseudo_label(image, extractor, config, proposals, trace)
    small = [Proposal(resize_mask(np.asarray(p.mask), size), p.score, p.source) for p in proposals]
    inner = StageTrace() if trace is not None else None
    masks = _pseudo_label(resize_image(image, size), extractor, config, small, inner)
    if trace is not None and inner is not None:
        scaled = inner.rescaled(height / size[0], width / size[1])
        trace.stages, trace.fallback = scaled.stages, scaled.fallback
    out = []
    for m in masks:
        big = upscale_rle(m.segmentation, (height, width))
        if big is not None:
            out.append(replace(m, segmentation=big[0], area=big[1], bbox_xywh=big[2]))
    return out


def _pseudo_label(
    image: npt.NDArray[np.uint8],
    extractor: FeatureExtractor,
    config: PseudoLabelConfig,
    proposals: Sequence[Proposal],
    trace: StageTrace | None,
) -> list[PseudoMask]:
    """Run the stages on an image at its working size (see `pseudo_label_image`)."""
    height, width = image.shape[:2]
    candidates = _divide(image, extractor, config, proposals)
    if trace is not None:
        for c in candidates:
            trace.add("divide", c.mask)
    hierarchies = find_hierarchies(
        [c.mask for c in candidates],
        [c.score for c in candidates],
        priorities=[SOURCE_PRIORITY[c.source] for c in candidates],
        min_instance_area_fraction=config.instance_min_area_fraction,
        containment_threshold=config.containment_threshold,
    )
    if not hierarchies and config.fallback:
        hierarchies = _fallback(image, candidates, config, trace)
    out: list[PseudoMask] = []
    for instance_id, hierarchy in enumerate(hierarchies, start=1):
        head = candidates[hierarchy.instance]
        given = [candidates[j] for j in hierarchy.parts]
        frame, instance, parts = _hierarchy(image, head, given, extractor, config, trace)
        areas = [int(instance.sum())] + [int(p.mask.sum()) for p in parts]
        members = [(instance, head.score, head.source, False)] + [
            (p.mask, p.score, p.source, True) for p in parts
        ]
        for (mask, score, source, is_part), g in zip(
            members, granularity_from_areas(areas).tolist(), strict=True
        ):
            rle, area, box = _encode(mask, frame, (height, width))
            out.append(PseudoMask(rle, area, box, float(g), instance_id, is_part, score, source))
            if trace is not None:
                trace.add("final", mask, frame[0], frame[2])
    return out

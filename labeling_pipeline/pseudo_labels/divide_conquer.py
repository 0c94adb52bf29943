"""Granularity-aware divide-and-conquer on one image, in memory (UnSAMv2's data engine).

Stages (shared/reference/unsamv2_model.md, section 8):

1. **Divide**: N-cut proposals on the image's patch features (`ncut`), plus optional external
   proposals (detector masks, or human masks for UnSAMv2+) with a score; proposals scoring at
   most `proposal_min_score` are dropped.
2. **Relations** (`relations`): instances and their contained parts.
3. Per instance (`instance_stages`): **refine** the instance (GrabCut, `refine`; human masks are
   kept as they are), **conquer** its tight crop (`conquer.merge_patches` on the crop's
   features; regions more than `keep_inside_fraction` inside the instance are kept, clipped to
   it), **NMS** (`mask_ops.protected_nms`: the instance always survives), **refine** every part,
   NMS again on the refined masks, and **granularity** (`granularity`) over the instance and its
   parts.

Everything for one instance happens in a frame around its box, so memory stays proportional to
the objects, not to image size x number of masks. Masks come out as COCO RLE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.masks import decode_coco_rle, encode_coco_rle_placed
from core_model.types import BoolMask
from labeling_pipeline.pseudo_labels.candidates import Candidate, box_of, grid_to_image
from labeling_pipeline.pseudo_labels.config import PseudoLabelConfig
from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
from labeling_pipeline.pseudo_labels.errors import ProposalError
from labeling_pipeline.pseudo_labels.fallback import fallback_instance
from labeling_pipeline.pseudo_labels.features import FeatureExtractor, check_image
from labeling_pipeline.pseudo_labels.granularity import granularity_from_areas
from labeling_pipeline.pseudo_labels.instance_stages import instance_hierarchy
from labeling_pipeline.pseudo_labels.library_threads import one_thread_per_library
from labeling_pipeline.pseudo_labels.ncut import discover_instances
from labeling_pipeline.pseudo_labels.relations import InstanceHierarchy, find_hierarchies
from labeling_pipeline.pseudo_labels.scaling import (
    resize_image,
    resize_mask,
    upscale_framed,
    working_size,
)
from labeling_pipeline.pseudo_labels.split import (
    SplitRules,
    join_adjacent_pieces,
    split_proposal,
)

logger = logging.getLogger(__name__)

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
        score: Proposal score (instances and external parts), conquer level (conquer parts) or
            0 (residual parts).
        source: "ncut", "split" (a piece of an N-cut proposal), "joined" (two touching
            pieces, `split.join_adjacent_pieces`), "external", "human",
            "conquer", "residual" (instance pixels no conquer part covers, `instance_stages`)
            or "fallback" (see `fallback`).
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
        rules = SplitRules(
            sigma=config.split_sigma,
            max_ncut=config.split_max_ncut,
            max_cut_weight=config.split_max_cut_weight,
            min_patches=max(
                config.ncut.min_patches,
                round(config.split_min_area_fraction * units.shape[0] * units.shape[1]),
            ),
            neck_ncut=config.split_neck_ncut,
            neck_preference=config.split_neck_preference,
        )
        for cut in discover_instances(features, config.ncut):
            mask = grid_to_image(cut.mask, height, width)
            pieces = split_proposal(units, cut.mask, rules, config.split_max_depth)
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


def _encode(
    framed: BoolMask,
    top_left_yx: tuple[int, int],
    work_hw: tuple[int, int],
    out_hw: tuple[int, int],
) -> tuple[dict[str, Any], int, tuple[float, float, float, float]] | None:
    """Return (COCO RLE, area, box (x, y, w, h)) at `out_hw` of a crop of the working image.

    None when the mask vanishes at the output size.
    """
    if work_hw == out_hw:
        y0, y1, x0, x1 = box_of(framed)
        crop, (y, x) = framed[y0:y1, x0:x1], (top_left_yx[0] + y0, top_left_yx[1] + x0)
    else:
        scaled = upscale_framed(framed, top_left_yx, work_hw, out_hw)
        if scaled is None:
            return None
        crop, (y, x) = scaled
    height, width = crop.shape
    box = (float(x), float(y), float(width), float(height))
    return encode_coco_rle_placed(crop, (y, x), out_hw), np.count_nonzero(crop), box


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
    # the stages run their own worker threads: nested library threads would oversubscribe
    with one_thread_per_library(max(config.conquer_workers, config.refine.workers) > 1):
        return _pseudo_label_at_working_size(image, extractor, config, proposals, trace)


def _pseudo_label_at_working_size(
    image: npt.NDArray[np.uint8],
    extractor: FeatureExtractor,
    config: PseudoLabelConfig,
    proposals: Sequence[Proposal],
    trace: StageTrace | None,
) -> list[PseudoMask]:
    """Shrink the image (and proposals) to the working size, run the stages, encode at full size."""
    height, width = image.shape[:2]
    size = working_size(height, width, config.work_max_side)
    if size == (height, width):
        return _pseudo_label(image, extractor, config, proposals, trace, size)
    small = [Proposal(resize_mask(np.asarray(p.mask), size), p.score, p.source) for p in proposals]
    inner = StageTrace() if trace is not None else None
    small_image = resize_image(image, size)
    masks = _pseudo_label(small_image, extractor, config, small, inner, (height, width))
    if trace is not None and inner is not None:
        scaled = inner.rescaled(height / size[0], width / size[1])
        trace.stages, trace.fallback = scaled.stages, scaled.fallback
    return masks


def _pseudo_label(
    image: npt.NDArray[np.uint8],
    extractor: FeatureExtractor,
    config: PseudoLabelConfig,
    proposals: Sequence[Proposal],
    trace: StageTrace | None,
    out_hw: tuple[int, int],
) -> list[PseudoMask]:
    """Run the stages on an image at its working size; masks are encoded at `out_hw` (H, W)."""
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
        frame, instance, parts = instance_hierarchy(image, head, given, extractor, config, trace)
        areas = [np.count_nonzero(instance)] + [np.count_nonzero(p.mask) for p in parts]
        members = [(instance, head.score, head.source, False)] + [
            (p.mask, p.score, p.source, True) for p in parts
        ]
        for (mask, score, source, is_part), g in zip(
            members, granularity_from_areas(areas).tolist(), strict=True
        ):
            encoded = _encode(mask, (frame[0], frame[2]), (height, width), out_hw)
            if encoded is None:  # vanished when brought to the output size
                continue
            rle, area, box = encoded
            out.append(PseudoMask(rle, area, box, float(g), instance_id, is_part, score, source))
            if trace is not None:
                trace.add("final", mask, frame[0], frame[2])
    return out

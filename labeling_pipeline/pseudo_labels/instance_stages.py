"""The stages of one instance: refine it, conquer its crop, NMS and refine its parts, snap.

Where no conquer level finds a part the instance holds (a thin leaf whose patches merged with
the background around it), the instance's pixels no part covers, wide enough to hold the
refinement band, become residual parts (`_residual_parts`), so the instance rebuilt from its
parts does not lose them.

Everything happens in a frame (y0, y1, x0, x1) around the instance's box, so memory stays
proportional to the object, not to image size x number of masks. `divide_conquer` runs the
divide and calls `instance_hierarchy` for every instance it finds.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import numpy.typing as npt

from core_model.types import BoolMask
from labeling_pipeline.pseudo_labels.candidates import Candidate, box_of, grid_to_image
from labeling_pipeline.pseudo_labels.config import PseudoLabelConfig
from labeling_pipeline.pseudo_labels.conquer import merge_patches
from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
from labeling_pipeline.pseudo_labels.features import FeatureExtractor
from labeling_pipeline.pseudo_labels.mask_ops import protected_nms
from labeling_pipeline.pseudo_labels.refine import (
    RefineConfig,
    accept_refined,
    band_disc,
    finest_parts,
    grabcut_refine,
    snap_to_parts,
)
from labeling_pipeline.pseudo_labels.regroup import apply_moves, regroup_leaves
from labeling_pipeline.pseudo_labels.regroup_ties import TieRules

logger = logging.getLogger(__name__)

UNREFINED_SOURCES = ("human",)
# coarse patch-grid pieces of a crowded proposal: snapped to their parts, not GrabCut-refined
SPLIT_SOURCES = ("split", "joined")
# refined parts found in the instance's own pixels: what instances are snapped to and regrouped
LEAF_SOURCES = ("conquer", "residual")


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
        area = np.count_nonzero(mask)
        inside = mask & crop_instance
        if area == 0 or np.count_nonzero(inside) <= config.keep_inside_fraction * area:
            continue
        framed = np.zeros((fy1 - fy0, fx1 - fx0), dtype=bool)
        framed[y0 - fy0 : y1 - fy0, x0 - fx0 : x1 - fx0] = inside
        out.append(Candidate(framed, region.threshold, "conquer", band))
    return out


def _is_part(
    mask: BoolMask, instance: BoolMask, instance_area: int, config: PseudoLabelConfig
) -> bool:
    area = np.count_nonzero(mask)
    inside = np.count_nonzero(mask & instance)
    return 0 < area < instance_area and inside > config.containment_threshold * area


def _parts(
    image: npt.NDArray[np.uint8],
    instance: BoolMask,
    candidates: list[Candidate],
    config: PseudoLabelConfig,
    reach: BoolMask,
) -> list[Candidate]:
    """NMS, refine and NMS again the candidate parts of one instance (all in its frame).

    `reach` is the instance widened by its uncertain band: a refined part counts as inside the
    instance when it lies inside `reach`, as the coarse instance's own boundary is only known to
    within the band (a petal at the edge of a patch mask, snapped to the image by GrabCut,
    reaches out of the coarse mask).
    """
    kept = [
        candidates[i]
        for i in protected_nms(instance, [c.mask for c in candidates], iou_threshold=config.nms_iou)
    ]
    refined = []
    instance_area = np.count_nonzero(instance)
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
        if mask is not None and _is_part(mask, reach, instance_area, config):
            refined.append(Candidate(mask, candidate.score, candidate.source, candidate.band_px))
    if kept and not refined:
        logger.debug("refinement discarded every part; keeping the unrefined parts")
        refined = kept
    order = protected_nms(instance, [c.mask for c in refined], iou_threshold=config.nms_iou)
    return [refined[i] for i in order]


def _residual_parts(
    image: npt.NDArray[np.uint8],
    instance: BoolMask,
    reach: BoolMask,
    parts: list[Candidate],
    band_px: int,
    config: PseudoLabelConfig,
) -> list[Candidate]:
    """Return the instance's pixels no refined part covers, as parts (all in its frame).

    What is left of the instance outside its conquer parts is opened with a disc of the
    uncertain band's radius: slivers along the parts' refined boundaries (narrower than the band)
    go, and each 4-connected piece left is GrabCut-refined like a conquer part (its outer
    boundary is the coarse instance's) and kept if the refinement passes and it is still a part
    of the instance (inside `reach`, as in `_parts`).
    """
    covered = np.zeros_like(instance)
    for part in parts:
        if part.source in LEAF_SOURCES:
            covered |= part.mask
    left = instance & ~covered
    opened = cv2.morphologyEx(left.astype(np.uint8), cv2.MORPH_OPEN, band_disc(band_px))
    count, labels = cv2.connectedComponents(opened, connectivity=4)
    area = np.count_nonzero(instance)
    out = []
    for label in range(1, count):
        piece = Candidate((labels == label) & left, 0.0, "residual", band_px)
        refined = _refined(image, piece, config.refine)
        if refined is not None and _is_part(refined, reach, area, config):
            out.append(Candidate(refined, 0.0, "residual", band_px))
    return out


def instance_hierarchy(
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
        for c in sorted(given, key=lambda c: (-c.score, -np.count_nonzero(c.mask)))
    ]
    # a piece of a crowded proposal gets a conquer at its own resolution
    regions = [instance] + [
        piece.mask & instance
        for piece in given
        if piece.source == "split" and config.conquer_split_pieces
    ]
    workers = max(1, min(config.conquer_workers, len(regions)))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # feature maths releases the GIL
        found = list(pool.map(lambda m: _conquer(image, m, frame, extractor, config), regions))
    conquered = [c for regions_of_one in found for c in regions_of_one]
    if trace is not None:
        for c in conquered:
            trace.add("conquer", c.mask, fy0, fx0)
    conquered.sort(key=lambda c: -np.count_nonzero(c.mask))
    framed_instance = instance[fy0:fy1, fx0:fx1]
    # split pieces are coarse patch masks: exact conquer regions win NMS against them
    ordered = [c for c in framed_given if c.source not in SPLIT_SOURCES] + conquered
    ordered += [c for c in framed_given if c.source in SPLIT_SOURCES]
    framed_image = image[fy0:fy1, fx0:fx1]
    reach = cv2.dilate(framed_instance.astype(np.uint8), band_disc(head.band_px)).astype(bool)
    parts = _parts(framed_image, framed_instance, ordered, config, reach)
    if config.residual_parts:
        parts += _residual_parts(framed_image, framed_instance, reach, parts, head.band_px, config)
    if config.snap_to_parts and head.source not in UNREFINED_SOURCES:
        # a single object whose GrabCut refinement passed keeps it; a crowded proposal (split
        # pieces) or a discarded refinement is rebuilt from its parts
        crowded = refined is None or any(c.source in SPLIT_SOURCES for c in given)
        if not crowded:
            framed_instance = chosen[fy0:fy1, fx0:fx1]
        framed_instance, parts = _snapped(
            framed_instance, parts, head.band_px, config, snap_instance=crowded
        )
    parts.sort(key=lambda c: -np.count_nonzero(c.mask))
    return frame, framed_instance, parts


def _split_leaves(pieces: list[BoolMask], containment: float) -> list[int]:
    """Return the indices of the pieces holding no other piece, if they barely overlap."""
    areas = [np.count_nonzero(p) for p in pieces]
    leaves = [
        i
        for i, p in enumerate(pieces)
        if not any(
            j != i and areas[j] < areas[i] and np.count_nonzero(q & p) > containment * areas[j]
            for j, q in enumerate(pieces)
        )
    ]
    for a in leaves:
        for b in leaves:
            if a < b and np.count_nonzero(pieces[a] & pieces[b]) > 0.1 * min(areas[a], areas[b]):
                return []
    return leaves


def _regrouped(
    parts: list[Candidate], conquer: list[BoolMask], config: PseudoLabelConfig
) -> list[Candidate]:
    """Move conquer parts between the split leaves by attachment (`regroup`)."""
    index = [i for i, p in enumerate(parts) if p.source in SPLIT_SOURCES]
    pieces = [parts[i].mask for i in index]
    leaves = _split_leaves(pieces, config.containment_threshold)
    if len(leaves) < 2:
        return parts
    old = [pieces[i] for i in leaves]
    moves = regroup_leaves(
        old,
        conquer,
        min_gain=config.regroup_min_gain,
        min_keep=config.regroup_min_keep,
        radius_fraction=config.regroup_radius_fraction,
        bulge_margin=config.regroup_bulge_margin,
        min_elongation=config.regroup_min_elongation,
        end_fraction=config.regroup_end_fraction,
        group_moves=config.regroup_group_moves,
        ties=TieRules(
            config.regroup_tie_ratio, config.regroup_carry_fraction, config.regroup_twin_tolerance
        )
        if config.regroup_ties
        else None,
    )
    if not moves:
        return parts
    rebuilt = apply_moves(pieces, old, moves, containment=config.containment_threshold)
    out = list(parts)
    for i, mask in zip(index, rebuilt, strict=True):
        p = parts[i]
        out[i] = Candidate(mask, p.score, p.source, p.band_px)
    return out


def _snapped(
    instance: BoolMask,
    parts: list[Candidate],
    band_px: int,
    config: PseudoLabelConfig,
    *,
    snap_instance: bool,
) -> tuple[BoolMask, list[Candidate]]:
    """Snap the split pieces (and the instance if asked) to their conquer parts; NMS again."""
    leaves = [p.mask for p in parts if p.source in LEAF_SOURCES]
    finest = finest_parts(leaves, instance.shape)

    def snap(mask: BoolMask) -> BoolMask:
        return snap_to_parts(
            mask,
            leaves,
            band_px=band_px,
            min_inside=config.snap_min_inside,
            min_iou=config.refine.min_iou,
            finest=finest,
        )

    if snap_instance:
        instance = snap(instance)
    snapped = [
        Candidate(snap(p.mask), p.score, p.source, p.band_px) if p.source in SPLIT_SOURCES else p
        for p in parts
    ]
    if config.regroup_parts:
        snapped = _regrouped(snapped, leaves, config)
    area = np.count_nonzero(instance)
    snapped = [p for p in snapped if _is_part(p.mask, instance, area, config)]
    order = protected_nms(instance, [p.mask for p in snapped], iou_threshold=config.nms_iou)
    return instance, [snapped[i] for i in order]

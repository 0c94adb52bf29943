"""Settings of the pseudo-label pipeline: one frozen dataclass, convertible to and from JSON.

Defaults follow the official release (shared/reference/unsamv2_model.md, section 8) where it
has a value: T_conf 0.3, instance area > 5 %, containment 0.8, merge levels 0.9..0.5, 4 patches,
90 % inside, NMS IoU 0.8, discard rules (IoU 0.5 with the unrefined mask, area <= 90 %).
Workers store the config as JSON (`to_dict`) and rebuild it with `PseudoLabelConfig.from_mapping`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core_model.errors import UnSAMv2Error
from core_model.imageio import MAX_IMAGE_PIXELS
from labeling_pipeline.pseudo_labels.conquer import DEFAULT_THRESHOLDS
from labeling_pipeline.pseudo_labels.ncut import NCutConfig
from labeling_pipeline.pseudo_labels.refine import RefineConfig


class PseudoLabelConfigError(UnSAMv2Error, ValueError):
    """A pseudo-label config has an unknown key or a value out of range."""


@dataclass(frozen=True)
class PseudoLabelConfig:
    """All thresholds of the pipeline.

    Attributes:
        ncut: Divide-stage settings (N-cut).
        use_ncut: Run the N-cut divide stage (off: external proposals only).
        proposal_min_score: External proposals scoring at most this are dropped (T_conf).
        instance_min_area_fraction: An instance covers more than this fraction of the image.
        containment_threshold: |a & b| / |a| above which a lies inside b (T_overlap).
        merge_thresholds: Conquer levels, highest first.
        min_region_patches: Smallest conquer region, in patches.
        keep_inside_fraction: A conquer region is kept if more than this share lies inside.
        nms_iou: Mask NMS threshold (parts above it with the instance or a kept part go).
        split_sigma, split_max_ncut, split_max_cut_weight, split_neck_ncut,
        split_neck_preference, split_max_depth, split_min_area_fraction: Splitting of a
            divide proposal that holds touching objects (`split`; why each value: below).
        conquer_workers: Threads running the conquers of one instance and its pieces.
        snap_to_parts, snap_min_inside: Rebuilding instances from their refined parts.
        residual_parts: Instance pixels no conquer part covers become parts of their own.
        regroup_parts, regroup_min_gain, regroup_min_keep, regroup_radius_fraction,
        regroup_bulge_margin, regroup_min_elongation, regroup_end_fraction,
        regroup_group_moves, regroup_ties, regroup_tie_ratio, regroup_carry_fraction,
        regroup_twin_tolerance:
            Moving parts between split leaves by attachment (`regroup`).
        fallback, fallback_min_area_fraction, fallback_min_contrast: The instance of last
            resort for an image where the divide finds none (`fallback`).
        refine: GrabCut refinement settings.
        max_image_side: Images are downscaled to this long side when read (None: never);
            masks are written at the original resolution.
        work_max_side: The stages work at this long side (None: the image's own size).
        max_image_pixels: Files with more pixels are refused before decoding.
        blank_std: Images whose per-channel standard deviation is below this everywhere
            (0-255 scale) are skipped as blank.
    """

    ncut: NCutConfig = field(default_factory=NCutConfig)
    use_ncut: bool = True
    proposal_min_score: float = 0.3
    instance_min_area_fraction: float = 0.05
    containment_threshold: float = 0.8
    merge_thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    min_region_patches: int = 4
    keep_inside_fraction: float = 0.9
    nms_iou: float = 0.8
    # Split of a divide proposal holding touching objects (`split`): neighbour links weigh
    # exp(-(1 - cos) / 0.1), so same-part patches (cos ~0.9-1) link at ~0.4-1 and different
    # parts (cos ~0.3-0.45) at < 0.01, a boundary of appearance costs little to cut.
    split_sigma: float = 0.1
    # N-cut value below which a split is kept: a junction between two objects cuts a few
    # weak links of two large sides (~0.05-0.2); a cut through one uniform region costs ~1.
    split_max_ncut: float = 0.25
    # Mean weight of the links a split cuts: same-part neighbours link at 0.4-1, so below 0.2 the
    # cut runs mostly along a change of appearance, not across a uniform region.
    split_max_cut_weight: float = 0.2
    # A cut through strong links is still taken when its normalised cut is at most 0.02: two
    # sides of at least `split_min_area_fraction` joined by a contact a couple of patches wide
    # (a hand touching a wall, two objects meeting at a corner) are two bodies, whatever their
    # colours. Inside one object, pieces that large are rarely joined so narrowly (limbs, stems
    # and wheels are far smaller), and a compact region's best cut by shape alone is ~0.04-0.07.
    # On the harder scenes, every cut of at most 0.015 that the weight rule refused lay
    # between two objects; the first one inside an object came at 0.039.
    split_neck_ncut: float = 0.02
    # ... but a seam of appearance is stronger evidence than a shape: a neck wins over the best
    # seam cut (the weight rule) only when its normalised cut is below half the seam's.
    split_neck_preference: float = 0.5
    # Three levels give up to eight pieces per proposal: four objects crowded into one proposal
    # can need a third cut (two levels left a flower and the disc it lies on in one piece).
    # Pieces stay above `split_min_area_fraction`, so the extra level does not cut objects
    # into their parts, which the conquer does.
    split_max_depth: int = 3
    # A piece must cover this share of the image to be proposed: a little below the 5 % of an
    # instance, so a partly occluded object still counts; far above one part of an object
    # (a limb, a wheel), which the conquer finds, so a split does not cut an object apart.
    split_min_area_fraction: float = 0.04
    # Unions of two touching leaves of a split tree are whole hypotheses too
    # (`split.join_adjacent_pieces`): a two-level split of overlapping objects can cut one of
    # them between its levels, and then only the union of its two pieces is that object.
    join_split_leaves: bool = True
    # ... unless the union repeats the proposal or a piece: above this IoU they are one
    # hypothesis (the NMS threshold of parts, for the same reason).
    join_max_overlap: float = 0.8
    # The conquer also runs on each split piece's own crop: a crowded proposal's crop is large,
    # and at the extractor's fixed resolution its small parts (petals, windows) blur together.
    conquer_split_pieces: bool = True
    # The conquers of an instance and of its split pieces run on this many threads: they are
    # independent, and their feature maths (OpenCV, NumPy) runs outside the GIL; 2 matches the
    # small CPU machines pseudo-labels run on. Results do not depend on it.
    conquer_workers: int = 2
    # Rebuild instances and split pieces from their refined conquer parts (`refine.snap_to_parts`):
    # a patch-grid mask is ~one patch (8-21 px) off along its boundary, its parts follow edges.
    snap_to_parts: bool = True
    # A part joins a mask when most of it lies inside: a part straddling two objects stays out.
    snap_min_inside: float = 0.5
    # Pixels of an instance that no conquer part covers, wider than the refinement band, become
    # residual parts (`instance_stages`): a thin leaf or petal whose patches merged with the
    # background around it has no conquer region, and an instance rebuilt from its parts lost it.
    residual_parts: bool = True
    # Regroup the conquer parts of a crowded proposal between its split leaves by attachment
    # (`regroup`): the split works on coarse patches and can put a whole part on the wrong side.
    regroup_parts: bool = True
    # A part moves to another leaf only when it shares more than 1.5x the boundary with it than
    # with its own leaf: clearly more attached there, so near ties (a part touching both
    # objects about equally) keep the split's decision.
    regroup_min_gain: float = 1.5
    # ... and only while its leaf keeps half its area: regrouping corrects a few parts on the
    # seam, it does not dissolve a piece the split found (that would undo the divide).
    regroup_min_keep: float = 0.5
    # Attachment counts only the boundary a part does not bulge across (`regroup.attachment`):
    # a petal lying on another object touches it with its own convex outline, an occlusion, not
    # an attachment. Bulging is judged in a disc of 0.35 x sqrt(part area), about 0.6 x the
    # radius of a round part: large enough to see the curve of an ellipse's long side, ...
    regroup_radius_fraction: float = 0.35
    # ... by the share of the disc inside each side: a boundary counts for a part unless its
    # share is lower than the neighbour's by more than 0.1 (two abutting parts of one object
    # are both about a half; an occluder's convex outline leaves it clearly less than the
    # dented part behind it).
    regroup_bulge_margin: float = 0.1
    # An elongated part (a limb, a stem, a leaf: at least 3x longer than wide, by the standard
    # deviations of its pixels along and across its major axis) joins its object at an end, a
    # joint; along its sides it only lies on or under other things. So only its boundary near
    # its ends counts for it. Petals, wheels, windows, roofs and walls are less elongated and
    # attach along their whole outline as before. (On the harder scenes 2.5 and 3 give the same
    # wholes; 4 gives those without the rule; 2 is worse, as bands that abut along their long
    # sides are less attached.)
    regroup_min_elongation: float = 3.0
    # ... its ends: the outer 30 % of its half-length on either side of its centre, where a
    # joint lies (a part drawn over the limb's end cuts it there).
    regroup_end_fraction: float = 0.3
    # After single parts, groups of touching parts move together (`regroup.attached_group`):
    # parts the split put on the wrong side together (a roof's halves, a figure's head and
    # torso) hold on to each other, so none of them moves alone. A group moves by the same
    # `regroup_min_gain`, counting its boundary from both sides. Harder scenes, wholes at IoU
    # 0.8: 0.706 -> 0.723 (seeds 0-39), 0.580 -> 0.607 (seeds 40-79), 0.436 -> 0.487 (12 at
    # 1024x768); the simple style is unchanged. Counted from the group's side only, as single
    # parts are, a group whose own outline bulges everywhere looked unattached and moved on
    # any contact (0.689).
    regroup_group_moves: bool = True
    # Last, ties are broken by shape (`regroup_ties`): a part at least as attached to another
    # leaf as to its own (1.0; the attachment rules above leave such near ties alone) moves
    # there when the two leaves' convex hulls then hold fewer pixels outside them, or when that
    # leaf holds its twin and its own leaf none (below). A panel's stripe lying on a wall is
    # about as attached to both; with the panel it makes two whole objects, with the wall a
    # panel without its stripe and a wall with a stripe sticking out. Harder scenes, wholes at
    # IoU 0.8: 0.723 -> 0.739 with convexity, 0.748 with twins too (seeds 0-39); 0.607 -> 0.643
    # -> 0.661 (seeds 40-79); 0.487 -> 0.487 -> 0.513 (12 at 1024x768). A floor of 0.5 (moves
    # against the attachment) gave 0.706-0.739.
    regroup_ties: bool = True
    regroup_tie_ratio: float = 1.0
    # A part whose leaving would cut its leaf in two takes the cut-off piece along when that
    # piece is at most a quarter of its size (a sliver of the same object behind it); a larger
    # piece is an object of its own and keeps the part where it is.
    regroup_carry_fraction: float = 0.25
    # Twins: parts whose areas and elongations are both within 15 % of each other. Wheels,
    # petals, legs and windows come in such sets; in the ground truth of seeds 0-39, 82 % of
    # parts with a twin share their object with one of them. 0.1 gives the same figures, 0.25
    # pulls unrelated parts of similar size (0.739).
    regroup_twin_tolerance: float = 0.15
    # An image whose divide yields no instance still gets one (`fallback`), with the reason in
    # the per-image result: an image without masks teaches nothing.
    fallback: bool = True
    # The colour-contrast fallback region must cover 1 % of the image (smaller is clutter) ...
    fallback_min_area_fraction: float = 0.01
    # ... and differ from every border colour by 12 Lab units on average: clearly another
    # colour (a just-noticeable difference is ~2.3), far above JPEG and sensor noise.
    fallback_min_contrast: float = 12.0
    refine: RefineConfig = field(default_factory=RefineConfig)
    max_image_side: int | None = 1024
    # The stages work on the image shrunk to this long side (`scaling`; masks come back at full
    # size): the patch features are computed at 384 px whatever the size, so beyond ~800 px
    # more pixels only cost time in refinement, snapping and overlaps. On the harder scenes
    # 800 is 1.3x faster at 1024x768 and no worse: 40 mixed-size scenes, wholes / parts at IoU
    # 0.8 0.630 / 0.881 at full size, 0.639 / 0.877 at 800; 12 scenes at 1024x768,
    # 0.333 / 0.874 -> 0.436 / 0.866. Lower costs wholes (640: 0.60 -> 0.56 on the 40 scenes,
    # snapped boundaries lose detail). None works at the image's own size.
    work_max_side: int | None = 800
    max_image_pixels: int = MAX_IMAGE_PIXELS
    blank_std: float = 2.0

    def __post_init__(self) -> None:
        for name in (
            "instance_min_area_fraction",
            "containment_threshold",
            "keep_inside_fraction",
            "nms_iou",
            "split_neck_preference",
            "regroup_end_fraction",
            "regroup_carry_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise PseudoLabelConfigError(f"{name} must be in [0, 1], got {value}")
        for name in (
            "split_neck_ncut",
            "regroup_min_elongation",
            "regroup_tie_ratio",
            "regroup_twin_tolerance",
        ):
            value = getattr(self, name)
            if not value >= 0.0:  # NaN fails too
                raise PseudoLabelConfigError(f"{name} must be >= 0, got {value}")
        if not self.merge_thresholds or self.min_region_patches < 1:
            raise PseudoLabelConfigError(
                "need at least one merge threshold and min_region_patches >= 1"
            )
        if self.conquer_workers < 1:
            raise PseudoLabelConfigError(
                f"conquer_workers must be >= 1, got {self.conquer_workers}"
            )
        if self.max_image_side is not None and self.max_image_side < 16:
            raise PseudoLabelConfigError(f"max_image_side must be >= 16, got {self.max_image_side}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (nested sections as dicts, tuples as lists)."""
        out = dataclasses.asdict(self)
        out["merge_thresholds"] = list(self.merge_thresholds)
        return out

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> PseudoLabelConfig:
        """Build a config from a (possibly partial) dict such as `to_dict` writes.

        Raises:
            PseudoLabelConfigError: unknown keys or invalid values.
        """
        values = dict(values or {})
        nested = {"ncut": NCutConfig, "refine": RefineConfig}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in nested and isinstance(value, Mapping):
                kwargs[key] = _build(nested[key], value, prefix=f"{key}.")
            elif key == "merge_thresholds":
                kwargs[key] = tuple(float(v) for v in value)
            else:
                kwargs[key] = value
        config: PseudoLabelConfig = _build(cls, kwargs, prefix="")
        return config


def _build(kind: Any, values: Mapping[str, Any], *, prefix: str) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PseudoLabelConfigError(
            f"unknown pseudo-label setting(s): {', '.join(prefix + k for k in unknown)}"
        )
    try:
        return kind(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, PseudoLabelConfigError):
            raise
        raise PseudoLabelConfigError(f"invalid pseudo-label setting: {exc}") from None

"""Regrouping parts between split leaves: attachment moves a part, an occluding outline not."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.regroup import (
    Move,
    apply_moves,
    attached_group,
    attachment,
    end_zones,
    finest_labels,
    own_fill,
    regroup_leaves,
)

Mask = npt.NDArray[np.bool_]


def regroup(leaves: list[Mask], parts: list[Mask], margin: float = 0.1) -> list[Move]:
    """Regroup with the default settings of `PseudoLabelConfig`."""
    return regroup_leaves(
        leaves, parts, min_gain=1.5, min_keep=0.5, radius_fraction=0.35, bulge_margin=margin
    )


def rect(y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int] = (60, 90)) -> Mask:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_a_part_moves_to_the_leaf_it_abuts_along_most_of_its_outline() -> None:
    wall = rect(25, 55, 5, 45)
    roof = rect(10, 25, 5, 45)  # sits on the wall along 40 px
    other = rect(5, 40, 46, 85)  # touches the roof along its 15 px side only
    # the split put the roof with the neighbouring object
    leaves = [wall, roof | other]
    moves = regroup(leaves, [wall, roof, other])
    assert len(moves) == 1
    region, source, target = moves[0]
    assert (source, target) == (1, 0)
    assert np.array_equal(region, roof)
    # the parent piece holding both leaves does not change, a piece holding one follows
    whole = wall | roof | other
    pieces = apply_moves([whole, roof | other, wall], leaves, moves, containment=0.8)
    assert np.array_equal(pieces[0], whole)
    assert np.array_equal(pieces[1], other)
    assert np.array_equal(pieces[2], wall | roof)


def test_a_convex_part_lying_on_another_object_stays_with_its_own() -> None:
    shape = (80, 120)
    behind = rect(5, 75, 5, 80, shape)
    petal = np.zeros(shape, np.uint8)
    cv2.circle(petal, (66, 40), 11, 1, -1)
    petal_mask = petal.astype(bool)
    # the petal lies on the object behind; its base is hidden under its flower's centre
    centre = rect(28, 52, 70, 110, shape)
    behind &= ~petal_mask & ~centre
    petal_mask &= ~centre
    leaves = [behind, petal_mask | centre]
    parts = [behind, petal_mask, centre]
    # counted on both sides, the long occlusion boundary would pull the petal onto the disc
    assert [(s, t) for _, s, t in regroup(leaves, parts, margin=10.0)] == [(1, 0)]
    assert regroup(leaves, parts) == []


def test_the_bulging_side_of_a_boundary_does_not_count_it() -> None:
    inner = np.zeros((60, 90), np.uint8)
    cv2.circle(inner, (45, 30), 10, 1, -1)
    labels = finest_labels([rect(0, 60, 0, 90), inner.astype(bool)], (60, 90))
    shared = attachment(labels, 2, own_fill(labels, 2, 0.35), 0.1)
    # the small disc bulges into the large region around it: only the large one counts it
    assert shared[0, 1] > 0
    assert shared[1, 0] == 0


def test_a_move_that_would_cut_a_leaf_in_two_is_not_made() -> None:
    left, bridge, right = rect(10, 50, 0, 30), rect(25, 35, 30, 60), rect(10, 50, 60, 90)
    top = rect(0, 25, 30, 60)
    bottom = rect(35, 60, 30, 60)
    # the bridge abuts the top and bottom pieces along 60 px but holds its leaf together
    leaves = [left | bridge | right, top | bottom]
    moves = regroup(leaves, [left, bridge, right, top, bottom])
    assert all(not np.array_equal(region, bridge) for region, _, _ in moves)


def limb_scene() -> tuple[Mask, Mask, Mask]:
    """A torso, a limb (5 x 70 px) from its side, and an object under the limb's middle."""
    shape = (60, 100)
    torso = rect(15, 45, 5, 25, shape)
    limb = rect(26, 31, 25, 95, shape)
    other = rect(31, 58, 40, 75, shape)
    return torso, limb, other


def test_an_elongated_region_attaches_only_at_its_ends() -> None:
    torso, limb, other = limb_scene()
    labels = finest_labels([torso, limb, other], torso.shape)
    ends = end_zones(labels, 3, min_elongation=3.0, end_fraction=0.3)
    row = ends[28]
    assert row[25:35].all() and row[86:95].all()  # both ends of the limb
    assert not row[40:80].any()  # its middle, where it lies on the other object
    assert ends[torso].all() and ends[other].all()  # compact regions keep their whole outline
    assert np.array_equal(end_zones(labels, 3, min_elongation=0.0, end_fraction=0.3), labels >= 0)
    flat = np.full(labels.shape, 0.5, np.float32)  # no bulging anywhere: only the ends decide
    sides = attachment(labels, 3, flat, 0.1)
    joints = attachment(labels, 3, flat, 0.1, ends)
    assert sides[1, 2] > 2 * sides[1, 0] > 0  # along its length the limb touches the other most
    assert joints[1, 2] == 0 and joints[1, 0] == sides[1, 0]  # at its ends only the torso
    assert joints[2, 1] == sides[2, 1]  # the other object's own boundary still counts


def test_parts_on_the_wrong_side_together_move_as_a_group() -> None:
    wall = rect(20, 50, 5, 45)
    left_roof, right_roof = rect(5, 20, 5, 25), rect(5, 20, 25, 45)  # both sit on the wall
    other = rect(5, 50, 46, 90)  # touches the right half along its 15 px side
    leaves = [wall, left_roof | right_roof | other]
    parts = [wall, left_roof, right_roof, other]
    settings = {"min_gain": 1.5, "min_keep": 0.5, "radius_fraction": 0.35, "bulge_margin": 0.1}
    # each half is held by the other half (and the neighbour): no single move
    assert regroup_leaves(leaves, parts, **settings) == []
    moves = regroup_leaves(leaves, parts, group_moves=True, **settings)
    assert sorted((int(r.sum()), s, t) for r, s, t in moves) == [(300, 1, 0), (300, 1, 0)]


def test_attached_group_grows_over_touching_regions_only() -> None:
    # regions 0-1 touch each other and the rest (2) a little, lean on another leaf together;
    # region 3 leans there too but touches none of them
    inner = np.array([[0, 30, 5, 0], [30, 0, 5, 0], [5, 5, 0, 0], [0, 0, 0, 0]], float)
    toward = np.array([20.0, 20.0, 0.0, 50.0])
    sizes = np.full(4, 100.0)
    group, ratio = attached_group(inner, toward, sizes, max_area=250.0)
    assert group.tolist() == [0, 1] and ratio == 4.0  # 40 toward the other leaf / 10 to region 2
    group, ratio = attached_group(inner, toward, sizes, max_area=150.0)
    assert group.size == 0 and ratio == 0.0  # no group of two fits

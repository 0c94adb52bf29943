"""Shape breaks attachment ties between split leaves (convexity, twins), and only ties."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.regroup import regroup_leaves
from labeling_pipeline.pseudo_labels.regroup_state import Assignment, Move
from labeling_pipeline.pseudo_labels.regroup_ties import (
    TieRules,
    convex_deficiency,
    region_shapes,
    tie_moves,
    twins,
)

Mask = npt.NDArray[np.bool_]
SHAPE = (150, 130)


def rect(y0: int, y1: int, x0: int, x1: int) -> Mask:
    mask = np.zeros(SHAPE, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def regroup(
    leaves: list[Mask], parts: list[Mask], ties: bool = True, tie_ratio: float = 1.0
) -> list[Move]:
    """Regroup with the default settings of `PseudoLabelConfig`."""
    return regroup_leaves(
        leaves,
        parts,
        min_gain=1.5,
        min_keep=0.5,
        radius_fraction=0.35,
        bulge_margin=0.1,
        group_moves=True,
        ties=TieRules(tie_ratio, 0.25, 0.15) if ties else None,
    )


def test_convex_deficiency_counts_hull_pixels_outside_the_mask() -> None:
    assert convex_deficiency(rect(10, 40, 20, 70)) == 0
    assert convex_deficiency(np.zeros(SHAPE, bool)) == 0
    # an L: a 30 x 30 square with a 15 x 15 corner cut out; the hull takes back the half of
    # the corner below the diagonal from (15, 30) to (30, 15), about 15 * 15 / 2 pixels
    ell = rect(0, 30, 0, 30) & ~rect(15, 30, 15, 30)
    assert 90 <= convex_deficiency(ell) <= 135


def panel_over_wall() -> tuple[Mask, Mask, Mask, Mask]:
    """Three 60 x 20 stripes of a panel; the bottom one sits on a wall along 50 of its 60 px."""
    top, middle, bottom = rect(20, 40, 10, 70), rect(40, 60, 10, 70), rect(60, 80, 10, 70)
    wall = rect(80, 140, 20, 120)
    return top, middle, bottom, wall


def test_a_tie_moves_to_the_side_where_both_objects_get_convex() -> None:
    top, middle, bottom, wall = panel_over_wall()
    # the split put the bottom stripe with the wall: 60 px with the panel, 50 with the wall,
    # less than the 1.5x that moves a part by attachment alone
    leaves = [top | middle, bottom | wall]
    parts = [top, middle, bottom, wall]
    assert regroup(leaves, parts, ties=False) == []
    moves = regroup(leaves, parts)
    assert len(moves) == 1
    region, source, target = moves[0]
    assert (source, target) == (1, 0)
    assert np.array_equal(region, bottom)


def test_a_tie_that_would_make_the_leaves_less_convex_is_kept() -> None:
    top, middle, bottom, _ = panel_over_wall()
    # a wall under the whole stripe (60 px each side): the panel is a rectangle with the
    # stripe, the wall would become an L with it
    wall = rect(80, 140, 0, 130)
    leaves = [top | middle | bottom, wall]
    assert regroup(leaves, [top, middle, bottom, wall]) == []


def test_only_a_region_at_least_tie_ratio_as_attached_elsewhere_is_considered() -> None:
    top, middle, bottom, wall = panel_over_wall()
    leaves = [top | middle, bottom | wall]
    # the stripe is 1.35x as attached to the panel as to the wall (180 against 133 pixel
    # pairs; the wall's corner bulges into the stripe's outline, which does not count)
    assert len(regroup(leaves, [top, middle, bottom, wall], tie_ratio=1.3)) == 1
    assert regroup(leaves, [top, middle, bottom, wall], tie_ratio=1.4) == []


def test_a_move_carries_along_a_sliver_it_cuts_off_but_not_an_object() -> None:
    top, middle, bottom, wall = panel_over_wall()
    # pieces of the wall's leaf that hang on the stripe's bottom-left corner only (8-connected,
    # no shared boundary): 50 px go along with the 1200 px stripe, 350 px are an object
    sliver, block = rect(80, 85, 0, 10), rect(80, 115, 0, 10)
    leaves = [top | middle, bottom | sliver | wall]
    moves = regroup(leaves, [top, middle, bottom, wall, sliver])
    moved = np.zeros(SHAPE, bool)
    for region, source, target in moves:
        assert (source, target) == (1, 0)
        moved |= region
    assert np.array_equal(moved, bottom | sliver)
    leaves = [top | middle, bottom | block | wall]
    assert regroup(leaves, [top, middle, bottom, wall, block]) == []


def disc(y: int, x: int, radius: int) -> Mask:
    rows, cols = np.ogrid[: SHAPE[0], : SHAPE[1]]
    mask: Mask = (rows - y) ** 2 + (cols - x) ** 2 <= radius**2
    return mask


def test_twins_have_one_size_and_shape() -> None:
    regions = [disc(30, 30, 10), disc(30, 80, 10), disc(90, 30, 14), rect(80, 100, 60, 80)]
    shapes = region_shapes(regions)
    assert shapes[0, 0] == np.count_nonzero(regions[0])
    assert abs(shapes[0, 1] - 1.0) < 0.05  # a disc is not elongated
    assert twins(shapes, 0, 0.15).tolist() == [False, True, False, False]
    # the 20 x 20 square has the disc's elongation but not its area (400 against 317 px)
    assert twins(shapes, 3, 0.15).tolist() == [False, False, False, False]
    assert twins(shapes, 3, 0.3).tolist() == [True, True, False, False]


def wheel_on_wall(first_wheel: Mask) -> list[int]:
    """Return the leaf of each region after the tie moves: a body, `first_wheel`, a second
    16 x 16 wheel in the corner of a wall, and the wall; the second wheel is tied (16 pixel
    pairs with the body, 16 with the wall)."""
    body = rect(10, 40, 10, 70)
    second = rect(40, 56, 61, 77)
    wall = rect(40, 120, 60, 125) & ~second
    regions = [body, first_wheel, second, wall]
    shared = np.zeros((4, 4))
    shared[0, 1] = shared[1, 0] = 32.0
    shared[2, 0] = shared[0, 2] = shared[2, 3] = shared[3, 2] = 16.0
    state = Assignment(
        [body | first_wheel, wall | second],
        regions,
        np.array([0, 0, 1, 1]),
        shared,
        [0.5 * np.count_nonzero(body | first_wheel), 0.5 * np.count_nonzero(wall | second)],
    )
    # the wall without the wheel has a notch, the vehicle with it a wheel sticking out
    before = convex_deficiency(state.leaves[0]) + convex_deficiency(state.leaves[1])
    after = convex_deficiency(wall) + convex_deficiency(body | first_wheel | second)
    assert after > before
    tie_moves(state, TieRules(1.0, 0.25, 0.15), max_rounds=4)
    return state.owner.tolist()


def test_a_tie_moves_to_the_leaf_holding_its_twin() -> None:
    assert wheel_on_wall(rect(40, 56, 15, 31)) == [0, 0, 0, 1]
    # a 20 x 20 first wheel (56 % larger) is no twin, and convexity keeps the second in place
    assert wheel_on_wall(rect(40, 60, 15, 35)) == [0, 0, 1, 1]

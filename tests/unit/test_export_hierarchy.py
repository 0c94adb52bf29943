"""Part/whole parents by containment: generated nested scenes, ties, near duplicates, forests."""

from __future__ import annotations

import numpy as np
import pytest

from core_model.masks import encode_coco_rle
from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.export import ExportError, assign_parents, build_forest, containment_matrix


def _rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def nested_scene(seed: int, h: int = 120, w: int = 160):
    """Wholes (rectangles) holding parts (rectangles or discs) holding sub-parts (discs).

    Returns (masks, parent index per mask or None), in shuffled order.
    """
    rng = np.random.default_rng(seed)
    masks, parents = [], []
    for column in range(2):  # two wholes side by side
        x0, x1 = 5 + column * 78, 73 + column * 78
        masks.append(_rect(h, w, 5, x0, 115, x1))
        parents.append(None)
        whole = len(masks) - 1
        for row in range(2):  # two parts stacked inside
            y0 = 10 + row * 52
            if rng.random() < 0.5:
                part = _rect(h, w, y0, x0 + 4, y0 + 46, x1 - 4)
                cy, cx, r = y0 + 23, (x0 + x1) / 2, 12 + 6 * rng.random()
            else:
                part = _disc(h, w, y0 + 23, (x0 + x1) / 2, 22)
                cy, cx, r = y0 + 23, (x0 + x1) / 2, 8 + 6 * rng.random()
            masks.append(part)
            parents.append(whole)
            masks.append(_disc(h, w, cy, cx, r))  # a sub-part
            parents.append(len(masks) - 2)
    order = rng.permutation(len(masks))
    where = {int(old): new for new, old in enumerate(order)}
    shuffled = [masks[i] for i in order]
    truth = [None if parents[i] is None else where[parents[i]] for i in order]
    return shuffled, truth


def _parents(masks, ids=None, threshold=0.9):
    ids = list(ids or range(1, len(masks) + 1))
    rles = [encode_coco_rle(m) for m in masks]
    return assign_parents(rles, [int(m.sum()) for m in masks], ids, threshold=threshold)


@pytest.mark.parametrize("seed", range(6))
def test_generated_nested_scenes_get_the_true_parents(seed: int) -> None:
    masks, truth = nested_scene(seed)
    ids = [10 * (k + 1) for k in range(len(masks))]
    parents = _parents(masks, ids)
    assert parents == [None if t is None else ids[t] for t in truth]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_scene_parts_point_to_their_whole(seed: int) -> None:
    scene = generate_scene(seed, SceneConfig(height=128, width=160, clutter_count=4))
    regions = scene.regions
    parents = _parents([r.mask for r in regions], [r.region_id for r in regions])
    assert parents == [r.parent_id for r in regions]


def test_containment_matrix_is_the_fraction_inside() -> None:
    a = _rect(20, 20, 0, 0, 10, 10)  # 100 px
    b = _rect(20, 20, 0, 5, 10, 20)  # 150 px, overlap 50
    matrix = containment_matrix([encode_coco_rle(a), encode_coco_rle(b)])
    np.testing.assert_allclose(matrix, [[1.0, 0.5], [50 / 150, 1.0]])
    assert containment_matrix([]).shape == (0, 0)


def test_threshold_and_smallest_container() -> None:
    inner = _rect(40, 40, 10, 10, 20, 20)  # 100 px
    small_box = _rect(40, 40, 9, 9, 21, 21)  # contains all of it
    big_box = _rect(40, 40, 0, 0, 40, 40)
    assert _parents([inner, big_box, small_box]) == [3, None, 2]
    # 91 of 100 pixels inside -> parent at 0.9, none at 0.95
    partial = _rect(40, 40, 0, 0, 40, 40)
    partial[19, 11:20] = False
    assert _parents([inner, partial], threshold=0.9) == [2, None]
    assert _parents([inner, partial], threshold=0.95) == [None, None]


def test_equal_area_duplicates_do_not_form_cycles() -> None:
    mask = _rect(30, 30, 5, 5, 15, 15)
    # three identical masks: the lower id is the parent of the higher ones, never both ways
    assert _parents([mask, mask, mask], [7, 3, 5]) == [3, None, 3]
    # equal area, overlapping >= 90 % both ways
    shifted = _rect(30, 30, 5, 6, 15, 16)
    assert _parents([mask, shifted], [1, 2], threshold=0.9) == [None, 1]


def test_near_duplicates_the_larger_is_the_parent() -> None:
    larger = _rect(50, 50, 0, 0, 10, 11)  # 110 px
    smaller = _rect(50, 50, 0, 0, 10, 10)  # 100 px: each contains >= 90 % of the other
    assert _parents([larger, smaller], [1, 2]) == [None, 1]
    assert _parents([smaller, larger], [1, 2]) == [2, None]


def test_random_masks_make_a_forest() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((24, 24)) < p for p in rng.uniform(0.3, 0.99, size=25)]
    masks += [masks[3].copy(), masks[3] | masks[4]]
    ids = list(range(1, len(masks) + 1))
    parents = dict(zip(ids, _parents(masks, ids, threshold=0.5), strict=True))
    for start in ids:  # following parents always ends at a root
        seen, node = set(), start
        while node is not None:
            assert node not in seen
            seen.add(node)
            node = parents[node]


def test_build_forest_nests_children_in_id_order() -> None:
    nodes = [{"id": i, "label": f"r{i}"} for i in (4, 1, 3, 2)]
    forest = build_forest(nodes, [1, None, 1, 3])
    assert [n["id"] for n in forest] == [1]
    assert [c["id"] for c in forest[0]["children"]] == [3, 4]
    assert forest[0]["children"][0]["children"][0]["id"] == 2
    assert nodes[0] == {"id": 4, "label": "r4"}  # inputs untouched


def test_bad_arguments_raise() -> None:
    mask = encode_coco_rle(_rect(8, 8, 0, 0, 4, 4))
    with pytest.raises(ExportError, match="distinct"):
        assign_parents([mask, mask], [16, 16], [1, 1])
    with pytest.raises(ExportError, match="threshold"):
        assign_parents([mask], [16], [1], threshold=0.0)
    with pytest.raises(ExportError, match="same length"):
        assign_parents([mask], [16, 3], [1])

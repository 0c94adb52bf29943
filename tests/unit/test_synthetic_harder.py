"""The harder scene style: ground truth is exactly the visible pixels, of consistent wholes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from labeling_pipeline.evaluation.synthetic_harder import HarderSceneConfig, generate_harder_scene

SMALL = HarderSceneConfig(long_side_px=(200, 260), clutter_count=10)


@pytest.fixture(scope="module")
def scenes():
    return [generate_harder_scene(seed, SMALL) for seed in range(6)]


def test_same_seed_same_scene() -> None:
    a, b = generate_harder_scene(3, SMALL), generate_harder_scene(3, SMALL)
    assert np.array_equal(a.image, b.image)
    assert [o.mask.sum() for o in a.objects] == [o.mask.sum() for o in b.objects]
    assert not np.array_equal(a.image[:50, :50], generate_harder_scene(4, SMALL).image[:50, :50])


def test_sizes_and_both_orientations() -> None:
    shapes = {generate_harder_scene(seed, SMALL).image.shape for seed in range(12)}
    for height, width, channels in shapes:
        assert channels == 3
        assert 200 <= max(height, width) <= 260
        assert min(height, width) == max(height, width) * 3 // 4
    assert any(h > w for h, w, _ in shapes) and any(w > h for h, w, _ in shapes)


def test_wholes_are_one_visible_piece_and_disjoint(scenes) -> None:
    for scene in scenes:
        assert scene.objects
        owner = np.zeros(scene.image.shape[:2], dtype=np.int32)
        for obj in scene.objects:
            count, _ = cv2.connectedComponents(obj.mask.astype(np.uint8), connectivity=4)
            assert count == 2  # background + one piece
            assert not (owner[obj.mask] > 0).any()  # visible pixels belong to one object
            owner[obj.mask] = obj.object_id


def test_parts_are_visible_pixels_inside_their_whole(scenes) -> None:
    for scene in scenes:
        for obj in scene.objects:
            assert 2 <= len(obj.parts) <= 11
            union = np.zeros_like(obj.mask)
            for part in obj.parts:
                assert part.mask.sum() >= SMALL.min_part_px
                assert not (part.mask & ~obj.mask).any()
                assert not (union & part.mask).any()  # parts of one object do not overlap
                union |= part.mask
            # a part hidden below min_part_px leaves its few pixels to the whole only
            assert (obj.mask & ~union).sum() <= SMALL.min_part_px * 11


def test_occlusion_removes_hidden_pixels_from_the_ground_truth() -> None:
    config = HarderSceneConfig(long_side_px=(240, 240), min_objects=4, max_objects=4)
    scenes = [generate_harder_scene(seed, config) for seed in range(8)]
    ids = {r.region_id for s in scenes for r in s.regions}
    assert len(ids) > 4
    # some scene has two objects whose boxes overlap while their masks stay disjoint
    overlapped = False
    for scene in scenes:
        boxes = [cv2.boundingRect(o.mask.astype(np.uint8)) for o in scene.objects]
        for i, (x0, y0, w0, h0) in enumerate(boxes):
            for x1, y1, w1, h1 in boxes[i + 1 :]:
                if x0 < x1 + w1 and x1 < x0 + w0 and y0 < y1 + h1 and y1 < y0 + h0:
                    overlapped = True
    assert overlapped


@pytest.mark.parametrize(
    "kwargs",
    [{"long_side_px": (100, 90)}, {"min_objects": 3, "max_objects": 2}, {"shapes": ("blob",)},
     {"jpeg_quality": (90, 70)}],
)  # fmt: skip
def test_bad_config_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        HarderSceneConfig(**kwargs)

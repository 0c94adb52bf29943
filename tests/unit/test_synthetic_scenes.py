"""The synthetic part/whole scene generator: determinism, shapes and ground-truth invariants."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from labeling_pipeline.evaluation.synthetic import (
    SHAPES,
    SceneConfig,
    generate_scene,
    generate_scenes,
)


@pytest.fixture(scope="module")
def scenes():
    return list(generate_scenes(8, seed=100))


def test_same_seed_same_scene() -> None:
    a, b = generate_scene(3), generate_scene(3)
    assert np.array_equal(a.image, b.image)
    assert [o.shape for o in a.objects] == [o.shape for o in b.objects]
    assert not np.array_equal(a.image, generate_scene(4).image)


def test_image_and_mask_types(scenes) -> None:
    for scene in scenes:
        assert scene.image.shape == (256, 320, 3) and scene.image.dtype == np.uint8
        wholes, parts = scene.masks()
        assert wholes.dtype == bool and wholes.shape[1:] == (256, 320)
        assert parts.shape[0] == sum(len(o.parts) for o in scene.objects)


def test_whole_is_union_of_disjoint_parts(scenes) -> None:
    for scene in scenes:
        for obj in scene.objects:
            assert 2 <= len(obj.parts) <= 4
            stacked = np.stack([p.mask for p in obj.parts]).astype(np.int32)
            assert stacked.sum(axis=0).max() == 1  # parts do not overlap
            assert np.array_equal(stacked.sum(axis=0) > 0, obj.mask)
            for part in obj.parts:
                count, _ = cv2.connectedComponents(part.mask.astype(np.uint8), connectivity=8)
                assert count == 2  # one connected region (+ background)


def test_objects_are_large_separated_and_inside(scenes) -> None:
    config = SceneConfig()
    area = config.height * config.width
    for scene in scenes:
        assert 1 <= len(scene.objects) <= config.max_objects
        for obj in scene.objects:
            assert obj.mask.sum() >= config.min_object_area_fraction * area
            assert obj.shape in SHAPES
            assert not obj.mask[0].any() and not obj.mask[-1].any()
            assert not obj.mask[:, 0].any() and not obj.mask[:, -1].any()
        kernel = np.ones((config.margin_px // 2 * 2 + 1,) * 2, np.uint8)
        grown = [cv2.dilate(o.mask.astype(np.uint8), kernel) > 0 for o in scene.objects]
        for i in range(len(grown)):
            for j in range(i + 1, len(grown)):
                assert not (grown[i] & scene.objects[j].mask).any()


def test_parts_of_an_object_differ_in_colour(scenes) -> None:
    for scene in scenes:
        for obj in scene.objects:
            means = [scene.image[p.mask].reshape(-1, 3).mean(axis=0) for p in obj.parts]
            for i in range(len(means)):
                for j in range(i + 1, len(means)):
                    assert np.abs(means[i] - means[j]).max() > 20


def test_regions_have_unique_ids_and_parents(scenes) -> None:
    for scene in scenes:
        regions = scene.regions
        ids = [r.region_id for r in regions]
        assert len(ids) == len(set(ids))
        wholes = {r.region_id for r in regions if not r.is_part}
        assert wholes == {o.object_id for o in scene.objects}
        for r in regions:
            assert (r.parent_id in wholes) if r.is_part else r.parent_id is None


def test_custom_size_and_shapes() -> None:
    config = SceneConfig(height=200, width=150, shapes=("rings",), min_objects=1, max_objects=1)
    scene = generate_scene(0, config)
    assert scene.image.shape == (200, 150, 3)
    assert all(o.shape == "rings" for o in scene.objects)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 32},
        {"min_objects": 3, "max_objects": 2},
        {"object_size_fraction": (0.6, 0.3)},
        {"shapes": ("blob",)},
    ],
)
def test_bad_config_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        SceneConfig(**kwargs)

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from core_model.errors import InvalidMaskError
from core_model.masks import (
    coco_rle_area,
    coco_rle_bbox,
    decode_coco_rle,
    encode_coco_rle,
    encode_coco_rle_batch,
    encode_coco_rle_placed,
)
from core_model.masks.coco import _string_counts


def _random_masks(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, h, w)) > rng.uniform(0.05, 0.95, size=(n, 1, 1))


def test_round_trip_and_agreement_with_pycocotools() -> None:
    masks = _random_masks(20, 31, 47)
    rles = encode_coco_rle_batch(masks)
    for mask, rle in zip(masks, rles, strict=True):
        assert rle["size"] == [31, 47] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(decode_coco_rle(rle), mask)
        reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle["counts"].encode() == reference["counts"]
        assert coco_rle_area(rle) == int(mask.sum())
        assert coco_rle_bbox(rle) == pytest.approx(mask_utils.toBbox(reference).tolist())


def test_counts_string_parser_matches_pycocotools_runs() -> None:
    for mask in _random_masks(10, 64, 80, seed=3):
        rle = encode_coco_rle(mask)
        runs = _string_counts(rle["counts"])
        assert sum(runs) == 64 * 80
        as_uncompressed = mask_utils.frPyObjects({"size": [64, 80], "counts": runs}, 64, 80)
        assert as_uncompressed["counts"].decode() == rle["counts"]


def test_uncompressed_counts_and_bytes_counts_are_accepted() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    rle = encode_coco_rle(mask)
    runs = _string_counts(rle["counts"])
    np.testing.assert_array_equal(decode_coco_rle({"size": [4, 5], "counts": runs}), mask)
    np.testing.assert_array_equal(
        decode_coco_rle({"size": [4, 5], "counts": rle["counts"].encode()}), mask
    )
    assert coco_rle_bbox(rle) == [2.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize(
    "bad",
    [
        {"counts": "abc"},
        {"size": [4, 5]},
        {"size": [4], "counts": [20]},
        {"size": [0, 5], "counts": []},
        {"size": [4, 5], "counts": [10, 5]},  # covers 15 pixels, not 20
        {"size": [4, 5], "counts": [25, -5]},
        {"size": [4, 5], "counts": [10.0, 10.0]},
        {"size": [4, 5], "counts": "~~~"},  # characters outside '0'..'o'
        {"size": [4, 5], "counts": "0P"},  # continuation bit set on the last character
        {"size": [2000, 2000], "counts": "Ym0"},  # far too few pixels for the size
        {"size": [4, 5], "counts": 7},
        "not a dict",
    ],
)
def test_malformed_rle_is_rejected_before_decoding(bad: object) -> None:
    with pytest.raises(InvalidMaskError):
        decode_coco_rle(bad)  # type: ignore[arg-type]


def test_encode_rejects_wrong_dimensions() -> None:
    with pytest.raises(InvalidMaskError):
        encode_coco_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(InvalidMaskError):
        encode_coco_rle_batch(np.zeros((0, 3, 4), bool))


def test_placed_crop_encodes_like_the_full_mask() -> None:
    rng = np.random.default_rng(3)
    for top_left, crop_hw in (((0, 0), (31, 47)), ((5, 9), (10, 20)), ((30, 46), (1, 1))):
        crop = rng.random(crop_hw) > 0.5
        full = np.zeros((31, 47), dtype=bool)
        full[top_left[0] : top_left[0] + crop_hw[0], top_left[1] : top_left[1] + crop_hw[1]] = crop
        assert encode_coco_rle_placed(crop.astype(np.uint8) * 7, top_left, (31, 47)) == (
            encode_coco_rle(full)
        )


@pytest.mark.parametrize(
    ("crop_hw", "top_left"), [((4, 4), (28, 0)), ((4, 4), (0, 44)), ((4, 4), (-1, 0))]
)
def test_placed_crop_must_lie_inside_the_mask(
    crop_hw: tuple[int, int], top_left: tuple[int, int]
) -> None:
    with pytest.raises(InvalidMaskError):
        encode_coco_rle_placed(np.ones(crop_hw, dtype=bool), top_left, (31, 47))

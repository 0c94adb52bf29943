"""Tracker requests as CVAT sends them, and shapes to and from masks (CVAT's own mask codec)."""

from __future__ import annotations

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask

from core_model.errors import InvalidPromptError
from ml_backend.cvat.tracker_shapes import (
    TrackedShape,
    decode_cvat_mask,
    encode_cvat_mask,
    encode_shape,
    parse_request,
    polygon_mask,
    rectangle_box,
)
from ml_backend.errors import BadRequestError


def test_the_uis_first_and_next_calls_parse() -> None:
    # first call for two boxes: no states at all (CVAT sends states: [])
    first = parse_request({"image": "x", "shapes": [[1, 2, 30, 40], [5, 5, 9, 9]]}, max_shapes=4)
    assert first.shapes == (
        TrackedShape("rectangle", (1, 2, 30, 40)),
        TrackedShape("rectangle", (5, 5, 9, 9)),
    )
    assert first.states == (None, None)
    later = parse_request(
        {"image": "x", "shapes": [[1, 2, 30, 40], [5, 5, 9, 9]], "states": ["k1", None]},
        max_shapes=4,
    )
    assert later.states == ("k1", None)


def test_polygons_masks_and_odd_states_parse() -> None:
    body = {
        "image": "x",
        "shapes": [
            [0, 0, 10, 0, 10, 10],
            {"type": "Polygon", "points": [0, 0, 10, 0, 10, 10, 0, 10]},
            {"type": "mask", "points": [0, 4, 0, 0, 1, 1]},
            {"type": "rectangle", "points": [3, 3, 1, 1], "occluded": False},
        ],
        "states": [{"an": "object"}, "", 7],  # not a key: start again; one state missing
    }
    request = parse_request(body, max_shapes=4)
    assert [s.type for s in request.shapes] == ["polygon", "polygon", "mask", "rectangle"]
    assert [s.typed for s in request.shapes] == [False, True, True, True]
    assert request.states == (None, None, None, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"shapes": [[1, 2, 3, 4]]}, "image"),
        ({"image": "x", "shapes": "box"}, "shapes"),
        ({"image": "x", "shapes": [[1, 2, 3]]}, "3 numbers"),
        ({"image": "x", "shapes": [[1, 2, 3, 4, 5, 6, 7]]}, "7 numbers"),
        ({"image": "x", "shapes": [[1, 2, 3, float("nan")]]}, "shapes"),
        ({"image": "x", "shapes": [["a", 2, 3, 4]]}, "shapes"),
        ({"image": "x", "shapes": [{"type": "ellipse", "points": [1, 2, 3, 4]}]}, "'ellipse'"),
        ({"image": "x", "shapes": [{"type": "rectangle", "points": [1, 2]}]}, "== 4"),
        ({"image": "x", "shapes": [{"type": "polygon", "points": [1, 2, 3, 4]}]}, ">= 6"),
        ({"image": "x", "shapes": [[0, 0, 1, 1]] * 5}, "at most 4 shapes"),
        ([1, 2], "tracker request"),
    ],
)
def test_bad_requests_are_one_line_400s(body, message) -> None:
    with pytest.raises(BadRequestError, match=message) as caught:
        parse_request(body, max_shapes=4)
    assert "\n" not in str(caught.value)


def test_masks_round_trip_with_cvats_codec() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((23, 31), dtype=bool)
        y, x = rng.integers(0, 20), rng.integers(0, 28)
        mask[y : y + rng.integers(1, 8), x : x + rng.integers(1, 8)] = True
        mask &= rng.random(mask.shape) > 0.3
        if not mask.any():
            continue
        points = encode_cvat_mask(mask)
        assert points == [int(v) for v in encode_mask(mask)]  # what cvat-sdk writes
        assert np.array_equal(decode_mask(points, image_width=31, image_height=23), mask)
        assert np.array_equal(decode_cvat_mask(points, 23, 31), mask)
    assert encode_cvat_mask(np.zeros((4, 4), dtype=bool)) is None


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([1, 2, 0, 0, 1, 1], "cover 3 pixels"),  # box has 4
        ([4, 0, 0, 1, 40], "reaches past"),
        ([4, 2, 2, 0, 0], "xtl <= xbr"),
        ([4, 0.5, 0, 1, 1], "whole pixels"),
        ([-1, 5, 0, 0, 1, 1], "runs"),
    ],
)
def test_malformed_masks_are_refused(points, message) -> None:
    with pytest.raises(BadRequestError, match=message):
        decode_cvat_mask(points, 10, 10)


def test_rectangles_and_polygons_become_clipped_boxes() -> None:
    box = rectangle_box(TrackedShape("rectangle", (30, 40, -5, 2)), 20, 25)
    assert box.tolist() == [0, 2, 25, 20]
    polygon = TrackedShape("polygon", (2, 3, 8, 3, 5, 9))
    assert rectangle_box(polygon, 20, 25).tolist() == [2, 3, 8, 9]
    with pytest.raises(InvalidPromptError, match="no area on the 25x20 frame"):
        rectangle_box(TrackedShape("rectangle", (30, 30, 40, 40)), 20, 25)
    inside = polygon_mask(TrackedShape("polygon", (2, 2, 6, 2, 6, 6, 2, 6)), 10, 10)
    assert inside.sum() == 25 and inside[2:7, 2:7].all()


def test_replies_keep_the_request_shapes_type_and_form() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:10, 5:15] = True
    rectangle = encode_shape(mask, TrackedShape("rectangle", (0, 0, 1, 1)))
    assert rectangle == [5.0, 4.0, 15.0, 10.0]
    polygon = encode_shape(mask, TrackedShape("polygon", (0, 0, 1, 0, 1, 1), typed=True))
    assert polygon["type"] == "polygon" and len(polygon["points"]) >= 6
    xy = np.array(polygon["points"]).reshape(-1, 2)
    assert xy[:, 0].min() == 5 and xy[:, 1].min() == 4
    typed_mask = encode_shape(mask, TrackedShape("mask", (1, 0, 0, 0, 0), typed=True))
    assert typed_mask["type"] == "mask"
    assert np.array_equal(decode_mask(typed_mask["points"], image_width=30, image_height=20), mask)
    # nothing found: the request's shape comes back as it was
    given = TrackedShape("rectangle", (1, 2, 3, 4), typed=True)
    assert encode_shape(np.zeros((20, 30), dtype=bool), given) == {
        "type": "rectangle",
        "points": [1, 2, 3, 4],
    }

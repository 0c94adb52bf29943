from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask
from PIL import Image

from core_model.errors import InvalidImageError, InvalidPromptError
from ml_backend.cvat import codec
from ml_backend.errors import BadRequestError


def png_b64(image: np.ndarray) -> str:
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format="PNG")
    return base64.b64encode(stream.getvalue()).decode()


def test_image_is_keyed_by_file_content_and_decoded_lazily(scene_image) -> None:
    body = {"image": png_b64(scene_image)}
    key, load = codec.decode_image(body, max_pixels=10_000_000)
    again, _ = codec.decode_image(dict(body), max_pixels=10_000_000)
    other, _ = codec.decode_image({"image": png_b64(scene_image[::-1])}, max_pixels=10_000_000)
    assert key == again != other and key.startswith("file:")
    assert np.array_equal(load(), scene_image)
    _, too_big = codec.decode_image(body, max_pixels=96 * 128 - 1)
    with pytest.raises(InvalidImageError, match="more than the limit"):
        too_big()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "no 'image'"),
        ({"image": 5}, "no 'image'"),
        ({"image": "  "}, "no 'image'"),
        ({"image": "not base64!"}, "not valid base64"),
        ({"image": "===="}, "not valid base64"),
    ],
)
def test_bad_images_are_bad_requests(body, message) -> None:
    with pytest.raises(BadRequestError, match=message):
        codec.decode_image(body, max_pixels=100)


def test_undecodable_file_fails_when_loaded() -> None:
    _, load = codec.decode_image({"image": base64.b64encode(b"no image").decode()}, max_pixels=9)
    with pytest.raises(InvalidImageError, match="cannot decode"):
        load()


FRAME = {"height": 48, "width": 64}


def test_prompts_from_cvat_points_and_box() -> None:
    prompts = codec.decode_prompts(
        {"pos_points": [[10, 20.5], [3, 4]], "neg_points": [[7, 8]], "obj_bbox": None}, **FRAME
    )
    assert [(p.x, p.y, p.label) for p in prompts.points] == [
        (10, 20.5, 1),
        (3, 4, 1),
        (7, 8, 0),
    ]
    assert prompts.box is None
    boxed = codec.decode_prompts(
        {"pos_points": [], "neg_points": [], "obj_bbox": [[50, 9], [5, 40]]}, **FRAME
    )
    assert boxed.points == () and tuple(boxed.box.as_array()) == (5, 9, 50, 40)
    assert codec.decode_prompts({"pos_points": [[1, 1]], "obj_bbox": []}, **FRAME).box is None


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({"pos_points": [[1, 2, 3]]}, BadRequestError, "pos_points"),
        ({"pos_points": "here"}, BadRequestError, "pos_points"),
        ({"neg_points": [[1, float("nan")]], "pos_points": [[1, 1]]}, BadRequestError, "finite"),
        ({"obj_bbox": [[1, 2]]}, BadRequestError, "obj_bbox"),
        ({"obj_bbox": [[1, 2], [1, 9]]}, InvalidPromptError, "no area on the 64x48 image"),
        ({"obj_bbox": [[70, 2], [90, 9]]}, InvalidPromptError, "no area on the 64x48 image"),
        ({"pos_points": [], "neg_points": [], "obj_bbox": None}, InvalidPromptError, "empty"),
        ({"pos_points": [[64.5, 3]]}, InvalidPromptError, "outside the 64x48 image"),
        ({"pos_points": [[3, 3]], "neg_points": [[3, -0.1]]}, InvalidPromptError, "outside"),
    ],
)
def test_bad_prompts_are_rejected(body, error, message) -> None:
    with pytest.raises(error, match=message):
        codec.decode_prompts(body, **FRAME)


def test_threshold() -> None:
    assert codec.decode_threshold({}) is None
    assert codec.decode_threshold({"threshold": 0.4}) == 0.4
    assert codec.decode_threshold({"threshold": "0.5"}) == 0.5
    for bad in (1.5, -0.1, "high", [1]):
        with pytest.raises(BadRequestError, match="threshold"):
            codec.decode_threshold({"threshold": bad})


def blob_mask() -> np.ndarray:
    mask = np.zeros((12, 16), dtype=bool)
    mask[3:7, 5:11] = True
    mask[6, 4] = True
    return mask


def test_interactor_reply_is_the_crop_and_its_inclusive_bounds() -> None:
    mask = blob_mask()
    prompts = codec.decode_prompts({"pos_points": [[6, 4]]}, height=12, width=16)
    reply = codec.interactor_reply(mask, prompts)
    assert reply["bounds"] == [4, 3, 10, 6]
    xtl, ytl, xbr, ybr = reply["bounds"]
    assert np.array_equal(np.array(reply["mask"], dtype=bool), mask[ytl : ybr + 1, xtl : xbr + 1])
    assert set(np.unique(reply["mask"])) == {0, 1}
    # CVAT's own tight box of the mask is the same
    assert encode_mask(mask)[-4:] == reply["bounds"]


def test_empty_interactor_mask_is_one_background_pixel_at_the_click() -> None:
    empty = np.zeros((12, 16), dtype=bool)
    size = {"height": 12, "width": 16}
    clicked = codec.decode_prompts({"pos_points": [[15.9, 3.2]]}, **size)
    reply = codec.interactor_reply(empty, clicked)
    assert reply["mask"] == [[0]] and reply["bounds"] == [15, 3, 15, 3]
    assert reply["points"] == []  # CVAT's UI then skips its outline step and draws nothing
    assert "no object found" in reply["message"]
    boxed = codec.decode_prompts({"obj_bbox": [[2, 5], [9, 11]]}, **size)
    assert codec.interactor_reply(empty, boxed)["bounds"] == [2, 5, 2, 5]


def test_detector_shape_is_cvat_mask_encoding_plus_polygon() -> None:
    mask = blob_mask()
    shape = codec.detector_shape(mask, 0.8712, label="object")
    assert (shape["label"], shape["type"], shape["confidence"]) == ("object", "mask", "0.87")
    *values, xtl, ytl, xbr, ybr = shape["mask"]
    assert [xtl, ytl, xbr, ybr] == [4, 3, 10, 6]
    crop = np.array(values, dtype=bool).reshape(ybr - ytl + 1, xbr - xtl + 1)
    full = np.zeros_like(mask)
    full[ytl : ybr + 1, xtl : xbr + 1] = crop
    assert np.array_equal(full, mask)
    # CVAT keeps the polygon when asked to convert masks to polygons: flat x, y pairs inside
    points = np.array(shape["points"]).reshape(-1, 2)
    assert len(points) >= 3
    assert points[:, 0].min() >= xtl and points[:, 0].max() <= xbr
    assert points[:, 1].min() >= ytl and points[:, 1].max() <= ybr
    assert codec.detector_shape(np.zeros_like(mask), 0.9, label="object") is None


def test_detector_shape_without_polygon_keeps_only_the_mask() -> None:
    dot = np.zeros((5, 5), dtype=bool)
    dot[2, 2] = True
    shape = codec.detector_shape(dot, 0.5, label="object")
    assert shape["mask"] == [1, 2, 2, 2, 2] and "points" not in shape
    assert np.array_equal(decode_mask([0, 1, 2, 2, 2, 2], image_width=5, image_height=5), dot)

"""Interactor replies replayed through CVAT's UI steps; frame sizes and box clipping."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask
from cvat_ui import UiError, interaction_step
from PIL import Image

from core_model.errors import InvalidImageError
from ml_backend.cvat import codec

H, W = 12, 16


def reply_for(mask: np.ndarray, click: tuple[float, float] = (3.0, 4.0)) -> dict:
    prompts = codec.decode_prompts({"pos_points": [list(click)]}, height=H, width=W)
    return codec.interactor_reply(mask, prompts)


def decoded(rle: list[int]) -> np.ndarray:
    return decode_mask(rle, image_width=W, image_height=H)


def test_an_empty_mask_reply_passes_the_ui_and_draws_nothing() -> None:
    result = interaction_step(reply_for(np.zeros((H, W), dtype=bool), click=(15.5, 11.9)))
    assert not result.drawn
    assert not decoded(result.rle).any()
    # the shape answered before: the UI finds no contour and throws
    with pytest.raises(UiError, match="reading 'reduce'"):
        interaction_step({"mask": [[0]], "bounds": [15, 11, 15, 11]})


@pytest.mark.parametrize("where", [(0, 0), (7, 5), (W - 1, H - 1)])
def test_a_one_pixel_mask_is_outlined_around_that_pixel(where) -> None:
    x, y = where
    mask = np.zeros((H, W), dtype=bool)
    mask[y, x] = True
    result = interaction_step(reply_for(mask))
    assert result.drawn
    assert np.array_equal(decoded(result.rle), mask)
    outline = np.array(result.outline)
    assert outline[:, 0].min() == x and outline[:, 1].min() == y
    assert outline[:, 0].max() <= x + 1 and outline[:, 1].max() <= y + 1


def test_a_full_frame_mask_is_outlined_along_the_frame() -> None:
    mask = np.ones((H, W), dtype=bool)
    reply = reply_for(mask)
    assert reply["bounds"] == [0, 0, W - 1, H - 1] and "points" not in reply
    result = interaction_step(reply)
    assert np.array_equal(decoded(result.rle), mask)
    outline = np.array(result.outline)
    assert (outline.min(axis=0) == (0, 0)).all() and (outline.max(axis=0) == (W, H)).all()


def test_a_blob_outline_is_shifted_by_the_bounds() -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[3:7, 5:11] = True
    result = interaction_step(reply_for(mask))
    assert np.array_equal(decoded(result.rle), mask)
    outline = np.array(result.outline)
    assert (outline.min(axis=0) == (5, 3)).all() and (outline.max(axis=0) == (11, 7)).all()


# ----------------------------------------------------------------- boxes past the frame


def box_of(body: dict) -> tuple[float, ...] | None:
    box = codec.decode_prompts(body, height=768, width=1024).box
    return None if box is None else tuple(float(v) for v in box.as_array())


def test_a_box_dragged_past_the_edge_is_clipped() -> None:
    # the drag CVAT's UI sent past the bottom-right corner of a 1024 x 768 frame
    assert box_of({"obj_bbox": [[819.2, 614.4], [1064, 798]]}) == pytest.approx(
        (819.2, 614.4, 1024, 768)
    )
    assert box_of({"obj_bbox": [[-30, 700], [40, -5]]}) == (0, 0, 40, 700)


def test_a_box_with_nothing_left_on_the_frame_counts_as_no_box() -> None:
    outside = {"pos_points": [[10, 10]], "obj_bbox": [[1030, 10], [1100, 50]]}
    assert box_of(outside) is None
    flat = {"pos_points": [[10, 10]], "obj_bbox": [[20, 768], [40, 900]]}
    assert box_of(flat) is None
    assert box_of({"pos_points": [[10, 10]], "obj_bbox": [[5, 5], [5, 50]]}) is None


# ----------------------------------------------------------------- frame size from the header


def encoded(image: Image.Image, fmt: str, **save: object) -> dict[str, str]:
    stream = io.BytesIO()
    image.save(stream, format=fmt, **save)
    return {"image": base64.b64encode(stream.getvalue()).decode()}


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_frame_size_matches_the_decoded_pixels(orientation) -> None:
    image = Image.new("RGB", (40, 24), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    frame = codec.decode_frame(encoded(image, "JPEG", exif=exif.tobytes()), max_pixels=10_000)
    assert frame.size() == frame.load().shape[:2]
    assert frame.size() == ((40, 24) if orientation in (6, 8) else (24, 40))


def test_frame_size_of_a_png_and_its_limits() -> None:
    body = encoded(Image.new("RGB", (40, 24)), "PNG")
    assert codec.decode_frame(body, max_pixels=960).size() == (24, 40)
    with pytest.raises(InvalidImageError, match="more than the limit 959"):
        codec.decode_frame(body, max_pixels=959).size()
    garbage = {"image": base64.b64encode(b"GIF89a broken").decode()}
    with pytest.raises(InvalidImageError, match="cannot decode"):
        codec.decode_frame(garbage, max_pixels=960).size()
    # a header claiming 40000 x 40000 pixels: refused from the header alone
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr
    idat = struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))
    data = header + struct.pack(">I", zlib.crc32(ihdr)) + idat
    bomb = {"image": base64.b64encode(data).decode()}
    with pytest.raises(InvalidImageError, match="limit 960"):
        codec.decode_frame(bomb, max_pixels=960).size()


def test_reason_phrases_are_short_printable_ascii() -> None:
    from ml_backend.cvat.dashboard import MAX_REASON_CHARS, reason_phrase

    assert (
        reason_phrase("point (5.0, 1.0) lies outside") == "UnSAMv2: point (5.0, 1.0) lies outside"
    )
    long = reason_phrase("granularité\r\nHost: evil " * 40)
    assert long.isascii() and long.isprintable() and "\r" not in long
    assert len(long) == MAX_REASON_CHARS and long.endswith("...")

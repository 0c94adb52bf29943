"""Label Studio brush RLE: byte equality with the SDK's encoder, and decoding."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle as sdk_decode
from label_studio_sdk.converter.brush import mask2rle as sdk_encode

from core_model.errors import InvalidMaskError
from core_model.masks import brush_rle_to_mask, decode_brush_rle, encode_brush_rle


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8) * 255


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [
        np.zeros((1, 1), np.uint8),
        np.full((1, 1), 255, np.uint8),
        np.zeros((7, 9), np.uint8),
        np.full((300, 300), 255, np.uint8),  # one run of 360000 values: several 65536 chunks
        (rng.random((64, 48)) > 0.5).astype(np.uint8) * 255,  # many 4-long runs
        rng.integers(0, 256, (17, 23), dtype=np.uint8),  # arbitrary values, not only 0/255
        _disc(480, 640, 200, 300, 120),
        _disc(33, 1000, 16, 500, 15),
    ]
    # runs whose repeated length (4 x pixels) hits every field-width boundary: 8, 16, 256, 65536
    for pixels in (1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32768, 32769):
        row = np.zeros(pixels + 3, np.uint8)
        row[1 : 1 + pixels] = 255
        masks.append(row[None])
    return masks


@pytest.mark.parametrize("mask", _masks(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_encoder_is_byte_identical_to_the_sdk(mask: np.ndarray) -> None:
    ours = encode_brush_rle(mask)
    assert ours == sdk_encode(mask)
    assert all(isinstance(b, int) and 0 <= b <= 255 for b in ours)
    decoded_by_sdk = sdk_decode(ours).reshape(mask.shape[0], mask.shape[1], 4)[:, :, 3]
    np.testing.assert_array_equal(decoded_by_sdk, mask)
    np.testing.assert_array_equal(
        decode_brush_rle(ours, height=mask.shape[0], width=mask.shape[1]), mask
    )


def test_bool_masks_are_written_as_0_255() -> None:
    mask = _disc(40, 50, 20, 25, 10) > 0
    assert encode_brush_rle(mask) == sdk_encode(mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(
        brush_rle_to_mask(encode_brush_rle(mask), height=40, width=50), mask
    )


def _pack_bits(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def test_decoder_reads_multi_value_literal_chunks_like_the_frontend_writes() -> None:
    """The frontend's encoder (thi.ng rle-pack) emits literal chunks; the SDK's never does."""
    h, w = 2, 3
    rgba = np.array(
        [
            [[255, 0, 0, 128], [0, 0, 0, 0], [9, 9, 9, 9]],
            [[9, 9, 9, 9], [1, 2, 3, 4], [5, 6, 7, 250]],
        ],
        np.uint8,
    ).reshape(-1)
    header = f"{rgba.size:032b}" + f"{7:05b}" + "0010" + "0011" + "0111" + "1111"
    # literal chunk of 8 values (3-bit length field), repeat chunk of 8 x 9, literal of 8
    chunks = "0" + "00" + f"{7:03b}" + "".join(f"{v:08b}" for v in rgba[:8])
    chunks += "1" + "00" + f"{7:03b}" + f"{9:08b}"
    chunks += "0" + "00" + f"{7:03b}" + "".join(f"{v:08b}" for v in rgba[16:])
    rle = _pack_bits(header + chunks)
    expected = rgba.reshape(h, w, 4)[:, :, 3]
    np.testing.assert_array_equal(sdk_decode(rle).reshape(h, w, 4)[:, :, 3], expected)
    np.testing.assert_array_equal(decode_brush_rle(rle, height=h, width=w), expected)


def test_decode_rejects_malformed_streams() -> None:
    rle = encode_brush_rle(_disc(20, 30, 10, 15, 5))
    with pytest.raises(InvalidMaskError, match="expected 20x31x4"):
        decode_brush_rle(rle, height=20, width=31)
    with pytest.raises(InvalidMaskError, match="truncated"):
        decode_brush_rle(rle[: len(rle) // 2], height=20, width=30)
    with pytest.raises(InvalidMaskError):
        decode_brush_rle([1, 2, 300], height=1, width=1)
    with pytest.raises(InvalidMaskError, match="truncated"):
        decode_brush_rle([], height=1, width=1)
    word16 = _pack_bits(f"{4:032b}" + f"{15:05b}" + "0010001101111111")
    with pytest.raises(InvalidMaskError, match="word size"):
        decode_brush_rle(word16, height=1, width=1)
    overrun = _pack_bits(
        f"{4:032b}" + f"{7:05b}" + "0010001101111111" + "1" + "00" + "111" + "1" * 8
    )
    with pytest.raises(InvalidMaskError, match="past"):
        decode_brush_rle(overrun, height=1, width=1)


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 2, 2), np.uint8), np.zeros((0, 4), np.uint8), np.zeros((3, 3), np.float32)]
)
def test_encode_rejects_bad_masks(bad: np.ndarray) -> None:
    with pytest.raises(InvalidMaskError):
        encode_brush_rle(bad)


@pytest.mark.parametrize("seed", range(12))
def test_encoder_matches_the_sdk_on_random_run_structures(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 400)), int(rng.integers(1, 400))
    runs = rng.choice([1, 2, 3, 5, 40, 70, 20000], size=h * w)
    values = rng.choice([0, 255, 7], size=runs.size)
    flat = np.repeat(values, runs)[: h * w].astype(np.uint8)
    mask = np.resize(flat, (h, w))
    assert encode_brush_rle(mask) == sdk_encode(mask)


@pytest.mark.parametrize("shape", [(32768, 32768), (33000, 33000), (1, 2**30)])
def test_encode_refuses_masks_whose_value_count_overflows_the_header(shape) -> None:
    # a read-only broadcast view: the check must fire before any pixel is touched
    huge = np.broadcast_to(np.zeros((1, 1), np.uint8), shape)
    with pytest.raises(InvalidMaskError, match="cannot describe"):
        encode_brush_rle(huge)


def test_header_counts_the_largest_accepted_shape_exactly() -> None:
    from core_model.masks.brush import MAX_BRUSH_PIXELS

    assert MAX_BRUSH_PIXELS * 4 < 2**32 <= (MAX_BRUSH_PIXELS + 1) * 4
    rle = encode_brush_rle(np.zeros((3, 5), np.uint8))
    assert int.from_bytes(bytes(rle[:4]), "big") == 3 * 5 * 4

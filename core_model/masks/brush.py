"""Label Studio brush RLE: encoder byte-identical to `label_studio_sdk.converter.brush.mask2rle`.

Format (a port of @thi.ng/rle-pack that Label Studio's frontend decodes): the mask is flattened
row-major and every pixel repeated 4 times (RGBA, all channels equal). The bit stream, packed
MSB-first, holds a header (32-bit value count, 5-bit word size - 1, four 4-bit run-length field
widths - 1: widths 3, 4, 8, 16) and then chunks: 1 flag bit (1 = repeated value, 0 = literals),
2 bits selecting a width, length - 1 in that many bits, then one 8-bit value (repeat) or
`length` 8-bit values (literals).

The reference encoder has four quirks reproduced here: a run of 1 is written as a 1-value
literal chunk; runs over 65536 are split into 65536-long chunks first; every chunk of a run over
256 uses the 16-bit length field, even a short remainder; and the stream is always padded with
1 to 8 zero bits (a whole zero byte when it already ends on a byte boundary).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core_model.errors import InvalidMaskError

_WIDTHS = (3, 4, 8, 16)
_MAX_CHUNK = 1 << 16
_HEADER_CODES = (7, 2, 3, 7, 15)  # word size 8 -> 7; widths 3, 4, 8, 16 -> width - 1
_HEADER_BITS = (5, 4, 4, 4, 4)
MAX_BRUSH_PIXELS = (1 << 32) // 4 - 1
"""Largest mask (H * W) the format can describe: the header counts H * W * 4 values in 32 bits
(a larger mask would silently wrap the count and decode as garbage)."""


def _runs(flat: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """Return (lengths, values) of the runs of equal consecutive values of a 1-D array."""
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, flat.size]).astype(np.int64)
    return lengths, flat[starts]


def _chunk_codes(
    lengths: npt.NDArray[np.int64], values: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Return (code, bit count) per chunk, each chunk code right-aligned in an int64."""
    full = (lengths - 1) // _MAX_CHUNK  # 65536-long chunks written before the remainder
    remainder = lengths - full * _MAX_CHUNK
    counts = full + 1
    chunk_len = np.full(int(counts.sum()), _MAX_CHUNK, dtype=np.int64)
    last = np.cumsum(counts) - 1
    chunk_len[last] = remainder
    chunk_val = np.repeat(values.astype(np.int64), counts)
    # the field width follows the whole run's length: a run over 256 writes every chunk, even a
    # short remainder, with the 16-bit field
    selector = np.repeat(np.searchsorted(np.array([8, 16, 256]), lengths, side="left"), counts)
    width = np.array(_WIDTHS, dtype=np.int64)[selector]
    flag = (chunk_len > 1).astype(np.int64)  # a single value is a 1-long literal chunk
    nbits = 1 + 2 + width + 8
    codes = (flag << (nbits - 1)) | (selector << (width + 8)) | ((chunk_len - 1) << 8) | chunk_val
    return codes, nbits


def _pack(codes: npt.NDArray[np.int64], nbits: npt.NDArray[np.int64]) -> list[int]:
    """Concatenate right-aligned codes (<= 32 bits) MSB-first; pad like the reference encoder."""
    # left-align every code in a big-endian 32-bit word, unpack the words to bits and keep
    # the first nbits of each: uint8 work per bit instead of an int64 shift per bit
    words = (codes.astype(np.uint64) << (np.uint64(32) - nbits.astype(np.uint64))).astype(">u4")
    bits = np.unpackbits(words.view(np.uint8).reshape(-1, 4), axis=1)
    stream = bits[np.arange(32)[None, :] < nbits[:, None]]
    packed = np.packbits(stream)
    if stream.size % 8 == 0:
        packed = np.r_[packed, np.uint8(0)]
    return packed.tolist()  # type: ignore[no-any-return]


def encode_brush_rle(mask: npt.NDArray[np.uint8] | npt.NDArray[np.bool_]) -> list[int]:
    """Encode a 2-D mask as Label Studio brush RLE.

    Args:
        mask: (H, W) uint8 (values are written as they are; Label Studio wants 0/255) or bool
            (written as 0/255).

    Returns:
        The RLE bytes as a list of ints 0-255, identical to the SDK's `mask2rle(mask)`.

    Raises:
        InvalidMaskError: not a 2-D bool/uint8 array, empty, or more than `MAX_BRUSH_PIXELS`
            pixels (the format's 32-bit value count cannot describe it).
    """
    array = np.asarray(mask)
    if array.ndim != 2 or array.size == 0:
        raise InvalidMaskError(f"mask must be a non-empty 2-D array, got shape {array.shape}")
    if array.size > MAX_BRUSH_PIXELS:
        raise InvalidMaskError(
            f"a {array.shape[0]}x{array.shape[1]} mask has more than {MAX_BRUSH_PIXELS} pixels, "
            "which Label Studio brush RLE cannot describe"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype != np.uint8:
        raise InvalidMaskError(f"mask must be bool or uint8, got {array.dtype}")
    flat: npt.NDArray[np.uint8] = np.ascontiguousarray(array, dtype=np.uint8).reshape(-1)
    lengths, values = _runs(flat)
    codes, nbits = _chunk_codes(lengths * 4, values)
    header = np.array([array.size * 4, *_HEADER_CODES], dtype=np.int64)
    header_bits = np.array([32, *_HEADER_BITS], dtype=np.int64)
    return _pack(np.r_[header, codes], np.r_[header_bits, nbits])


class _BitReader:
    """MSB-first reader of fields up to 32 bits from a byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = data + b"\0" * 5
        self.size_bits = len(data) * 8
        self.pos = 0

    def read(self, nbits: int) -> int:
        end = self.pos + nbits
        if end > self.size_bits:
            raise InvalidMaskError("brush RLE is truncated")
        start = self.pos >> 3
        window = int.from_bytes(self.data[start : start + 5], "big")
        value = (window >> (40 - (self.pos & 7) - nbits)) & ((1 << nbits) - 1)
        self.pos = end
        return value

    def read_bytes(self, count: int) -> npt.NDArray[np.uint8]:
        """Read `count` 8-bit values (vectorised)."""
        end = self.pos + 8 * count
        if end > self.size_bits:
            raise InvalidMaskError("brush RLE is truncated")
        first, offset = self.pos >> 3, self.pos & 7
        raw = np.frombuffer(self.data, dtype=np.uint8, count=count + 1, offset=first)
        if offset:
            bits = np.unpackbits(raw)[offset : offset + 8 * count]
            values = np.packbits(bits)
        else:
            values = raw[:count].copy()
        self.pos = end
        return values


def decode_brush_rle(
    rle: Sequence[int] | bytes, *, height: int, width: int
) -> npt.NDArray[np.uint8]:
    """Decode Label Studio brush RLE (from this encoder, the SDK, or the frontend).

    Args:
        rle: The RLE bytes (list of ints 0-255 as in Label Studio JSON, or bytes).
        height: Original image height in pixels.
        width: Original image width in pixels.

    Returns:
        (H, W) uint8: the alpha channel (Label Studio paints pixels whose alpha is non-zero).

    Raises:
        InvalidMaskError: malformed or truncated stream, or a size that is not H * W * 4.
    """
    try:
        data = bytes(rle)
    except (TypeError, ValueError) as exc:
        raise InvalidMaskError(f"brush RLE must be a list of ints 0-255: {exc}") from None
    reader = _BitReader(data)
    total = reader.read(32)
    word_size = reader.read(5) + 1
    widths = [reader.read(4) + 1 for _ in range(4)]
    if total != height * width * 4:
        raise InvalidMaskError(
            f"brush RLE holds {total} values, expected {height}x{width}x4 = {height * width * 4}"
        )
    if word_size != 8:
        raise InvalidMaskError(f"brush RLE word size must be 8 bits, got {word_size}")
    out = np.empty(total, dtype=np.uint8)
    i = 0
    while i < total:
        repeat = reader.read(1)
        j = i + 1 + reader.read(widths[reader.read(2)])
        if j > total:
            raise InvalidMaskError("brush RLE runs past the declared size")
        if repeat:
            out[i:j] = reader.read(8)
        else:
            out[i:j] = reader.read_bytes(j - i)
        i = j
    return out.reshape(height, width, 4)[:, :, 3].copy()


def brush_rle_to_mask(
    rle: Sequence[int] | bytes, *, height: int, width: int
) -> npt.NDArray[np.bool_]:
    """Decode brush RLE to an (H, W) bool mask (alpha > 0)."""
    return decode_brush_rle(rle, height=height, width=width) > 0

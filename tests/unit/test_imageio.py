"""Image decoding: modes, orientation, limits, broken files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core_model.errors import InvalidImageError
from core_model.imageio import load_image_rgb


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def test_rgb_png_from_bytes_and_path(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = _png(Image.fromarray(array))
    np.testing.assert_array_equal(load_image_rgb(data), array)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    out = load_image_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)


def test_grayscale_palette_and_alpha() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image_rgb(_png(Image.fromarray(gray, mode="L")))
    assert out.shape == (3, 4, 3) and (out[..., 0] == gray).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red; the rest transparent -> white
    out = load_image_rgb(_png(Image.fromarray(rgba, mode="RGBA")))
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    palette = Image.fromarray(gray, mode="L").convert("P")
    assert load_image_rgb(_png(palette)).shape == (3, 4, 3)


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = load_image_rgb(_png(image))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied() -> None:
    array = np.zeros((2, 4, 3), np.uint8)
    array[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _png(Image.fromarray(array), format="JPEG", exif=exif.tobytes(), quality=100)
    out = load_image_rgb(data)
    assert out.shape == (4, 2, 3)


@pytest.mark.parametrize("data", [b"", b"GIF89a-truncated", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_broken_files(data: bytes) -> None:
    with pytest.raises(InvalidImageError, match="cannot decode"):
        load_image_rgb(data)


def test_missing_file_and_pixel_limit(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="cannot open"):
        load_image_rgb(tmp_path / "nope.png")
    data = _png(Image.new("RGB", (100, 100)))
    with pytest.raises(InvalidImageError, match="limit"):
        load_image_rgb(data, max_pixels=5000)


def test_downscale_to_a_maximum_side() -> None:
    data = _png(Image.new("RGB", (400, 100), (10, 20, 30)))
    out = load_image_rgb(data, max_side=200)
    assert out.shape == (50, 200, 3) and out[0, 0].tolist() == [10, 20, 30]
    assert load_image_rgb(data, max_side=1000).shape == (100, 400, 3)

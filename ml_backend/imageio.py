"""Decode image files into the (H, W, 3) uint8 RGB arrays the model takes.

Handles EXIF orientation, grayscale, palette, alpha (composited on white), 16-bit and float
images, and refuses decompression bombs before decoding pixels.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from core_model.errors import InvalidImageError

DEFAULT_MAX_PIXELS = 64_000_000


def _to_uint8_rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        high = values.max() if values.size else 0.0
        # 16-bit data is usually stored in the full range; scale by the type's range, or by the
        # data's own maximum for int32/float images
        scale = 65535.0 if image.mode.startswith("I;16") else max(high, 1.0)
        gray = np.clip(values / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_image_rgb(
    source: str | Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> npt.NDArray[np.uint8]:
    """Read an image file (path or bytes) as (H, W, 3) uint8 RGB, EXIF orientation applied.

    Raises:
        InvalidImageError: unreadable or broken file, or more than `max_pixels` pixels.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InvalidImageError(f"cannot open image {name}: {exc.strerror or exc}") from None
    try:
        with stream, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"image {name} has {width}x{height} pixels, more than the limit {max_pixels}"
                )
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return _to_uint8_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InvalidImageError):
            raise
        raise InvalidImageError(f"cannot decode image {name}: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"image {name} looks like a decompression bomb: {exc}") from None

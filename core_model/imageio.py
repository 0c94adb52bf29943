"""Decode image files into the (H, W, 3) uint8 RGB arrays the model takes.

Handles EXIF orientation, grayscale, palette, alpha (composited on white), 16-bit and float
images; refuses images over a pixel limit before decoding pixels (decompression bombs), and can
downscale large images to a maximum side instead.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from core_model.errors import InvalidImageError

#: Largest image (height × width) decoded anywhere in the project unless configured lower:
#: 64 MP covers 8K frames and large photos while bounding memory (~192 MB as RGB uint8).
MAX_IMAGE_PIXELS = 64_000_000


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
    source: str | Path | bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_side: int | None = None,
) -> npt.NDArray[np.uint8]:
    """Read an image file (path or bytes) as (H, W, 3) uint8 RGB, EXIF orientation applied.

    Args:
        source: File path or the file's bytes.
        max_pixels: Refuse files with more pixels than this (checked before decoding).
        max_side: If given, downscale (aspect kept, Lanczos) so the longer side is at most this.

    Raises:
        InvalidImageError: unreadable or broken file, or more than `max_pixels` pixels. The
            message names the file, never its folder (it may reach a client).
    """
    name = "<bytes>" if isinstance(source, bytes) else Path(source).name
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InvalidImageError(f"cannot open image {name}: {exc.strerror or exc}") from None
    try:
        with stream, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(stream)
            width, height = opened.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"image {name} has {width}x{height} pixels, more than the limit {max_pixels}"
                )
            if max_side is not None and max(width, height) > max_side:
                opened.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
            opened.load()
            image: Image.Image = ImageOps.exif_transpose(opened) or opened
            rgb = _to_uint8_rgb(image)
            if max_side is not None and max(rgb.shape[:2]) > max_side:
                scale = max_side / max(rgb.shape[:2])
                size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
                rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
            return rgb
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InvalidImageError):
            raise
        raise InvalidImageError(f"cannot decode image {name}: {_reason(exc, source)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(
            f"image {name} looks like a decompression bomb: {_reason(exc, source)}"
        ) from None


def _reason(exc: BaseException, source: str | Path | bytes) -> str:
    """The decoder's message without file paths (PIL names the file it could not identify)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(exc)
    if not isinstance(source, bytes):
        text = text.replace(str(source), Path(source).name)
    return text if "/" not in text and "\\" not in text else type(exc).__name__

"""Content-addressed image cache under the data directory.

Images are stored once per content hash at ``images/<sha[:2]>/<sha>.<ext>``, written to a
temporary file and renamed into place, after checking that they decode and are not too large.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core_model.errors import InvalidImageError
from core_model.imageio import MAX_IMAGE_PIXELS

MAX_IMAGE_BYTES = 200 * 1024 * 1024
_EXTENSIONS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
    "GIF": ".gif",
}


@dataclass(frozen=True)
class CachedImage:
    """An image stored in the cache.

    Attributes:
        sha256: Hex sha256 of the file bytes.
        path: Where it is stored.
        width: Width in pixels (before EXIF rotation).
        height: Height in pixels (before EXIF rotation).
    """

    sha256: str
    path: Path
    width: int
    height: int


def inspect_image_bytes(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, int, int]:
    """Return (PIL format, width, height) of encoded image bytes without decoding pixels.

    Raises:
        InvalidImageError: not an image, or more than `max_pixels` pixels.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            fmt = image.format or "PNG"
    except UnidentifiedImageError:
        raise InvalidImageError("not a readable image: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"not a readable image: {type(exc).__name__}: {exc}") from None
    except Image.DecompressionBombError:
        raise InvalidImageError("image looks like a decompression bomb") from None
    if width * height > max_pixels:
        raise InvalidImageError(f"image has {width}x{height} pixels, more than {max_pixels}")
    return fmt, width, height


def cache_image_bytes(
    data: bytes, images_dir: Path, *, max_pixels: int = MAX_IMAGE_PIXELS
) -> CachedImage:
    """Store encoded image bytes in the cache (a no-op if the same content is there already).

    Raises:
        InvalidImageError: too many bytes, not an image, or too many pixels.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImageError(f"image file has {len(data)} bytes, more than {MAX_IMAGE_BYTES}")
    fmt, width, height = inspect_image_bytes(data, max_pixels=max_pixels)
    sha256 = hashlib.sha256(data).hexdigest()
    folder = images_dir / sha256[:2]
    path = folder / f"{sha256}{_EXTENSIONS.get(fmt, '.img')}"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return CachedImage(sha256=sha256, path=path, width=width, height=height)


def cache_image_file(
    source: Path, images_dir: Path, *, max_pixels: int = MAX_IMAGE_PIXELS
) -> CachedImage:
    """Store a local image file in the cache."""
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise InvalidImageError(
            f"cannot read {Path(source).name}: {exc.strerror or type(exc).__name__}"
        ) from None
    return cache_image_bytes(data, images_dir, max_pixels=max_pixels)

"""PNG masks of one image: one 0/255 file per region and a 16-bit index map.

Layout under the output folder: ``masks/<image_id>/<annotation_id>.png`` (8-bit grayscale,
255 = the region) and ``masks/<image_id>/index.png`` (16-bit grayscale, 0 = no region, k = the
region whose ``index`` is k in the image's hierarchy JSON). Regions overlap (parts lie inside
wholes), so the index map holds, at every pixel, the smallest region covering it: regions are
painted from the largest to the smallest area; at equal area the higher annotation id paints
last (it is the child of the lower one under the hierarchy rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from core_model.masks import CocoRLE, decode_coco_rle
from labeling_pipeline.export.errors import ExportError

MAX_INDEX = 65535


@dataclass(frozen=True)
class PngRegion:
    """A region to draw: COCO annotation id, index-map value (1..65535), mask RLE, area."""

    annotation_id: int
    index: int
    rle: CocoRLE
    area: int


def write_image_pngs(
    folder: Path, regions: Sequence[PngRegion], *, height: int, width: int
) -> Mapping[str, Path]:
    """Write the region PNGs and the index map of one image into `folder` (created).

    Args:
        folder: ``masks/<image_id>``.
        regions: The image's regions; their RLE size must be (height, width).
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        File name -> path of every file written.
    """
    if any(not 1 <= r.index <= MAX_INDEX for r in regions):
        raise ExportError(f"an image holds more than {MAX_INDEX} regions (index map is 16-bit)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        index_map = np.zeros((height, width), dtype=np.uint16)
        written = {}
        for region in sorted(regions, key=lambda r: (-r.area, r.annotation_id)):
            mask = decode_coco_rle(region.rle)
            path = folder / f"{region.annotation_id}.png"
            Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(path)
            written[path.name] = path
            index_map[mask] = region.index
        path = folder / "index.png"
        Image.fromarray(index_map).save(path)
        written[path.name] = path
    except OSError as exc:
        raise ExportError(f"cannot write masks under {folder}: {exc}") from None
    return written


def read_index_png(path: Path) -> npt.NDArray[np.uint16]:
    """Read an index map back as (H, W) uint16."""
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint16)

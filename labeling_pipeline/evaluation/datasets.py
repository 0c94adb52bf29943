"""Evaluation dataset loaders: COCO-format instance/part files and image + mask folders.

Both loaders iterate `EvalSample`s (one per object instance, images loaded once and shared by
their instances, in file order) and `ImageSample`s (one per image with all its masks, for
AR@1000). Images are (H, W, 3) uint8 RGB; masks are (H, W) bool in the image's pixel grid.

**COCO format** (`CocoInstanceDataset`): a COCO JSON (`images`, `annotations`) and an image
folder. Every annotation is one instance, instances and parts alike (SA-1B style "every
annotation one instance", PartImageNet style "every part one instance"); `kind` keeps only
instances or only parts when annotations carry an `is_part` flag (the pseudo-label format), and
`exclude_category_ids` drops categories (e.g. PartImageNet's 40). Segmentations may be compressed
RLE, uncompressed RLE or polygons. Crowd annotations (`iscrowd` 1) are never interactive targets;
they stay in `images()` as crowd regions. There is no ignore mask.

**Mask folders** (`MaskFolderDataset`, GrabCut / Berkeley / DAVIS style): `ROOT/images/<stem>.*`
and `ROOT/masks/<stem>.*` with matching stems, one object per image. A mask is read as 8-bit
grey (the channel maximum for colour files). Masks whose values are only 0 and 1 are taken as
they are; otherwise a pixel is foreground if its value is > 128, and a value of exactly
`ignore_value` (default 128: GrabCut marks its uncertain boundary band with 128) is ignored
(label -1: excluded from IoU, never clicked). Berkeley and DAVIS masks (0/255) have no ignore
pixel. Pass `ignore_value=None` to treat 128 as background.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from pycocotools import mask as mask_utils

from core_model.errors import UnSAMv2Error
from core_model.imageio import load_image_rgb
from core_model.masks import decode_coco_rle
from labeling_pipeline.evaluation.samples import DatasetError, EvalSample, ImageSample

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff", ".jpg", ".jpeg")
AnnotationKind = Literal["all", "instances", "parts"]


def _load_image(path: Path) -> tuple[npt.NDArray[np.uint8], str]:
    """Return the image as (H, W, 3) uint8 RGB and a content key (sha256 of the file)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return load_image_rgb(data), "file-sha256:" + hashlib.sha256(data).hexdigest()


def annotation_mask(segmentation: Any, height: int, width: int) -> npt.NDArray[np.bool_]:
    """Decode a COCO segmentation (RLE, uncompressed RLE or polygons) to (H, W) bool.

    Raises:
        DatasetError: malformed segmentation or a size other than (height, width).
    """
    try:
        if isinstance(segmentation, dict):
            mask = decode_coco_rle(segmentation)
        elif isinstance(segmentation, list):
            polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
            if not polygons:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            mask = mask_utils.decode(rle).astype(bool)
        else:
            raise DatasetError(f"unknown segmentation type {type(segmentation).__name__}")
    except UnSAMv2Error as exc:
        raise DatasetError(f"bad segmentation: {exc}") from None
    if mask.shape != (height, width):
        raise DatasetError(f"segmentation size {mask.shape} differs from image {(height, width)}")
    return mask


class CocoInstanceDataset:
    """Instances (and parts) of a COCO-format annotation file.

    Args:
        annotation_json: COCO JSON path.
        images_dir: Folder holding the images' `file_name`s.
        kind: "all" annotations, only "instances" (`is_part` false or absent) or only "parts".
        exclude_category_ids: Categories that are not evaluated.
        min_area_px: Instances smaller than this (after decoding) are skipped.

    Raises:
        DatasetError: unreadable or malformed JSON.
    """

    def __init__(
        self,
        annotation_json: str | Path,
        images_dir: str | Path,
        *,
        kind: AnnotationKind = "all",
        exclude_category_ids: Sequence[int] = (),
        min_area_px: int = 1,
    ) -> None:
        self.annotation_json = Path(annotation_json)
        self.images_dir = Path(images_dir)
        self.kind = kind
        self.min_area_px = max(1, int(min_area_px))
        try:
            data = json.loads(self.annotation_json.read_text())
            images = {int(img["id"]): img for img in data["images"]}
            annotations = list(data["annotations"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"cannot read COCO file {self.annotation_json}: {exc}") from None
        excluded = {int(c) for c in exclude_category_ids}
        self._images = images
        self._by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
        for ann in annotations:
            image_id = int(ann.get("image_id", -1))
            if image_id not in self._by_image:
                raise DatasetError(f"annotation {ann.get('id')} refers to unknown image {image_id}")
            if int(ann.get("category_id", 1)) not in excluded:
                self._by_image[image_id].append(ann)

    @property
    def name(self) -> str:
        """Short name for reports (the JSON file's stem)."""
        return self.annotation_json.stem

    def _is_target(self, ann: dict[str, Any]) -> bool:
        if ann.get("iscrowd", 0):
            return False
        is_part = bool(ann.get("is_part", False))
        return self.kind == "all" or (self.kind == "parts") == is_part

    def __len__(self) -> int:
        """Number of candidate instances (before the area filter)."""
        return sum(self._is_target(a) for anns in self._by_image.values() for a in anns)

    def _open(self, image_id: int) -> tuple[npt.NDArray[np.uint8], str, int, int]:
        info = self._images[image_id]
        image, key = _load_image(self.images_dir / str(info["file_name"]))
        height, width = image.shape[:2]
        expected = (int(info.get("height", height)), int(info.get("width", width)))
        if (height, width) != expected:
            raise DatasetError(
                f"image {info['file_name']} is {height}x{width} (HxW), the JSON says "
                f"{expected[0]}x{expected[1]}"
            )
        return image, key, height, width

    def __iter__(self) -> Iterator[EvalSample]:
        """Yield one `EvalSample` per instance (no ignore mask), grouped by image."""
        for image_id, anns in self._by_image.items():
            targets = [a for a in anns if self._is_target(a)]
            if not targets:
                continue
            image, key, height, width = self._open(image_id)
            for ann in targets:
                mask = annotation_mask(ann["segmentation"], height, width)
                if int(mask.sum()) < self.min_area_px:
                    logger.debug("skipping annotation %s: %d px", ann.get("id"), mask.sum())
                    continue
                yield EvalSample(
                    image,
                    mask,
                    None,
                    image_id=str(image_id),
                    instance_id=str(ann.get("id", "")),
                    image_key=key,
                )

    def images(self) -> Iterator[ImageSample]:
        """Yield one `ImageSample` per image with annotations (crowd regions flagged)."""
        for image_id, anns in self._by_image.items():
            kept = [a for a in anns if a.get("iscrowd", 0) or self._is_target(a)]
            if not kept:
                continue
            image, key, height, width = self._open(image_id)
            masks = [annotation_mask(a["segmentation"], height, width) for a in kept]
            yield ImageSample(
                image,
                masks,
                [bool(a.get("iscrowd", 0)) for a in kept],
                image_id=str(image_id),
                image_key=key,
            )


def read_folder_mask(
    path: Path, *, ignore_value: int | None = 128
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_] | None]:
    """Read a mask file as (foreground (H, W) bool, ignore (H, W) bool or None).

    See the module docstring for the value rules (0/1 masks; > 128 foreground; 128 ignored).
    """
    try:
        with Image.open(path) as img:
            values = np.asarray(img.convert("RGB") if img.mode in ("P", "PA") else img)
    except OSError as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from None
    if values.ndim == 3:
        values = values[..., :3].max(axis=2)
    values = values.astype(np.int64)
    if values.max(initial=0) <= 1:
        return values == 1, None
    ignore = (values == ignore_value) if ignore_value is not None else None
    foreground = values > 128
    if ignore is not None:
        foreground &= ~ignore
    return foreground, ignore if ignore is not None and ignore.any() else None


class MaskFolderDataset:
    """One object per image: `ROOT/images/<stem>.*` with `ROOT/masks/<stem>.*`.

    Args:
        root: Dataset folder.
        images_dirname: Image sub-folder name.
        masks_dirname: Mask sub-folder name.
        ignore_value: Mask value meaning "ignore" (-1), or None.

    Raises:
        DatasetError: a folder is missing or an image has no mask.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        images_dirname: str = "images",
        masks_dirname: str = "masks",
        ignore_value: int | None = 128,
    ) -> None:
        self.root = Path(root)
        self.ignore_value = ignore_value
        images_dir, masks_dir = self.root / images_dirname, self.root / masks_dirname
        if not images_dir.is_dir() or not masks_dir.is_dir():
            raise DatasetError(f"{self.root} must hold {images_dirname}/ and {masks_dirname}/")
        masks: dict[str, Path] = {}
        for path in sorted(masks_dir.iterdir()):
            suffix = path.suffix.lower()
            if suffix in MASK_SUFFIXES and (
                path.stem not in masks
                or MASK_SUFFIXES.index(suffix)
                < MASK_SUFFIXES.index(masks[path.stem].suffix.lower())
            ):
                masks[path.stem] = path
        self.pairs: list[tuple[Path, Path]] = []
        for path in sorted(images_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem not in masks:
                raise DatasetError(f"no mask for {path.name} in {masks_dir} (same stem expected)")
            self.pairs.append((path, masks[path.stem]))

    @property
    def name(self) -> str:
        """Short name for reports (the folder name)."""
        return self.root.name

    def __len__(self) -> int:
        """Number of instances (= images)."""
        return len(self.pairs)

    def _load(self, image_path: Path, mask_path: Path) -> EvalSample:
        image, key = _load_image(image_path)
        gt, ignore = read_folder_mask(mask_path, ignore_value=self.ignore_value)
        if gt.shape != image.shape[:2]:
            raise DatasetError(f"mask {mask_path.name} is {gt.shape}, image {image.shape[:2]}")
        stem = image_path.stem
        return EvalSample(image, gt, ignore, image_id=stem, instance_id=stem, image_key=key)

    def __iter__(self) -> Iterator[EvalSample]:
        """Yield one `EvalSample` per image (empty masks are skipped with a warning)."""
        for image_path, mask_path in self.pairs:
            sample = self._load(image_path, mask_path)
            if not sample.gt.any():
                logger.warning("skipping %s: its mask has no foreground pixel", mask_path.name)
                continue
            yield sample

    def images(self) -> Iterator[ImageSample]:
        """Yield one `ImageSample` per image with its single mask."""
        for sample in self:
            yield ImageSample(
                sample.image, [sample.gt], image_id=sample.image_id, image_key=sample.image_key
            )


def open_dataset(spec: str) -> CocoInstanceDataset | MaskFolderDataset:
    """Open a dataset from "coco:ANNOTATIONS.json:IMAGES_DIR" or "folder:ROOT".

    Raises:
        DatasetError: unknown form or unreadable dataset.
    """
    kind, _, rest = spec.partition(":")
    if kind == "coco":
        json_path, sep, images_dir = rest.partition(":")
        if not sep or not json_path or not images_dir:
            raise DatasetError(f"expected coco:ANNOTATIONS.json:IMAGES_DIR, got {spec!r}")
        return CocoInstanceDataset(json_path, images_dir)
    if kind == "folder" and rest:
        return MaskFolderDataset(rest)
    raise DatasetError(f"dataset must be coco:JSON:IMAGES_DIR or folder:PATH, got {spec!r}")

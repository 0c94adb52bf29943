"""Training data of a specialist: a project's images with the accepted masks of its labels.

An image takes part when it has at least one accepted mask (of any label: an annotated image
without the label is a negative example). Its target is a class map in the image frame: 0 for
the background, ``i + 1`` where a mask of ``labels[i]`` lies (later labels win on overlaps).
Images and targets are resized to the model's square input (aspect not kept, as in the
reference recipe); targets become soft by area averaging, so boundaries stay smooth.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from core_model.errors import InvalidMaskError, UnSAMv2Error
from core_model.imageio import load_image_rgb
from core_model.masks import decode_coco_rle

logger = logging.getLogger(__name__)

#: Fewest images with accepted masks of the labels for a specialist to be trained.
MIN_IMAGES = 8
#: Largest ratio between the biggest and the smallest image side length (or aspect ratio).
MAX_SIZE_RATIO = 8.0


class SpecialistDataError(UnSAMv2Error, ValueError):
    """The project's accepted masks cannot train a specialist (the message says why)."""


@dataclass(frozen=True)
class MaskRow:
    """One accepted mask as read from the store.

    Attributes:
        label: Its label.
        rle: COCO RLE of the (height, width) mask.
    """

    label: str
    rle: Mapping[str, object]


@dataclass(frozen=True)
class SpecialistSample:
    """One training or held-out image.

    Attributes:
        image_id: Store id.
        sha256: Content hash (decides the held-out side).
        path: Local image file.
        masks: Accepted masks on the image (all labels).
    """

    image_id: int
    sha256: str
    path: Path
    masks: tuple[MaskRow, ...]


def check_labels(
    labels: Sequence[str], mask_labels: set[str], config_labels: set[str] | None
) -> list[str]:
    """Return the labels, checked against the labeling config and the accepted masks.

    Raises:
        SpecialistDataError: no label, a duplicate, or a label the config no longer has.
    """
    chosen = [str(label).strip() for label in labels]
    if not chosen or any(not label for label in chosen):
        raise SpecialistDataError("name at least one label to train the specialist on")
    if len(set(chosen)) != len(chosen):
        raise SpecialistDataError(f"labels repeat: {chosen}")
    if config_labels is not None:
        gone = [label for label in chosen if label not in config_labels]
        if gone:
            raise SpecialistDataError(
                f"label(s) {gone} are not in the project's labeling config any more "
                f"(it has {sorted(config_labels)}); their masks are not used"
            )
    missing = [label for label in chosen if label not in mask_labels]
    if missing:
        raise SpecialistDataError(f"no accepted masks of label(s) {missing} in the project")
    return chosen


def check_samples(
    samples: Sequence[SpecialistSample], labels: Sequence[str], *, min_images: int
) -> None:
    """Refuse too few images with the labels.

    Raises:
        SpecialistDataError: fewer than `min_images` images carry a mask of the labels.
    """
    wanted = set(labels)
    with_label = sum(1 for s in samples if any(m.label in wanted for m in s.masks))
    if with_label < min_images:
        raise SpecialistDataError(
            f"only {with_label} image(s) have accepted masks of {list(labels)}; a specialist "
            f"needs at least {min_images} (accept masks on {min_images - with_label} more)"
        )


def check_sizes(sizes: Sequence[tuple[int, int]], *, max_ratio: float = MAX_SIZE_RATIO) -> None:
    """Refuse images of wildly different sizes or shapes (they would be distorted unequally).

    Args:
        sizes: (height, width) of every image.
        max_ratio: Largest allowed ratio of long sides and of aspect ratios.

    Raises:
        SpecialistDataError: side lengths or aspect ratios differ by more than `max_ratio`.
    """
    if not sizes:
        return
    sides = [float(max(h, w)) for h, w in sizes]
    aspects = [w / max(h, 1) for h, w in sizes]
    if max(sides) / max(min(sides), 1.0) > max_ratio:
        raise SpecialistDataError(
            f"image sizes differ too much ({int(min(sides))} to {int(max(sides))} px on the "
            f"long side, more than x{max_ratio:g}); train separate specialists per image size"
        )
    if max(aspects) / max(min(aspects), 1e-6) > max_ratio:
        raise SpecialistDataError(
            f"image shapes differ too much (aspect ratios {min(aspects):.2f} to "
            f"{max(aspects):.2f}); train separate specialists per image shape"
        )


def class_map(
    masks: Sequence[MaskRow], labels: Sequence[str], height: int, width: int
) -> npt.NDArray[np.uint8]:
    """Return the (height, width) uint8 target: 0 background, i + 1 for `labels[i]`.

    Raises:
        SpecialistDataError: a mask of another size than its image.
    """
    out = np.zeros((height, width), np.uint8)
    index = {label: i + 1 for i, label in enumerate(labels)}
    for row in masks:
        if row.label not in index:
            continue
        try:
            mask = decode_coco_rle(dict(row.rle))
        except InvalidMaskError as exc:
            raise SpecialistDataError(f"an accepted mask cannot be decoded: {exc}") from None
        if mask.shape != (height, width):
            raise SpecialistDataError(
                f"an accepted mask of {row.label!r} is {mask.shape[1]}x{mask.shape[0]} but its "
                f"image is {width}x{height}"
            )
        out[mask] = index[row.label]
    return out


@dataclass(frozen=True)
class Prepared:
    """Images and targets in the model frame.

    Attributes:
        images: (N, side, side, 3) uint8 RGB.
        targets: (N, C, side, side) float32 soft one-hot targets; C = 1 for a binary
            specialist (foreground), else len(labels) + 1 with channel 0 the background.
        full_targets: Class maps (H_i, W_i) uint8 in each image's own frame (for scoring).
    """

    images: npt.NDArray[np.uint8]
    targets: npt.NDArray[np.float32]
    full_targets: list[npt.NDArray[np.uint8]]


def prepare(samples: Sequence[SpecialistSample], labels: Sequence[str], side: int) -> Prepared:
    """Load, check and resize the samples.

    Raises:
        SpecialistDataError: unreadable image, mismatched mask or wildly different sizes.
    """
    pictures, maps = [], []
    for sample in samples:
        try:
            image = load_image_rgb(sample.path)
        except UnSAMv2Error as exc:
            raise SpecialistDataError(f"image {sample.image_id}: {exc}") from None
        pictures.append(image)
        maps.append(class_map(sample.masks, labels, *image.shape[:2]))
    check_sizes([(int(im.shape[0]), int(im.shape[1])) for im in pictures])
    return to_model_frame(pictures, maps, len(labels), side)


def to_model_frame(
    pictures: Sequence[npt.NDArray[np.uint8]],
    maps: Sequence[npt.NDArray[np.uint8]],
    num_labels: int,
    side: int,
) -> Prepared:
    """Resize (H, W, 3) uint8 images and (H, W) uint8 class maps to `side` x `side`."""
    channels = 1 if num_labels == 1 else num_labels + 1
    images = np.zeros((len(pictures), side, side, 3), np.uint8)
    targets = np.zeros((len(pictures), channels, side, side), np.float32)
    for i, (image, cmap) in enumerate(zip(pictures, maps, strict=True)):
        images[i] = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        classes = range(1, 2) if channels == 1 else range(channels)
        for c_out, c in enumerate(classes):
            one = (cmap == c).astype(np.float32)
            targets[i, c_out] = cv2.resize(one, (side, side), interpolation=cv2.INTER_AREA)
    return Prepared(images, targets, list(maps))

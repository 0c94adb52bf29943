"""Training data: images with their masks (pseudo-labels and accepted human masks).

Masks are read from pseudo-label JSON files (the official per-image schema); a missing, NaN or
non-numeric granularity counts as 1.0, as in the official loader. Each step samples up to
`max_masks_per_image` masks per image and resizes them, like the image, to the model's square
input frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from core_model.errors import InvalidMaskError, UnSAMv2Error
from core_model.masks import decode_coco_rle


class TrainingDataError(UnSAMv2Error):
    """Training data is missing or unusable."""


@dataclass(frozen=True)
class TrainingImage:
    """One image and its masks.

    Attributes:
        path: Image file.
        key: Content key for the embedding cache (e.g. "file:<sha256>").
        annotations: COCO RLE ``segmentation`` dicts with ``granularity`` and ``source``
            ("human" for accepted annotations).
    """

    path: Path
    key: str
    annotations: tuple[dict[str, Any], ...]


def _granularity(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 1.0
    return min(max(number, 0.1), 1.0) if math.isfinite(number) else 1.0


def read_annotations(json_path: Path) -> list[dict[str, Any]]:
    """Return the usable annotations of a pseudo-label JSON file.

    Raises:
        TrainingDataError: unreadable file or no ``annotations`` list.
    """
    try:
        payload = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as exc:
        raise TrainingDataError(f"cannot read {json_path}: {exc}") from None
    items = payload.get("annotations") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise TrainingDataError(f"{json_path} has no annotations list")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("segmentation"), dict):
            continue
        if int(item.get("area", 1)) <= 0:
            continue
        out.append(
            {
                "segmentation": item["segmentation"],
                "granularity": _granularity(item.get("granularity")),
                "source": str(item.get("source", "pseudo")),
            }
        )
    return out


def training_images(pairs: Iterable[tuple[Path, Path, str]]) -> list[TrainingImage]:
    """Build training images from (image path, pseudo-label JSON path, cache key) triples.

    Images without any usable mask are left out.
    """
    images = []
    for image_path, json_path, key in pairs:
        annotations = read_annotations(json_path)
        if annotations:
            images.append(TrainingImage(Path(image_path), key, tuple(annotations)))
    return images


def _choose(
    sources: Sequence[str], count: int, human_share: float | None, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    indices = np.arange(len(sources))
    if len(sources) <= count:
        return indices
    human = indices[np.asarray(sources) == "human"]
    if human_share is None or human.size == 0 or human.size == len(sources):
        return np.sort(rng.choice(indices, size=count, replace=False))
    other = np.setdiff1d(indices, human)
    n_human = min(human.size, max(0, round(human_share * count)))
    n_other = min(other.size, count - n_human)
    n_human = min(human.size, count - n_other)
    picked = np.concatenate(
        [rng.choice(human, n_human, replace=False), rng.choice(other, n_other, replace=False)]
    )
    return np.sort(picked)


def sample_masks(
    image: TrainingImage,
    rng: np.random.Generator,
    *,
    max_masks: int,
    size: int,
    human_share: float | None = None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """Sample masks of one image and resize them to the model frame.

    Returns:
        masks (N, size, size) bool and granularities (N,) float32, N <= max_masks; masks
        that vanish at this size are dropped.
    """
    chosen = _choose([a["source"] for a in image.annotations], max_masks, human_share, rng)
    masks, values = [], []
    for index in chosen:
        annotation = image.annotations[int(index)]
        try:
            full = decode_coco_rle(annotation["segmentation"]).astype(np.uint8)
        except InvalidMaskError:
            continue
        small = cv2.resize(full, (size, size), interpolation=cv2.INTER_LINEAR) > 0
        if small.any():
            masks.append(small)
            values.append(annotation["granularity"])
    if not masks:
        return np.zeros((0, size, size), bool), np.zeros((0,), np.float32)
    return np.stack(masks), np.asarray(values, dtype=np.float32)

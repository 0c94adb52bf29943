"""The held-out split of a project: whole images with accepted masks, chosen deterministically.

Splitting by image (never by mask) keeps every mask of a held-out image, and the image itself,
out of training: a part and its whole, or two overlapping regions of one picture, cannot land on
both sides. An image is held out when a hash of its content (sha256) and a salt falls below the
fraction, so the choice does not depend on the order of the rows and an image stays on its side
as the project grows (the current version, trained on earlier runs' training side, is never
scored on images it was trained on). At least `min_images` are held out (the lowest hashes), and
with two or more eligible images at least one stays for training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core_model.errors import UnSAMv2Error

DEFAULT_FRACTION = 0.2
DEFAULT_SALT = "unsamv2-holdout-v1"


class HoldoutError(UnSAMv2Error, ValueError):
    """The split settings are invalid."""


class _Image(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class HoldoutSplit:
    """Image ids on each side of the split.

    Attributes:
        held_out: Images whose accepted masks score the versions; never trained on.
        train: Every other image of the project (with or without masks).
        eligible: How many images had accepted masks.
    """

    held_out: frozenset[int]
    train: tuple[int, ...]
    eligible: int


def image_rank(sha256: str, salt: str = DEFAULT_SALT) -> float:
    """Return the image's position in [0, 1) of the split (a hash of salt and content)."""
    digest = hashlib.sha256(f"{salt}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_holdout(
    images: Sequence[_Image],
    masks_per_image: Mapping[int, int],
    *,
    fraction: float = DEFAULT_FRACTION,
    min_images: int = 1,
    salt: str = DEFAULT_SALT,
) -> HoldoutSplit:
    """Choose the held-out images among those with accepted masks.

    Args:
        images: The project's images (anything with ``id`` and ``sha256``).
        masks_per_image: Image id -> number of accepted masks on it.
        fraction: Share of the eligible images to hold out, in [0, 1).
        min_images: Hold out at least this many (when there are that many eligible images).
        salt: Changes which images are chosen (keep it fixed for one lineage).

    Raises:
        HoldoutError: `fraction` outside [0, 1) or `min_images` negative.
    """
    if not 0.0 <= fraction < 1.0:
        raise HoldoutError(f"held-out fraction must lie in [0, 1), got {fraction}")
    if min_images < 0:
        raise HoldoutError(f"held-out minimum must be >= 0 images, got {min_images}")
    eligible = sorted(
        (image_rank(im.sha256, salt), im.id) for im in images if masks_per_image.get(im.id, 0) > 0
    )
    chosen = [image_id for rank, image_id in eligible if rank < fraction]
    if len(chosen) < min_images:
        chosen = [image_id for _, image_id in eligible[:min_images]]
    if len(eligible) >= 2 and len(chosen) >= len(eligible):
        chosen = chosen[: len(eligible) - 1]
    held = frozenset(chosen)
    return HoldoutSplit(
        held_out=held,
        train=tuple(im.id for im in images if im.id not in held),
        eligible=len(eligible),
    )

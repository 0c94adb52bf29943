"""Reading external proposals (detector masks, human masks) from a JSON file.

Accepted layouts: a list of annotations, or a dict with an ``annotations`` list (COCO style).
Each annotation needs ``segmentation`` as COCO RLE (compressed or not); ``score`` defaults to
1.0 and ``source`` to "external" ("human" marks accepted annotations for UnSAMv2+, which are
never refined). Masks must have the size of the image they belong to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core_model.errors import InvalidMaskError
from core_model.masks import decode_coco_rle
from labeling_pipeline.pseudo_labels.divide_conquer import Proposal
from labeling_pipeline.pseudo_labels.errors import ProposalError


def read_proposals(path: Path) -> list[Proposal]:
    """Return the proposals stored in a JSON file (see the module docstring).

    Raises:
        ProposalError: unreadable file, wrong layout or an invalid RLE.
    """
    try:
        payload: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProposalError(f"cannot read proposals {path}: {exc}") from None
    items = payload.get("annotations") if isinstance(payload, Mapping) else payload
    if not isinstance(items, list):
        raise ProposalError(f"{path}: expected a list of annotations")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or "segmentation" not in item:
            raise ProposalError(f"{path}: annotation {index} has no segmentation")
        try:
            mask = decode_coco_rle(item["segmentation"])
        except InvalidMaskError as exc:
            raise ProposalError(f"{path}: annotation {index}: {exc}") from None
        source = str(item.get("source", "external"))
        if source not in ("external", "human"):
            raise ProposalError(f"{path}: annotation {index}: source must be external or human")
        out.append(Proposal(mask, float(item.get("score", 1.0)), source))
    return out


def resize_proposals(proposals: list[Proposal], height: int, width: int) -> list[Proposal]:
    """Return the proposals resized to (height, width) (bilinear, threshold 0.5)."""
    out = []
    for p in proposals:
        if p.mask.shape == (height, width):
            out.append(p)
            continue
        resized = cv2.resize(
            np.asarray(p.mask, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR
        )
        out.append(Proposal(resized > 0.5, p.score, p.source))
    return out

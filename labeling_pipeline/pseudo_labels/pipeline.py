"""Pseudo-labels for image files: the per-image entry point of workers and the CLI's generator.

`pseudo_label_image_file` is idempotent: an image whose JSON already exists (complete, since
files are only renamed into place) is skipped. Images are decoded with
`core_model.imageio.load_image_rgb` (EXIF orientation, grayscale, palette, alpha on white,
16-bit), refused above `max_image_pixels`, downscaled to `max_image_side` for processing, and
skipped when blank; the masks are written at the file's own resolution (upsampled back when
the image was downscaled), so the JSON matches the image a training loader reads.

`generate_pseudo_labels` runs many images and yields one `PseudoLabelResult` each; a bad image
(broken, blank, too large, or an unexpected error) is reported in its result and never stops
the run.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from core_model.errors import InvalidImageError, UnSAMv2Error
from core_model.imageio import load_image_rgb
from core_model.masks import (
    box_xyxy_to_xywh,
    decode_coco_rle,
    encode_coco_rle,
    mask_to_box_xyxy,
)
from labeling_pipeline.pseudo_labels.config import PseudoLabelConfig
from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
from labeling_pipeline.pseudo_labels.divide_conquer import Proposal, PseudoMask, pseudo_label_image
from labeling_pipeline.pseudo_labels.errors import ProposalError
from labeling_pipeline.pseudo_labels.features import FeatureExtractor
from labeling_pipeline.pseudo_labels.output import (
    build_pseudo_label_json,
    granularities_of,
    read_pseudo_label_json,
    write_json_atomic,
)
from labeling_pipeline.pseudo_labels.proposals import resize_proposals

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PseudoLabelResult:
    """Outcome of one image.

    Attributes:
        image_path: The image file.
        status: "done" (JSON written), "existing" (JSON was already there) or "skipped" (bad
            image; see `reason`).
        json_path: The JSON file (None when skipped).
        num_masks: Annotations in the JSON.
        reason: Why the image was skipped, or a note (e.g. "downscaled from 6000x4000", or the
            fallback that gave the image its masks when the stages found none).
        seconds: Wall time spent on this image.
        granularities: Granularity of every annotation.
    """

    image_path: Path
    status: str
    json_path: Path | None
    num_masks: int = 0
    reason: str = ""
    seconds: float = 0.0
    granularities: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        """Return whether the image has a finished JSON."""
        return self.status in ("done", "existing")


def list_images(directory: Path, *, recursive: bool = True) -> list[Path]:
    """Return the image files under `directory` (by suffix), sorted."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in Path(directory).glob(pattern)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def stable_image_id(name: str) -> int:
    """Return a positive 31-bit id derived from a file name (same name, same id)."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF or 1


def oriented_size(path: Path) -> tuple[int, int]:
    """Return the (height, width) of an image file after EXIF orientation, without decoding."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InvalidImageError(f"cannot read image {path}: {exc}") from None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _upscaled(masks: list[PseudoMask], height: int, width: int) -> list[PseudoMask]:
    """Return the masks resized to (height, width), areas and boxes recomputed."""
    out = []
    for m in masks:
        small = decode_coco_rle(m.segmentation).astype(np.float32)
        big = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
        if not big.any():
            continue
        x, y, w, h = (float(v) for v in box_xyxy_to_xywh(mask_to_box_xyxy(big)))
        out.append(
            replace(
                m, segmentation=encode_coco_rle(big), area=int(big.sum()), bbox_xywh=(x, y, w, h)
            )
        )
    return out


def _load(
    path: Path, config: PseudoLabelConfig
) -> tuple[npt.NDArray[np.uint8], tuple[int, int], str]:
    """Return (processed image, original (H, W), note); raise InvalidImageError on bad files."""
    height, width = oriented_size(path)
    image = load_image_rgb(path, max_pixels=config.max_image_pixels, max_side=config.max_image_side)
    note = ""
    if image.shape[:2] != (height, width):
        note = f"downscaled from {width}x{height} to {image.shape[1]}x{image.shape[0]}"
    if float(image.reshape(-1, 3).std(axis=0).max()) < config.blank_std:
        raise InvalidImageError("blank image (no contrast)")
    return image, (height, width), note


def pseudo_label_image_file(
    image_path: Path,
    out_dir: Path,
    *,
    extractor: FeatureExtractor,
    config: PseudoLabelConfig | Mapping[str, Any] | None = None,
    proposals: Sequence[Proposal] | None = None,
    json_name: str | None = None,
    image_id: int | None = None,
    previews_dir: Path | None = None,
) -> PseudoLabelResult:
    """Pseudo-label one image file and write ``out_dir/<stem>.json`` atomically.

    Args:
        image_path: The image file.
        out_dir: Folder of the JSON files (created if needed).
        extractor: Patch-feature extractor.
        config: A `PseudoLabelConfig`, or a (partial) dict of its fields (as stored by workers).
        proposals: External proposals with masks at the file's resolution (after EXIF).
        json_name: Output name relative to `out_dir` (default ``<stem>.json``).
        image_id: Id written in the JSON (default: derived from the JSON name).
        previews_dir: If given, also write an overlay PNG there.

    Returns:
        The outcome; bad images come back with status "skipped" and a reason, not an error.

    Raises:
        PseudoLabelConfigError: invalid config mapping.
        PseudoLabelOutputError: the JSON cannot be written.
        ProposalError: proposals that do not fit the image.
    """
    start = time.perf_counter()
    if not isinstance(config, PseudoLabelConfig):
        config = PseudoLabelConfig.from_mapping(config)
    image_path = Path(image_path)
    json_name = json_name or f"{image_path.stem}.json"
    json_path = Path(out_dir) / json_name
    existing = read_pseudo_label_json(json_path)
    if existing is not None:
        values = granularities_of(existing)
        return PseudoLabelResult(
            image_path, "existing", json_path, len(values), granularities=tuple(values)
        )
    try:
        image, (height, width), note = _load(image_path, config)
    except InvalidImageError as exc:
        logger.warning("skipping %s: %s", image_path, exc)
        return PseudoLabelResult(
            image_path, "skipped", None, reason=str(exc), seconds=time.perf_counter() - start
        )
    if proposals and any(np.shape(p.mask) != (height, width) for p in proposals):
        raise ProposalError(f"proposal masks must be {height}x{width} like {image_path.name}")
    given = resize_proposals(list(proposals or ()), *image.shape[:2])
    trace = StageTrace()
    masks = pseudo_label_image(image, extractor, config=config, proposals=given, trace=trace)
    warning = str(getattr(extractor, "warning", "") or "")
    note = "; ".join(n for n in (note, trace.fallback and f"fallback: {trace.fallback}") if n)
    if previews_dir is not None:
        from labeling_pipeline.pseudo_labels.visualize import overlay_preview

        Path(previews_dir).mkdir(parents=True, exist_ok=True)
        preview = overlay_preview(image, masks)
        Image.fromarray(preview).save(Path(previews_dir) / f"{json_path.stem}.png")
    if image.shape[:2] != (height, width):
        masks = _upscaled(masks, height, width)
    payload = build_pseudo_label_json(
        masks,
        file_name=image_path.name,
        image_id=image_id if image_id is not None else stable_image_id(json_name),
        height=height,
        width=width,
        info={
            "features": extractor.name,
            "features_warning": warning,
            "fallback": trace.fallback,
            "config": config.to_dict(),
            "note": note,
        },
    )
    write_json_atomic(json_path, payload)
    done = tuple(float(m.granularity) for m in masks)
    return PseudoLabelResult(
        image_path, "done", json_path, len(masks), note, time.perf_counter() - start, done
    )


def generate_pseudo_labels(
    images: Iterable[Path],
    extractor: FeatureExtractor,
    *,
    out_dir: Path,
    config: PseudoLabelConfig | None = None,
    root: Path | None = None,
    previews_dir: Path | None = None,
    on_progress: Callable[[PseudoLabelResult], None] | None = None,
) -> Iterator[PseudoLabelResult]:
    """Pseudo-label many image files, yielding one result per image (see the module docstring).

    Args:
        images: Image files.
        extractor: Patch-feature extractor.
        out_dir: Folder of the JSON files.
        config: Thresholds; defaults to `PseudoLabelConfig()`.
        root: If given, JSON names mirror each image's path relative to it (``sub/a.json``).
        previews_dir: If given, overlay PNGs are written there.
        on_progress: Called with every result, before it is yielded.
    """
    config = config or PseudoLabelConfig()
    used: set[str] = set()
    for path in images:
        name = (Path(path).relative_to(root) if root else Path(Path(path).name)).with_suffix(
            ".json"
        )
        key = name.as_posix()
        if key in used:
            result = PseudoLabelResult(
                Path(path), "skipped", None, reason=f"another image already writes {key}"
            )
        else:
            used.add(key)
            result = _safe_run(Path(path), extractor, out_dir, config, key, previews_dir)
        if on_progress is not None:
            on_progress(result)
        yield result


def _safe_run(
    path: Path,
    extractor: FeatureExtractor,
    out_dir: Path,
    config: PseudoLabelConfig,
    json_name: str,
    previews_dir: Path | None,
) -> PseudoLabelResult:
    start = time.perf_counter()
    try:
        return pseudo_label_image_file(
            path, out_dir, extractor=extractor, config=config, json_name=json_name,
            previews_dir=previews_dir / Path(json_name).parent if previews_dir else None,
        )  # fmt: skip
    except UnSAMv2Error as exc:
        reason = str(exc)
    except Exception as exc:  # one bad image must not stop a run
        logger.exception("unexpected error on %s", path)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    return PseudoLabelResult(
        path, "skipped", None, reason=reason, seconds=time.perf_counter() - start
    )

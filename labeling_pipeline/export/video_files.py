"""Files of one tracked clip: per-frame mask PNGs, an overlay MP4 and a COCO-style JSON.

Layout under the output folder:

* ``masks/<frame:05d>_obj<id>.png``: one 8-bit 0/255 PNG per frame and object, at video
  resolution. Objects are tracked independently and may overlap, so each has its own file (an
  object hidden on a frame has an all-black PNG).
* ``overlay.mp4`` (MPEG-4 Part 2, ``mp4v``): the tracked frames in time order with every
  object's mask tinted in its colour and outlined.
* ``annotations.json``: COCO instance segmentation. ``images`` are the tracked frames (``id`` =
  frame index + 1, ``file_name`` the frame's name in SAM-2's frame-folder layout
  ``<frame:05d>.jpg``, ``width``, ``height``, ``frame_index``, ``timestamp_ms`` when known);
  ``annotations`` hold one entry per frame and visible object (non-empty mask): ``segmentation``
  as compressed COCO RLE (``counts`` a string), ``area``, ``bbox`` (x, y, width, height),
  ``object_id``, ``granularity``, ``frame_index`` and ``score`` (sigmoid of the model's object
  score: the probability that the object is visible). One category, ``object``.

Masks are written as they arrive (`VideoMaskWriter.add`, any frame order, e.g. forwards and then
backwards); `VideoMaskWriter.finish` then reads the frames and PNGs back once in time order to
write the overlay and the JSON, so memory does not grow with the clip's length.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from core_model.masks import coco_rle_area, coco_rle_bbox, encode_coco_rle
from labeling_pipeline.export.coco import CocoWriter
from labeling_pipeline.export.errors import ExportError

logger = logging.getLogger(__name__)

MASKS_DIR = "masks"
OVERLAY_NAME = "overlay.mp4"
ANNOTATIONS_NAME = "annotations.json"
CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
#: RGB colours of objects, by position of the object id in the sorted ids.
PALETTE = (
    (30, 144, 255),
    (255, 99, 71),
    (50, 205, 50),
    (238, 130, 238),
    (255, 215, 0),
    (0, 206, 209),
)


@dataclass(frozen=True)
class VideoOutputs:
    """What `VideoMaskWriter.finish` wrote."""

    folder: Path
    masks_dir: Path
    overlay: Path
    annotations: Path
    frames: int
    annotation_count: int


def mask_png_path(folder: Path, frame: int, obj_id: int) -> Path:
    """Return ``folder/masks/<frame:05d>_obj<id>.png``."""
    return folder / MASKS_DIR / f"{frame:05d}_obj{obj_id}.png"


def sigmoid(logit: float) -> float:
    """Return 1 / (1 + exp(-logit)) without overflow."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    e = math.exp(logit)
    return e / (1.0 + e)


class VideoMaskWriter:
    """Collect the masks of a tracked clip and write its files.

    Args:
        folder: Output folder (created).
        size: (height, width) of the video frames.
        granularities: Object id -> the granularity it was tracked at (None: none given).
    """

    def __init__(
        self, folder: Path, *, size: tuple[int, int], granularities: Mapping[int, float | None]
    ) -> None:
        self.folder = Path(folder)
        self.size = size
        self.granularities = dict(granularities)
        self._scores: dict[int, dict[int, float]] = {}  # frame -> object id -> object logit
        try:
            (self.folder / MASKS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create {self.folder / MASKS_DIR}: {exc}") from None

    @property
    def frames(self) -> list[int]:
        """Frame indices added so far, in time order."""
        return sorted(self._scores)

    def add(
        self,
        frame: int,
        obj_ids: Sequence[int],
        masks: npt.NDArray[np.bool_],
        object_scores: npt.NDArray[np.float32],
    ) -> None:
        """Write one frame's mask PNGs (a frame added again replaces its files).

        Args:
            frame: Frame index.
            obj_ids: The O object ids, in the order of `masks`.
            masks: (O, H, W) bool at video resolution.
            object_scores: (O,) float32 object-score logits (> 0: visible).
        """
        if masks.shape != (len(obj_ids), *self.size):
            raise ExportError(
                f"masks of frame {frame} have shape {masks.shape}, expected "
                f"({len(obj_ids)}, {self.size[0]}, {self.size[1]})"
            )
        scores = {}
        for obj_id, mask, score in zip(obj_ids, masks, object_scores, strict=True):
            path = mask_png_path(self.folder, frame, int(obj_id))
            try:
                Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(path)
            except OSError as exc:
                raise ExportError(f"cannot write {path.name}: {exc}") from None
            scores[int(obj_id)] = float(score)
        self._scores[int(frame)] = scores

    def finish(
        self,
        read_frame: Callable[[int], npt.NDArray[np.uint8]],
        *,
        fps: float,
        info: Mapping[str, Any],
        timestamp_ms: Callable[[int], float] | None = None,
    ) -> VideoOutputs:
        """Write the overlay MP4 and the COCO JSON from the PNGs written so far.

        Args:
            read_frame: Frame index -> (H, W, 3) uint8 RGB frame (e.g. ``source.frame``).
            fps: Frame rate of the overlay video (frames are written in index order).
            info: The COCO ``info`` entry.
            timestamp_ms: Frame index -> time in ms, stored on the images when given.
        """
        frames = self.frames
        if not frames:
            raise ExportError("no frame was tracked: nothing to write")
        overlay_path = self.folder / OVERLAY_NAME
        annotations_path = self.folder / ANNOTATIONS_NAME
        colours = {obj_id: PALETTE[i % len(PALETTE)] for i, obj_id in enumerate(self._obj_ids())}
        video = _open_video(overlay_path, fps, self.size)
        annotation_id = 0
        try:
            with CocoWriter(annotations_path, info=info) as coco:
                for frame in frames:
                    image = read_frame(frame)
                    masks = {obj: self._read_mask(frame, obj) for obj in self._scores[frame]}
                    video.write(_to_bgr(overlay_frame(image, masks, colours)))
                    coco.add_image(self._image_entry(frame, timestamp_ms))
                    for obj_id, mask in masks.items():
                        entry = self._annotation(frame, obj_id, mask, annotation_id + 1)
                        if entry is not None:
                            annotation_id += 1
                            coco.add_annotation(entry)
                coco.finish([CATEGORY])
        finally:
            video.release()
        return VideoOutputs(
            folder=self.folder,
            masks_dir=self.folder / MASKS_DIR,
            overlay=overlay_path,
            annotations=annotations_path,
            frames=len(frames),
            annotation_count=annotation_id,
        )

    def _obj_ids(self) -> list[int]:
        return sorted({obj for scores in self._scores.values() for obj in scores})

    def _read_mask(self, frame: int, obj_id: int) -> npt.NDArray[np.bool_]:
        path = mask_png_path(self.folder, frame, obj_id)
        try:
            with Image.open(path) as image:
                return np.asarray(image) > 127
        except OSError as exc:
            raise ExportError(f"cannot read back {path.name}: {exc}") from None

    def _image_entry(
        self, frame: int, timestamp_ms: Callable[[int], float] | None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": frame + 1,
            "file_name": f"{frame:05d}.jpg",
            "width": self.size[1],
            "height": self.size[0],
            "frame_index": frame,
        }
        if timestamp_ms is not None:
            entry["timestamp_ms"] = round(float(timestamp_ms(frame)), 3)
        return entry

    def _annotation(
        self, frame: int, obj_id: int, mask: npt.NDArray[np.bool_], annotation_id: int
    ) -> dict[str, Any] | None:
        if not mask.any():
            return None
        rle = encode_coco_rle(mask)
        return {
            "id": annotation_id,
            "image_id": frame + 1,
            "category_id": CATEGORY["id"],
            "segmentation": rle,
            "area": coco_rle_area(rle),
            "bbox": coco_rle_bbox(rle),
            "iscrowd": 0,
            "object_id": obj_id,
            "granularity": self.granularities.get(obj_id),
            "frame_index": frame,
            "score": round(sigmoid(self._scores[frame][obj_id]), 6),
        }


def overlay_frame(
    image: npt.NDArray[np.uint8],
    masks: Mapping[int, npt.NDArray[np.bool_]],
    colours: Mapping[int, tuple[int, int, int]],
) -> npt.NDArray[np.uint8]:
    """Return an (H, W, 3) uint8 RGB picture with each mask tinted and outlined in its colour.

    Args:
        image: (H, W, 3) uint8 RGB frame.
        masks: Object id -> (H, W) bool mask.
        colours: Object id -> RGB colour.
    """
    import cv2

    out = image.astype(np.float32)
    for obj_id, mask in masks.items():
        colour = np.array(colours[obj_id], dtype=np.float32)
        out[mask] = 0.45 * out[mask] + 0.55 * colour
    picture = np.ascontiguousarray(out.round().astype(np.uint8))
    for obj_id, mask in masks.items():
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(picture, contours, -1, tuple(int(c) for c in colours[obj_id]), 2)
    return picture


def _open_video(path: Path, fps: float, size: tuple[int, int]) -> Any:
    import cv2

    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        writer.release()
        raise ExportError(f"cannot write {path.name}: OpenCV has no MPEG-4 (mp4v) encoder here")
    return writer


def _to_bgr(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(rgb[:, :, ::-1])

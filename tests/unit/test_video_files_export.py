"""Files of a tracked clip: mask PNGs, overlay MP4 in time order, COCO RLE annotations."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from labeling_pipeline.export.errors import ExportError
from labeling_pipeline.export.video_files import (
    VideoMaskWriter,
    mask_png_path,
    overlay_frame,
    sigmoid,
)

H, W = 48, 64


def frame_image(index: int) -> npt.NDArray[np.uint8]:
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = 10 * index
    return image


def object_mask(frame: int, obj_id: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros((H, W), bool)
    x = 2 + 3 * frame + 20 * (obj_id - 1)
    mask[5 : 15 + obj_id, x : x + 8] = True
    return mask


def test_writes_pngs_overlay_and_coco_in_time_order(tmp_path: Path) -> None:
    writer = VideoMaskWriter(tmp_path / "out", size=(H, W), granularities={1: 0.3, 2: None})
    for frame in (3, 2, 1, 4, 5):  # backwards from the prompt, then forwards
        masks = np.stack([object_mask(frame, 1), object_mask(frame, 2)])
        if frame == 5:
            masks[1] = False  # object 2 is hidden on frame 5
        writer.add(frame, (1, 2), masks, np.array([2.0, -1.0 * frame], np.float32))
    assert writer.frames == [1, 2, 3, 4, 5]
    read: list[int] = []

    def read_frame(index: int) -> npt.NDArray[np.uint8]:
        read.append(index)
        return frame_image(index)

    outputs = writer.finish(
        read_frame,
        fps=12.0,
        info={"description": "test"},
        timestamp_ms=lambda i: i * 1000 / 12,
    )
    assert read == [1, 2, 3, 4, 5]
    assert len(list(outputs.masks_dir.glob("*.png"))) == 10
    png = np.asarray(Image.open(mask_png_path(outputs.folder, 4, 2)))
    assert png.dtype == np.uint8 and set(np.unique(png)) == {0, 255}
    np.testing.assert_array_equal(png > 0, object_mask(4, 2))

    capture = cv2.VideoCapture(str(outputs.overlay))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    ok, first = capture.read()
    assert ok and first.shape == (H, W, 3)
    capture.release()

    coco = json.loads(outputs.annotations.read_text())
    assert [image["frame_index"] for image in coco["images"]] == [1, 2, 3, 4, 5]
    assert coco["images"][0] == {
        "id": 2,
        "file_name": "00001.jpg",
        "width": W,
        "height": H,
        "frame_index": 1,
        "timestamp_ms": pytest.approx(83.333),
    }
    assert coco["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    annotations = coco["annotations"]
    assert len(annotations) == outputs.annotation_count == 9  # hidden object: no annotation
    assert len({a["id"] for a in annotations}) == 9
    for a in annotations:
        assert isinstance(a["segmentation"]["counts"], str)
        rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        decoded = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(decoded, object_mask(a["frame_index"], a["object_id"]))
        assert a["area"] == int(decoded.sum())
        assert a["image_id"] == a["frame_index"] + 1
        assert a["granularity"] == (0.3 if a["object_id"] == 1 else None)
    by_key = {(a["frame_index"], a["object_id"]): a for a in annotations}
    assert by_key[(3, 1)]["bbox"] == [11.0, 5.0, 8.0, 11.0]
    assert by_key[(2, 2)]["score"] == pytest.approx(sigmoid(-2.0), abs=1e-6)
    assert (5, 2) not in by_key


def test_overlay_tints_masks_in_their_colour() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    mask = np.zeros((H, W), bool)
    mask[10:30, 10:30] = True
    picture = overlay_frame(image, {7: mask}, {7: (200, 0, 0)})
    assert tuple(picture[20, 20]) == (110, 0, 0)
    assert tuple(picture[40, 50]) == (0, 0, 0)


def test_bad_mask_shape_and_nothing_tracked_are_export_errors(tmp_path: Path) -> None:
    writer = VideoMaskWriter(tmp_path, size=(H, W), granularities={1: 0.5})
    with pytest.raises(ExportError, match="shape"):
        writer.add(0, (1,), np.zeros((1, H + 1, W), bool), np.zeros(1, np.float32))
    with pytest.raises(ExportError, match="nothing"):
        writer.finish(frame_image, fps=10.0, info={})


def test_sigmoid_is_stable_for_large_logits() -> None:
    assert sigmoid(0.0) == 0.5
    assert sigmoid(-1024.0) == 0.0 and sigmoid(1024.0) == 1.0

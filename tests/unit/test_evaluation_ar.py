"""AR@1000 against a direct pycocotools computation, and hand-checkable cases."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from labeling_pipeline.evaluation import EvaluationError, compute_ar1000


def box_mask(hw: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros(hw, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


HW = [(40, 50), (30, 60)]
GT = [
    [
        box_mask(HW[0], 0, 20, 0, 20),
        box_mask(HW[0], 20, 40, 25, 50),
        box_mask(HW[0], 5, 10, 30, 40),
    ],
    [box_mask(HW[1], 0, 30, 0, 30), box_mask(HW[1], 10, 20, 35, 55)],
]
PREDS = [  # IoUs chosen away from the thresholds 0.50, 0.55, ..., 0.95
    [
        (box_mask(HW[0], 1, 20, 0, 19), 0.9),  # IoU 361/400 = 0.9025 with gt 0
        (box_mask(HW[0], 21, 40, 25, 49), 0.8),  # IoU 456/500 = 0.912 with gt 1
        (box_mask(HW[0], 5, 9, 30, 38), 0.3),  # IoU 32/50 = 0.64 with gt 2
        (box_mask(HW[0], 30, 40, 0, 10), 0.95),  # nothing
    ],
    [
        (box_mask(HW[1], 0, 30, 0, 22), 0.7),  # IoU 660/900 = 0.733 with gt 0
        (box_mask(HW[1], 10, 20, 35, 55), 0.2),  # exact gt 1
    ],
]


def direct_pycocotools(tmp_path: Path) -> float:
    """An independent class-agnostic COCO evaluation (files on disk, as a user would)."""
    images, annotations, results = [], [], []
    for i, (hw, gts, preds) in enumerate(zip(HW, GT, PREDS, strict=True)):
        images.append({"id": 10 + i, "height": hw[0], "width": hw[1], "file_name": f"{i}.png"})
        for g in gts:
            encoded = rle(g)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 10 + i,
                    "category_id": 7,
                    "segmentation": encoded,
                    "area": int(g.sum()),
                    "bbox": mask_utils.toBbox(encoded).tolist(),
                    "iscrowd": 0,
                }
            )
        results += [
            {"image_id": 10 + i, "category_id": 7, "segmentation": rle(m), "score": s}
            for m, s in preds
        ]
    path = tmp_path / "gt.json"
    path.write_text(
        json.dumps(
            {"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "x"}]}
        )
    )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        evaluator = COCOeval(gt, gt.loadRes(results), "segm")
        evaluator.params.useCats = 0
        evaluator.params.maxDets = [1, 10, 1000]
        evaluator.params.imgIds = [10, 11]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[8])


def test_ar1000_equals_a_direct_pycocotools_computation(tmp_path: Path) -> None:
    expected = direct_pycocotools(tmp_path)
    result = compute_ar1000(GT, PREDS, image_hw=HW)
    assert result.ar1000 == pytest.approx(expected, abs=1e-12)
    # recall by hand: per gt, the fraction of the 10 IoU thresholds 0.50..0.95 it meets
    # IoU 0.9025 -> 9/10, 0.912 -> 9/10, 0.64 -> 3/10, 0.733 -> 5/10, 1.0 -> 10/10
    assert result.ar1000 == pytest.approx((9 + 9 + 3 + 5 + 10) / 50)
    assert (result.images, result.gt_masks, result.predictions) == (2, 5, 6)
    # RLE dicts and boolean masks give the same answer
    as_rle = [[rle(m) for m in gts] for gts in GT]
    assert compute_ar1000(as_rle, PREDS, image_hw=HW).ar1000 == pytest.approx(result.ar1000)


def test_ar1000_counts_only_the_top_1000_predictions() -> None:
    hw = (20, 20)
    gt = box_mask(hw, 0, 10, 0, 10)
    junk = [(box_mask(hw, 15, 20, 15, 20), 0.9)] * 1000
    late_hit = [(gt, 0.1)]
    assert compute_ar1000([[gt]], [junk + late_hit], image_hw=[hw]).ar1000 == 0.0
    assert compute_ar1000([[gt]], [junk[:999] + late_hit], image_hw=[hw]).ar1000 == 1.0


def test_images_without_predictions_are_left_out_by_default() -> None:
    hw = (20, 20)
    gt = box_mask(hw, 0, 10, 0, 10)
    result = compute_ar1000([[gt], [gt]], [[(gt, 1.0)], []], image_hw=[hw, hw])
    assert result.ar1000 == 1.0
    assert (result.images, result.images_without_predictions) == (1, 1)
    counted = compute_ar1000(
        [[gt], [gt]], [[(gt, 1.0)], []], image_hw=[hw, hw], only_images_with_predictions=False
    )
    assert counted.ar1000 == pytest.approx(0.5)


def test_crowd_regions_are_neither_hits_nor_misses() -> None:
    hw = (20, 20)
    gt, crowd = box_mask(hw, 0, 10, 0, 10), box_mask(hw, 12, 20, 0, 20)
    result = compute_ar1000(
        [[gt, crowd]], [[(gt, 0.9), (crowd, 0.8)]], image_hw=[hw], gt_iscrowd=[[False, True]]
    )
    assert result.ar1000 == 1.0


def test_no_prediction_at_all_gives_zero_and_lengths_are_checked() -> None:
    hw = (10, 10)
    gt = box_mask(hw, 0, 5, 0, 5)
    assert compute_ar1000([[gt]], [[]], image_hw=[hw]).ar1000 == 0.0
    with pytest.raises(EvaluationError):
        compute_ar1000([[gt]], [], image_hw=[hw])

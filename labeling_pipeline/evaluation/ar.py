"""Class-agnostic AR@1000 of whole-image segmentation, computed by pycocotools.

Metric (UnSAM / UnSAMv2 protocol): COCO mask evaluation (`COCOeval(..., "segm")`) with every
ground-truth mask and every prediction in one class (`params.useCats = 0`),
`params.maxDets = [1, 10, 1000]`, and `params.imgIds` limited to the images that have at least
one prediction (an image without predictions is left out, not counted as zero recall; pass
`only_images_with_predictions=False` to count it). AR@1000 is the mask recall averaged over IoU
0.50:0.05:0.95, area "all", 1000 detections: `stats[8]`. COCO crowd regions (`iscrowd`) are
matched but neither counted as misses nor as hits, as in COCO.

Predictions (the choice this project makes, since the release does not publish one): per image,
`WholeImageSegmenter` decodes a grid of single-click prompts (32 x 32 by default) at every
granularity g = 0.1, 0.2, ..., 1.0; candidates are filtered by predicted IoU and stability (SAM-2
automatic mask generator defaults), box NMS (0.7) runs **within** each granularity (a part and
its whole overlap by design; `nms_across_granularities=True` runs it over the pool instead); the
pool is ranked by predicted IoU (the score) and the top 1000 are kept.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from core_model.masks import CocoRLE, encode_coco_rle_batch
from labeling_pipeline.evaluation.interactive import GRANULARITY_GRID
from labeling_pipeline.evaluation.samples import EvaluationError, ImageSample, as_image_sample

if TYPE_CHECKING:
    from core_model.predictor import GranularityPredictor
    from core_model.whole_image import WholeImageConfig

logger = logging.getLogger(__name__)

MAX_DETS = (1, 10, 1000)
COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR@1",
    "AR@10",
    "AR@1000",
    "AR_small@1000",
    "AR_medium@1000",
    "AR_large@1000",
)


def _default_whole_image() -> WholeImageConfig:
    from core_model.whole_image import WholeImageConfig  # imports torch: only when used

    return WholeImageConfig(max_masks=MAX_DETS[-1])


@dataclass(frozen=True)
class ARConfig:
    """Settings of the AR@1000 evaluation.

    Attributes:
        granularities: Granularities pooled per image, each in [0.1, 1.0].
        max_detections: Predictions kept per image (highest score first).
        whole_image: Grid, thresholds and NMS of the whole-image segmenter (its `max_masks` is
            replaced by `max_detections`).
        only_images_with_predictions: Evaluate only images with predictions (the protocol).
    """

    granularities: tuple[float, ...] = GRANULARITY_GRID
    max_detections: int = MAX_DETS[-1]
    whole_image: WholeImageConfig = field(default_factory=_default_whole_image)
    only_images_with_predictions: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_detections <= MAX_DETS[-1]:
            raise EvaluationError(f"max_detections must be in [1, 1000], got {self.max_detections}")


@dataclass(frozen=True)
class ARResult:
    """AR@1000 and the other COCO statistics of a class-agnostic mask evaluation.

    Attributes:
        ar1000: Mask AR, IoU 0.50:0.95, area all, 1000 detections (`stats[8]`).
        stats: The 12 COCO statistics, named as in `COCO_STAT_NAMES` (-1: undefined).
        images: Images evaluated.
        images_without_predictions: Images with no prediction (left out by the protocol).
        gt_masks: Ground-truth masks in the evaluated images (crowd regions included).
        predictions: Predictions in the evaluated images.
    """

    ar1000: float
    stats: dict[str, float]
    images: int
    images_without_predictions: int
    gt_masks: int
    predictions: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def _as_rle(mask_or_rle: CocoRLE | npt.NDArray[np.bool_]) -> CocoRLE:
    if isinstance(mask_or_rle, dict):
        return mask_or_rle
    return encode_coco_rle_batch(np.asarray(mask_or_rle, dtype=bool)[None])[0]


def compute_ar1000(
    gt_masks: Sequence[Sequence[CocoRLE | npt.NDArray[np.bool_]]],
    predictions: Sequence[Sequence[tuple[CocoRLE | npt.NDArray[np.bool_], float]]],
    *,
    image_hw: Sequence[tuple[int, int]],
    gt_iscrowd: Sequence[Sequence[bool]] | None = None,
    only_images_with_predictions: bool = True,
) -> ARResult:
    """Compute class-agnostic mask AR@1000 with pycocotools.

    Args:
        gt_masks: Per image, its ground-truth masks: COCO RLE dicts or (H, W) bool arrays.
        predictions: Per image, (mask as RLE or (H, W) bool, score) pairs; higher score = more
            confident. Only the 1000 best of an image count.
        image_hw: Per image, (height, width) in pixels.
        gt_iscrowd: Per image, a crowd flag per ground-truth mask, or None (no crowd).
        only_images_with_predictions: Leave out images without predictions (the protocol).

    Returns:
        AR@1000 and the 12 COCO statistics.

    Raises:
        EvaluationError: the per-image lists have different lengths.
    """
    if not len(gt_masks) == len(predictions) == len(image_hw):
        raise EvaluationError("gt_masks, predictions and image_hw need one entry per image")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    kept_ids: list[int] = []
    for index, (gts, preds, (height, width)) in enumerate(
        zip(gt_masks, predictions, image_hw, strict=True)
    ):
        image_id = index + 1
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        crowd = gt_iscrowd[index] if gt_iscrowd is not None else [False] * len(gts)
        for gt, is_crowd in zip(gts, crowd, strict=True):
            rle = _as_rle(gt)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": int(bool(is_crowd)),
                }
            )
        for mask, score in preds:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": _as_rle(mask),
                    "score": float(score),
                }
            )
        if preds or not only_images_with_predictions:
            kept_ids.append(image_id)
    missing = sum(1 for p in predictions if not p)
    kept = set(kept_ids)
    counts = {
        "images": len(kept_ids),
        "images_without_predictions": missing,
        "gt_masks": sum(1 for a in annotations if a["image_id"] in kept),
        "predictions": sum(1 for r in results if r["image_id"] in kept),
    }
    if not results or not kept_ids:
        logger.warning("no predictions: AR@1000 is 0")
        stats = dict.fromkeys(COCO_STAT_NAMES, 0.0)
        return ARResult(ar1000=0.0, stats=stats, **counts)
    values = _coco_stats(images, annotations, results, kept_ids)
    stats = {name: float(v) for name, v in zip(COCO_STAT_NAMES, values, strict=True)}
    return ARResult(ar1000=stats["AR@1000"], stats=stats, **counts)


def _coco_stats(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    results: list[dict[str, Any]],
    image_ids: list[int],
) -> npt.NDArray[np.float64]:
    # pycocotools prints progress on stdout; keep it out of the caller's output
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "object"}],
        }
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, "segm")
        evaluator.params.useCats = 0
        evaluator.params.maxDets = list(MAX_DETS)
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("pycocotools output:\n%s", captured.getvalue())
    return np.asarray(evaluator.stats, dtype=np.float64)


def predict_whole_image(
    predictor: GranularityPredictor,
    image: npt.NDArray[np.uint8],
    *,
    config: ARConfig,
    image_key: str | None = None,
) -> list[tuple[CocoRLE, float]]:
    """Return the pooled, ranked whole-image predictions of one image (at most max_detections).

    Args:
        predictor: The predictor.
        image: (H, W, 3) uint8 RGB.
        config: Granularities, segmenter settings, detection cap.
        image_key: Content key for the embedding cache, or None.

    Returns:
        (COCO RLE, score) pairs, highest score first.
    """
    from core_model.whole_image import WholeImageSegmenter

    segmenter = WholeImageSegmenter(
        predictor, replace(config.whole_image, max_masks=config.max_detections)
    )
    embedding = predictor.embed(image, key=image_key)
    masks = segmenter.segment(embedding, granularities=config.granularities)
    if not masks:
        return []
    rles = encode_coco_rle_batch(np.stack([m.mask for m in masks]))
    return [(rle, float(m.score)) for rle, m in zip(rles, masks, strict=True)]


def run_ar_evaluation(
    predictor: GranularityPredictor,
    images: Iterable[ImageSample | tuple[Any, Any]],
    *,
    config: ARConfig | None = None,
    on_image: Callable[[int, int], None] | None = None,
) -> ARResult:
    """Predict every image at all granularities and compute class-agnostic AR@1000.

    Args:
        predictor: The predictor.
        images: `ImageSample`s or tuples (image (H, W, 3) uint8 RGB, list of (H, W) bool gt
            masks).
        config: Protocol settings (see the module docstring).
        on_image: Called with (index, number of predictions) after each image.
    """
    config = config or ARConfig()
    gts, preds, sizes, crowds = [], [], [], []
    for index, raw in enumerate(images):
        sample = as_image_sample(raw, index)
        found = predict_whole_image(
            predictor, sample.image, config=config, image_key=sample.image_key
        )
        gts.append(list(sample.masks))
        crowds.append(list(sample.iscrowd) or [False] * len(sample.masks))
        preds.append(found)
        sizes.append((int(sample.image.shape[0]), int(sample.image.shape[1])))
        if on_image is not None:
            on_image(index, len(found))
    return compute_ar1000(
        gts,
        preds,
        image_hw=sizes,
        gt_iscrowd=crowds,
        only_images_with_predictions=config.only_images_with_predictions,
    )


def evaluate_ar1000(
    predictor: GranularityPredictor,
    images_with_gt_masks: Iterable[ImageSample | tuple[Any, Any]],
    *,
    config: ARConfig | None = None,
) -> float:
    """Return class-agnostic AR@1000 in [0, 1] (see `run_ar_evaluation`)."""
    return run_ar_evaluation(predictor, images_with_gt_masks, config=config).ar1000

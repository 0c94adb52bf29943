"""The playground's model calls: a granularity sweep per click, and a whole-image view.

decode (checked request) -> core (cached embedding, one batched `predict_many` call, or a small
`WholeImageSegmenter` grid) -> encode (compressed COCO RLE per mask, which the page decodes and
also offers as a download).
"""

from __future__ import annotations

import time
from typing import Any

from core_model.masks.coco import encode_coco_rle_batch
from core_model.serving import MaskPredictor
from core_model.types import ImageEmbedding, Prompts
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from labeling_pipeline.store.versions import serving_scope
from ml_backend.label_studio.context import BackendContext
from ml_backend.playground.schemas import SweepRequest, WholeImageRequest
from ml_backend.playground.sources import OpenedImage, PlaygroundImages

MAX_WHOLE_IMAGE_MASKS = 64
"""Masks of the whole-image view (the best by predicted IoU)."""


def _serving(
    ctx: BackendContext, images: PlaygroundImages, image: OpenedImage
) -> tuple[MaskPredictor, str, ImageEmbedding]:
    predictor, version = ctx.runtime.serving(serving_scope(None))
    embedding = predictor.embed_keyed(image.key, lambda: images.pixels(image))
    return predictor, version, embedding


def describe(ctx: BackendContext, images: PlaygroundImages, image: OpenedImage) -> dict[str, Any]:
    """Embed a newly opened image (so the first click finds it cached) and describe it."""
    started = time.perf_counter()
    predictor, version, embedding = _serving(ctx, images, image)
    height, width = embedding.original_hw
    return {
        "image": image.sha256,
        "name": image.name,
        "width": width,
        "height": height,
        "model_version": version,
        "mode": predictor.info.granularity_mode,
        "embed_ms": round(1000 * (time.perf_counter() - started), 1),
    }


def sweep(ctx: BackendContext, images: PlaygroundImages, request: SweepRequest) -> dict[str, Any]:
    """Decode one prompt set at every requested granularity in one batched call.

    Returns:
        ``{"image", "width", "height", "model_version", "mode", "masks": [{"granularity",
        "score", "area", "rle"}, ...], "timing_ms": {...}}``; ``rle`` is compressed COCO RLE
        (``{"size": [H, W], "counts": str}``, column-major), ``area`` in pixels, ``score`` the
        predicted IoU.

    Raises:
        NotFoundError: the image was not opened through the playground.
        InvalidPromptError: a point outside the image.
    """
    image = images.get(request.image)
    started = time.perf_counter()
    predictor, version, embedding = _serving(ctx, images, image)
    embedded = time.perf_counter()
    prompts = Prompts.from_arrays(
        [(p.x, p.y) for p in request.points], [p.label for p in request.points]
    )
    prediction = predictor.predict_many(embedding, prompts, request.granularities)
    decoded = time.perf_counter()
    rles = encode_coco_rle_batch(prediction.masks)
    areas = prediction.masks.reshape(len(rles), -1).sum(axis=1)
    height, width = embedding.original_hw
    masks = [
        {"granularity": g, "score": round(float(s), 4), "area": int(a), "rle": rle}
        for g, s, a, rle in zip(
            prediction.granularities, prediction.scores, areas, rles, strict=True
        )
    ]
    return {
        "image": image.sha256,
        "width": width,
        "height": height,
        "model_version": version,
        "mode": prediction.mode,
        "masks": masks,
        "timing_ms": {
            "embed": round(1000 * (embedded - started), 1),
            "decode": round(1000 * (decoded - embedded), 1),
            "encode": round(1000 * (time.perf_counter() - decoded), 1),
        },
    }


def whole_image(
    ctx: BackendContext, images: PlaygroundImages, request: WholeImageRequest
) -> dict[str, Any]:
    """Automatic masks of a small grid of clicks at one granularity, best first.

    Returns:
        ``{"granularity", "masks": [{"score", "area", "rle"}, ...], "complete"}``; the run is
        bounded by the pre-annotation deadline (``complete`` false when it was cut short).
    """
    image = images.get(request.image)
    predictor, version, embedding = _serving(ctx, images, image)
    config = WholeImageConfig(
        points_per_side=request.points_per_side,
        pred_iou_thresh=request.pred_iou_thresh,
        stability_score_thresh=request.stability_score_thresh,
        max_masks=MAX_WHOLE_IMAGE_MASKS,
        deadline_s=ctx.settings.preannotate_deadline_s,
    )
    run = WholeImageSegmenter(predictor, config).run(
        embedding, granularities=(request.granularity,)
    )
    rles = encode_coco_rle_batch([m.mask for m in run.masks]) if run.masks else []
    return {
        "image": image.sha256,
        "granularity": request.granularity,
        "model_version": version,
        "complete": run.complete,
        "masks": [
            {"score": round(m.score, 4), "area": m.area_px, "rle": rle}
            for m, rle in zip(run.masks, rles, strict=True)
        ],
    }

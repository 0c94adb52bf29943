"""/predict: interactive masks from smart clicks and boxes, and whole-image pre-annotation.

decode (Label Studio JSON -> prompts, granularity) -> core (cached embedding, prediction) ->
encode (brush RLE result). The granularity used for every suggested mask is recorded so that
an accepted mask can be exported with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from core_model.masks import resize_mask
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from labeling_pipeline.label_studio.config import (
    LabelConfigError,
    ProjectConfig,
    parse_label_config,
)
from labeling_pipeline.store.repository import (
    label_studio_project,
    record_predictions,
    set_project_options,
)
from labeling_pipeline.store.versions import serving_scope
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import BackendContext
from ml_backend.label_studio.convert import (
    ClickGroup,
    brush_result,
    parse_context,
    prediction,
    result_id,
)
from ml_backend.label_studio.prefetch_tasks import prefetch_opened
from ml_backend.label_studio.project_settings import ProjectSettings, parse_extra_params
from ml_backend.label_studio.schemas import (
    PredictRequest,
    SetupRequest,
    Task,
    ls_project_id,
    validate,
)
from ml_backend.label_studio.specialist_predictions import (
    MODEL_VERSION_PREFIX,
    specialist_predictions,
)
from ml_backend.label_studio.video_predict import is_video_config, predict_video

logger = logging.getLogger(__name__)

MASK_BYTES_BUDGET = 512 * 1024 * 1024
"""Full-size masks one pre-annotated image may hold at once (one byte per pixel): at the
64-megapixel image limit this keeps 8 masks, at 12 megapixels 42."""

ASPECT_TOLERANCE = 0.02
"""Relative difference allowed between the aspect ratio Label Studio reports for an image and
the fetched image's (rounding of a resized copy); more means another image."""

PARTIAL_NOTE = " (partial: pre-annotation deadline reached)"
"""Appended to ``model_version`` of a pre-annotation cut short by the deadline."""


def _annotator(task: Task) -> str:
    """The requesting annotator: interactive calls carry only their own drafts."""
    for draft in reversed(task.drafts or []):
        user = draft.user if draft.user is not None else draft.completed_by
        if isinstance(user, (int, str)) and not isinstance(user, bool):
            return str(user)
    return "anonymous"


def _image_url(task: Task, config: ProjectConfig, image_name: str) -> str:
    key = config.images.get(image_name)
    if key is None:
        raise LabelConfigError(f'the labeling config has no <Image name="{image_name}">')
    url = (task.data or {}).get(key)
    if not isinstance(url, str) or not url:
        raise BadRequestError(f"task {task.id} has no image under data.{key}")
    return url


def predict(ctx: BackendContext, body: Mapping[str, Any]) -> dict[str, Any]:
    """Answer a /predict request.

    Raises:
        BadRequestError: a body that does not match `PredictRequest` (types, id range, more
            than MAX_TASKS_PER_PREDICT tasks, ...), or an unusable context.
    """
    request = validate(PredictRequest, body)
    project_id = ls_project_id(request.project)
    config = parse_label_config(request.label_config)
    settings = ctx.project_settings(project_id)
    context = request.params.context if request.params is not None else None
    if is_video_config(config):  # object tracking in video tasks
        return predict_video(
            ctx,
            body,
            config,
            context=(context.result or []) if context is not None else None,
            project_id=project_id,
            default_granularity=settings.default_granularity,
        )
    if context is not None:
        group = parse_context(
            context.result or [], config, default_granularity=settings.default_granularity
        )
        if group is None:  # e.g. the deletion notice after an accept: nothing to do
            return {"results": []}
        ctx.metrics.predictions.labels("interactive").inc()
        return {"results": [_interactive(ctx, request.tasks[0], config, group, project_id)]}
    specialist = specialist_predictions(ctx, request.tasks, config, project_id, settings)
    if specialist is not None:  # the project's task specialist pre-annotates
        return {"results": specialist}
    if not settings.preannotate:  # the task was opened: its first click is coming
        prefetch_opened(ctx, request.tasks, config, project_id)
        return {"results": []}
    ctx.metrics.predictions.labels("whole_image").inc()
    deadline = time.monotonic() + ctx.settings.preannotate_deadline_s

    def late() -> bool:
        return time.monotonic() > deadline

    return {
        "results": [
            _whole_image(ctx, task, config, settings, project_id, late) for task in request.tasks
        ]
    }


def _check_reported_size(
    reported_hw: tuple[int, int], image_hw: tuple[int, int], limit: int
) -> None:
    """Refuse an ``original_width``/``original_height`` that cannot belong to the image.

    Args:
        reported_hw: (height, width) Label Studio sent.
        image_hw: (height, width) of the fetched image.
        limit: Largest accepted height * width (the image pixel limit).
    """
    (height, width), (image_h, image_w) = reported_hw, image_hw
    if height * width > limit:
        raise BadRequestError(
            f"original_width x original_height = {width}x{height} is more than the limit of "
            f"{limit} pixels"
        )
    aspect, image_aspect = width / height, image_w / image_h
    if abs(aspect - image_aspect) > ASPECT_TOLERANCE * image_aspect + 1 / height:
        raise BadRequestError(
            f"original_width x original_height = {width}x{height} does not match the task "
            f"image ({image_w}x{image_h})"
        )


def _interactive(
    ctx: BackendContext,
    task: Task,
    config: ProjectConfig,
    group: ClickGroup,
    project_id: int | None,
) -> dict[str, Any]:
    brush = config.brush_for(group.to_name)
    target = group.label.target
    if target not in brush.labels:
        raise LabelConfigError(
            f"label {group.label.value!r} targets {target!r}, which is not a label of "
            f'<BrushLabels name="{brush.name}"> (set target="..." on the label)'
        )
    predictor, version = ctx.runtime.serving(serving_scope(project_id))
    key, load = ctx.images.resolve(_image_url(task, config, group.to_name), client=ctx.ls_client())
    embedding = predictor.embed_keyed(key, load)
    height, width = embedding.original_hw
    if group.original_hw is not None and group.original_hw != (height, width):
        _check_reported_size(group.original_hw, (height, width), ctx.settings.max_image_pixels)
    task_key, user = str(task.id), _annotator(task)
    remembered = None
    if group.box_pct is not None and not group.points_pct:
        ctx.memory.remember(task_key, user, group.box_pct, target)
    elif group.box_pct is None:
        remembered = ctx.memory.box_for(task_key, user, target, points_pct=group.points_pct)
    prompts = group.prompts(height, width, box_pct=remembered)
    result = predictor.predict(embedding, prompts, granularity=group.granularity)
    mask = result.masks[0]
    if group.original_hw is not None and group.original_hw != (height, width):
        mask = resize_mask(mask, height=group.original_hw[0], width=group.original_hw[1])
    region_id = result_id(task.id, group.anchor_id)
    _record(ctx, project_id, task, [(region_id, target, group.granularity)], version)
    score = float(result.scores[0])
    encoded = brush_result(
        mask,
        region_id=region_id,
        from_name=brush.name,
        to_name=group.to_name,
        label=target,
        score=score,
    )
    logger.info(
        "task %s: %d click(s)%s at granularity %.2f (%s) -> %d px",
        task.id,
        len(group.points_pct),
        " + box" if prompts.box else "",
        group.granularity,
        group.granularity_source,
        np.count_nonzero(mask),
    )
    return prediction([encoded], score=score, model_version=version)


def _record(
    ctx: BackendContext,
    project_id: int | None,
    task: Task,
    regions: list[tuple[str, str, float]],
    version: str,
) -> None:
    if task.id is None:
        return
    with ctx.store.session() as session:
        record_predictions(
            session,
            ls_project_id=project_id,
            ls_task_id=task.id,
            regions=regions,
            model_version=version,
        )


def _whole_image(
    ctx: BackendContext,
    task: Task,
    config: ProjectConfig,
    settings: ProjectSettings,
    project_id: int | None,
    late: Callable[[], bool],
) -> dict[str, Any]:
    """Pre-annotate one task; past the request's deadline, answer what was found (marked)."""
    image_name, _ = config.first_image()
    brush = config.brush_for(image_name)
    label = settings.preannotate_label or (brush.labels[0] if brush.labels else "")
    if label not in brush.labels:
        raise LabelConfigError(f"pre-annotation label {label!r} is not in <{brush.name}>")
    predictor, version = ctx.runtime.serving(serving_scope(project_id))
    if late():  # no time left for this task: no image fetch, no embedding
        return prediction([], score=0.0, model_version=version + PARTIAL_NOTE)
    key, load = ctx.images.resolve(_image_url(task, config, image_name), client=ctx.ls_client())
    embedding = predictor.embed_keyed(key, load)
    height, width = embedding.original_hw
    segmenter = WholeImageSegmenter(
        predictor,
        WholeImageConfig(
            points_per_side=settings.points_per_side,
            max_masks=max(1, min(settings.max_regions, MASK_BYTES_BUDGET // (height * width))),
            pred_iou_thresh=settings.pred_iou_thresh,
            stability_score_thresh=settings.stability_score_thresh,
        ),
    )
    run = segmenter.run(
        embedding, granularities=(settings.preannotate_granularity,), should_stop=late
    )
    results, regions = [], []
    for index, generated in enumerate(run.masks):
        region_id = result_id(task.id, f"auto-{index}")
        regions.append((region_id, label, generated.granularity))
        results.append(
            brush_result(
                generated.mask,
                region_id=region_id,
                from_name=brush.name,
                to_name=image_name,
                label=label,
                score=generated.score,
            )
        )
    _record(ctx, project_id, task, regions, version)
    if not run.complete:
        logger.warning(
            "task %s: pre-annotation stopped at the deadline after %d of %d grid clicks",
            task.id,
            run.points_decoded,
            run.points_total,
        )
    score = sum(m.score for m in run.masks) / len(run.masks) if run.masks else 0.0
    note = "" if run.complete else PARTIAL_NOTE
    return prediction(results, score=score, model_version=version + note)


def setup(ctx: BackendContext, body: Mapping[str, Any]) -> dict[str, Any]:
    """Answer /setup: store the project's config and options; report the model version.

    A project with a current task specialist reports the specialist's version (the name its
    predictions carry), so that Label Studio's batch predictions skip the tasks it predicted.
    """
    from labeling_pipeline.specialist.service import active_specialist_paths

    request = validate(SetupRequest, body)
    project_id = ls_project_id(request.project)
    options = parse_extra_params(request.extra_params)
    specialists: list[Any] = []
    if project_id is not None:
        with ctx.store.session() as session:
            project = label_studio_project(session, project_id, label_config=request.label_config)
            set_project_options(session, project.id, options)
            store_id = project.id
        specialists = active_specialist_paths(ctx.store, store_id)
    ctx.remember_label_studio(request.hostname, request.access_token)
    scope = serving_scope(project_id)
    ctx.runtime.preload(scope)  # in the background: /setup never waits for a model
    if specialists:
        return {"model_version": MODEL_VERSION_PREFIX + specialists[0][0]}
    return {"model_version": ctx.runtime.version_for(scope)}

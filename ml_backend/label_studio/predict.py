"""/predict: interactive masks from smart clicks and boxes, and whole-image pre-annotation.

decode (Label Studio JSON -> prompts, granularity) -> core (cached embedding, prediction) ->
encode (brush RLE result). The granularity used for every suggested mask is recorded so that
an accepted mask can be exported with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from core_model.masks import resize_mask
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from labeling_pipeline.store.repository import get_or_create_project, record_predictions
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.config import LabelConfigError, ProjectConfig, parse_label_config
from ml_backend.label_studio.context import BackendContext
from ml_backend.label_studio.convert import (
    ClickGroup,
    brush_result,
    parse_context,
    prediction,
    result_id,
)
from ml_backend.label_studio.project_settings import ProjectSettings

logger = logging.getLogger(__name__)


def ls_project_id(body: Mapping[str, Any]) -> int | None:
    """Label Studio sends ``"project": "<id>.<created timestamp>"``."""
    raw = str(body.get("project") or "").split(".")[0]
    return int(raw) if raw.isdigit() else None


def _tasks(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
        raise BadRequestError("'tasks' must be a non-empty list of task objects")
    return tasks


def _annotator(task: Mapping[str, Any]) -> str:
    """The requesting annotator: interactive calls carry only their own drafts."""
    for draft in reversed(task.get("drafts") or []):
        user = draft.get("user") or draft.get("completed_by")
        if user is not None:
            return str(user)
    return "anonymous"


def _image_url(task: Mapping[str, Any], config: ProjectConfig, image_name: str) -> str:
    key = config.images.get(image_name)
    if key is None:
        raise LabelConfigError(f'the labeling config has no <Image name="{image_name}">')
    url = (task.get("data") or {}).get(key)
    if not isinstance(url, str) or not url:
        raise BadRequestError(f"task {task.get('id')} has no image under data.{key}")
    return url


def predict(ctx: BackendContext, body: Mapping[str, Any]) -> dict[str, Any]:
    """Answer a /predict request."""
    if not isinstance(body, Mapping):
        raise BadRequestError("the request body must be a JSON object")
    tasks = _tasks(body)
    project_id = ls_project_id(body)
    label_config = body.get("label_config")
    if not isinstance(label_config, str) or not label_config.strip():
        raise BadRequestError("'label_config' is missing")
    config = parse_label_config(label_config)
    settings = ctx.project_settings(project_id)
    params = body.get("params") or {}
    context = params.get("context") if isinstance(params, Mapping) else None
    if isinstance(context, Mapping):
        group = parse_context(
            context.get("result") or [], config, default_granularity=settings.default_granularity
        )
        if group is None:  # e.g. the deletion notice after an accept: nothing to do
            return {"results": []}
        ctx.metrics.predictions.labels("interactive").inc()
        return {"results": [_interactive(ctx, tasks[0], config, group, project_id)]}
    if not settings.preannotate:
        return {"results": []}
    ctx.metrics.predictions.labels("whole_image").inc()
    return {"results": [_whole_image(ctx, task, config, settings, project_id) for task in tasks]}


def _interactive(
    ctx: BackendContext,
    task: Mapping[str, Any],
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
    predictor, version = ctx.runtime.serving()
    key, load = ctx.images.resolve(_image_url(task, config, group.to_name), client=ctx.ls_client())
    embedding = predictor.embed_keyed(key, load)
    height, width = embedding.original_hw
    task_key, user = str(task.get("id")), _annotator(task)
    remembered = None
    if group.box_pct is not None and not group.points_pct:
        ctx.memory.remember(task_key, user, group.box_pct, target)
    elif group.box_pct is None:
        remembered = ctx.memory.box_for(task_key, user, target)
    prompts = group.prompts(height, width, box_pct=remembered)
    result = predictor.predict(embedding, prompts, granularity=group.granularity)
    mask = result.masks[0]
    if group.original_hw is not None and group.original_hw != (height, width):
        mask = resize_mask(mask, height=group.original_hw[0], width=group.original_hw[1])
    region_id = result_id(task.get("id"), group.anchor_id)
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
        task.get("id"),
        len(group.points_pct),
        " + box" if prompts.box else "",
        group.granularity,
        group.granularity_source,
        int(mask.sum()),
    )
    return prediction([encoded], score=score, model_version=version)


def _record(
    ctx: BackendContext,
    project_id: int | None,
    task: Mapping[str, Any],
    regions: list[tuple[str, str, float]],
    version: str,
) -> None:
    task_id = task.get("id")
    if not isinstance(task_id, int):
        return
    with ctx.store.session() as session:
        record_predictions(
            session,
            ls_project_id=project_id,
            ls_task_id=task_id,
            regions=regions,
            model_version=version,
        )


def _whole_image(
    ctx: BackendContext,
    task: Mapping[str, Any],
    config: ProjectConfig,
    settings: ProjectSettings,
    project_id: int | None,
) -> dict[str, Any]:
    image_name, _ = config.first_image()
    brush = config.brush_for(image_name)
    label = settings.preannotate_label or (brush.labels[0] if brush.labels else "")
    if label not in brush.labels:
        raise LabelConfigError(f"pre-annotation label {label!r} is not in <{brush.name}>")
    predictor, version = ctx.runtime.serving()
    key, load = ctx.images.resolve(_image_url(task, config, image_name), client=ctx.ls_client())
    segmenter = WholeImageSegmenter(
        predictor,
        WholeImageConfig(
            points_per_side=settings.points_per_side,
            max_masks=settings.max_regions,
            pred_iou_thresh=settings.pred_iou_thresh,
            stability_score_thresh=settings.stability_score_thresh,
        ),
    )
    masks = segmenter.segment(
        predictor.embed_keyed(key, load), granularities=(settings.preannotate_granularity,)
    )
    results, regions = [], []
    for index, generated in enumerate(masks):
        region_id = result_id(task.get("id"), f"auto-{index}")
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
    score = sum(m.score for m in masks) / len(masks) if masks else 0.0
    return prediction(results, score=score, model_version=version)


def setup(ctx: BackendContext, body: Mapping[str, Any]) -> dict[str, Any]:
    """Answer /setup: store the project's config and options; report the model version."""
    from ml_backend.label_studio.project_settings import parse_extra_params

    if not isinstance(body, Mapping):
        raise BadRequestError("the request body must be a JSON object")
    project_id = ls_project_id(body)
    options = parse_extra_params(body.get("extra_params"))
    schema = body.get("schema")
    if project_id is not None:
        with ctx.store.session() as session:
            project = get_or_create_project(
                session,
                f"Label Studio project {project_id} [ls:{project_id}]",
                ls_project_id=project_id,
                label_config=schema if isinstance(schema, str) else None,
            )
            project.config = {**(project.config or {}), **options}
    ctx.remember_label_studio(body.get("hostname"), body.get("access_token"))
    return {"model_version": ctx.runtime.model_version}

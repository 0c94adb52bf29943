"""/webhook: keep accepted brush masks in the store; START_TRAINING queues a training job.

Label Studio delivers events synchronously with a 1 s timeout, so the handler does only quick
database work (decoding a few brush masks); fetching the task image goes to a Celery task.
Events are idempotent by annotation id: an update replaces the annotation's masks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from labeling_pipeline.label_studio.annotations import annotation_masks
from labeling_pipeline.store.repository import (
    delete_human_masks,
    label_studio_project,
    prediction_granularities,
    replace_human_masks,
)
from labeling_pipeline.worker.jobs import submit_training
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import BackendContext
from ml_backend.label_studio.schemas import (
    AnnotationRef,
    BrushRegion,
    WebhookAnnotation,
    WebhookEvent,
    WebhookProject,
    WebhookTask,
    validate,
)

logger = logging.getLogger(__name__)

_ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def _project(ctx: BackendContext, event: WebhookEvent) -> int:
    if event.project is None or event.project.get("id") is None:
        raise BadRequestError("the event has no project id")
    record = validate(WebhookProject, event.project, where="project")
    with ctx.store.session() as session:
        return label_studio_project(
            session,
            record.id,
            title=record.title or None,
            label_config=record.label_config,
        ).id


def _check_brush_regions(results: list[dict[str, Any]], max_pixels: int) -> None:
    """Check the brush regions' shapes and sizes before any mask is decoded.

    Raises:
        BadRequestError: a brush region of the wrong shape, or larger than the pixel limit
            (its decoded mask would not fit the backend's memory budget).
    """
    for index, item in enumerate(results):
        if str(item.get("type", "")).lower() != "brushlabels":
            continue
        region = validate(BrushRegion, item, where=f"annotation.result.{index}")
        width, height = region.original_width or 0, region.original_height or 0
        if width * height > max_pixels:
            raise BadRequestError(
                f"annotation.result.{index}: a {width}x{height} mask is more than the limit "
                f"of {max_pixels} pixels"
            )


def _store_annotation(ctx: BackendContext, event: WebhookEvent) -> dict[str, Any]:
    if event.annotation is None or event.annotation.get("id") is None:
        raise BadRequestError("the event has no annotation with an id")
    annotation = validate(WebhookAnnotation, event.annotation, where="annotation")
    task = validate(WebhookTask, event.task or {}, where="task")
    task_id = annotation.task if annotation.task is not None else task.id
    if task_id is None:
        raise BadRequestError("the annotation has no task id")
    _check_brush_regions(annotation.result or [], ctx.settings.max_image_pixels)
    project_id = _project(ctx, event)
    if annotation.was_cancelled:
        with ctx.store.session() as session:
            delete_human_masks(session, project_id, [annotation.id])
        return {"status": "ignored", "reason": "skipped task (was_cancelled)"}
    with ctx.store.session() as session:
        converted = annotation_masks(
            annotation.result or [], granularities=prediction_granularities(session, task_id)
        )
        stored = replace_human_masks(
            session,
            project_id,
            ls_task_id=task_id,
            annotation_id=annotation.id,
            masks=converted.masks,
        )
    author = annotation.completed_by
    ctx.memory.forget(str(task_id), str(author) if isinstance(author, (int, str)) else "")
    return {"status": "stored", "masks": stored, "problems": converted.problems}


def handle_event(ctx: BackendContext, body: Any) -> dict[str, Any]:
    """Handle one webhook event; every unknown action is acknowledged and ignored.

    Raises:
        BadRequestError: not an event object, or a known event whose ids are missing, of the
            wrong type or out of range (see `schemas`).
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("action"), str):
        raise BadRequestError("a webhook event is a JSON object with an 'action'")
    event = validate(WebhookEvent, body)
    if event.action in _ANNOTATION_EVENTS:
        return _store_annotation(ctx, event)
    if event.action == "ANNOTATIONS_DELETED":
        refs = [validate(AnnotationRef, a, where="annotations") for a in event.annotations or []]
        project_id = _project(ctx, event)
        with ctx.store.session() as session:
            removed = delete_human_masks(
                session, project_id, [ref.id for ref in refs if ref.id is not None]
            )
        return {"status": "deleted", "masks": removed}
    if event.action == "START_TRAINING":
        project_id = _project(ctx, event)
        job_id = submit_training(
            ctx.celery, ctx.store, project_id, reason="Start training in Label Studio"
        )
        return {"status": "queued", "job_id": job_id}
    return {"status": "ignored", "action": event.action}

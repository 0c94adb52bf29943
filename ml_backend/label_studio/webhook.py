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
    get_or_create_project,
    prediction_granularities,
    replace_human_masks,
)
from labeling_pipeline.worker.jobs import submit_training
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import BackendContext

logger = logging.getLogger(__name__)

_ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def _project(ctx: BackendContext, body: Mapping[str, Any]) -> int:
    record = body.get("project") or {}
    ls_id = record.get("id") if isinstance(record, Mapping) else None
    if not isinstance(ls_id, int):
        raise BadRequestError("the event has no project id")
    title = record.get("title") or f"Label Studio project {ls_id}"
    with ctx.store.session() as session:
        return get_or_create_project(
            session,
            f"{title} [ls:{ls_id}]",
            ls_project_id=ls_id,
            label_config=record.get("label_config"),
        ).id


def _store_annotation(ctx: BackendContext, body: Mapping[str, Any]) -> dict[str, Any]:
    annotation = body.get("annotation")
    if not isinstance(annotation, Mapping) or not isinstance(annotation.get("id"), int):
        raise BadRequestError("the event has no annotation with an id")
    task = body.get("task")
    task = task if isinstance(task, Mapping) else {}
    task_id = annotation.get("task")
    task_id = task_id if isinstance(task_id, int) else task.get("id")
    if not isinstance(task_id, int):
        raise BadRequestError("the annotation has no task id")
    project_id = _project(ctx, body)
    if annotation.get("was_cancelled"):
        with ctx.store.session() as session:
            delete_human_masks(session, project_id, [annotation["id"]])
        return {"status": "ignored", "reason": "skipped task (was_cancelled)"}
    with ctx.store.session() as session:
        converted = annotation_masks(
            annotation.get("result") or [], granularities=prediction_granularities(session, task_id)
        )
        stored = replace_human_masks(
            session,
            project_id,
            ls_task_id=task_id,
            annotation_id=annotation["id"],
            masks=converted.masks,
        )
    ctx.memory.forget(str(task_id), str(annotation.get("completed_by", "")))
    return {"status": "stored", "masks": stored, "problems": converted.problems}


def handle_event(ctx: BackendContext, body: Any) -> dict[str, Any]:
    """Handle one webhook event; every unknown action is acknowledged and ignored."""
    if not isinstance(body, Mapping) or not isinstance(body.get("action"), str):
        raise BadRequestError("a webhook event is a JSON object with an 'action'")
    action = body["action"]
    if action in _ANNOTATION_EVENTS:
        return _store_annotation(ctx, body)
    if action == "ANNOTATIONS_DELETED":
        ids = [a.get("id") for a in body.get("annotations") or [] if isinstance(a, Mapping)]
        project_id = _project(ctx, body)
        with ctx.store.session() as session:
            removed = delete_human_masks(
                session, project_id, [i for i in ids if isinstance(i, int)]
            )
        return {"status": "deleted", "masks": removed}
    if action == "START_TRAINING":
        project_id = _project(ctx, body)
        job_id = submit_training(
            ctx.celery, ctx.store, project_id, reason="Start training in Label Studio"
        )
        return {"status": "queued", "job_id": job_id}
    return {"status": "ignored", "action": action}

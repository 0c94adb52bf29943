"""Prefetch the embeddings of tasks Label Studio opens, so that the first click finds them ready.

Label Studio calls /predict without a context when an annotator opens a task. That call
schedules, on the context's `Prefetcher` (see `ml_backend.prefetch`), one background job per
task image: fetch the image (the same guarded fetch as a click), wait until the model is idle,
run the encoder into the embedding cache. With ``UNSAMV2_PREFETCH_NEXT=N`` one more job asks
Label Studio's API for the next N tasks of the project (by id) and prefetches their images
too. A click that arrives while its image is being embedded waits for that run (the cache's
single flight) instead of starting a second one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from core_model.serving import MaskPredictor
from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError
from labeling_pipeline.label_studio.config import ProjectConfig
from labeling_pipeline.store.versions import serving_scope
from ml_backend.label_studio.context import BackendContext
from ml_backend.label_studio.schemas import Task
from ml_backend.model_door import BackgroundCancelledError, GatedPredictor
from ml_backend.prefetch import PrefetchJob

logger = logging.getLogger(__name__)

MAX_PREFETCH_WAITING = 32
"""Most prefetch jobs waiting, whatever the cache size."""

_ASSUMED_EMBEDDING_BYTES = 16 << 20  # Hiera-S at 1024 px, before the first embedding is seen


def cache_room(predictor: MaskPredictor) -> int:
    """How many prefetched embeddings may wait: half the cache's entries (the rest are in use).

    The size of one embedding is read from the cache's counters once it holds one.
    """
    stats = getattr(predictor.cache, "stats", None)
    if stats is None:
        return 4
    counters = stats()
    each = counters.bytes // counters.entries if counters.entries else _ASSUMED_EMBEDDING_BYTES
    room = int(counters.max_bytes) // max(1, int(each)) // 2
    return max(1, min(MAX_PREFETCH_WAITING, room))


def _embed_job(
    ctx: BackendContext, scope: str, url: str, client: LabelStudioClient | None
) -> PrefetchJob:
    def run(stale: Callable[[], bool]) -> None:
        if stale():  # its annotator has moved on: no download either
            raise BackgroundCancelledError(f"prefetch of {url[:200]} is stale")
        predictor, _ = ctx.runtime.serving(scope)
        key, load = ctx.images.resolve(url, client=client)
        if isinstance(predictor, GatedPredictor):
            predictor.door.wait_until_idle(stale)
        predictor.embed_keyed(key, load)

    return PrefetchJob(f"{scope}|{url}", run)


def next_task_urls(
    client: LabelStudioClient, project_id: int, task_id: int, count: int, data_key: str
) -> list[str]:
    """Image URLs of the `count` tasks after `task_id` (by id) in a Label Studio project.

    Raises:
        LabelStudioError: the API call fails or answers something unexpected.
    """
    query = {
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:id",
                    "operator": "greater",
                    "type": "Number",
                    "value": task_id,
                }
            ],
        },
        "ordering": ["tasks:id"],
    }
    answer: Any = client.get_json(
        "/api/tasks",
        project=project_id,
        page=1,
        page_size=count,
        fields="task_only",
        query=json.dumps(query),
    )
    tasks = answer.get("tasks") if isinstance(answer, dict) else answer
    if not isinstance(tasks, list):
        raise LabelStudioError(f"unexpected task list of project {project_id}")
    urls = []
    for task in tasks[:count]:
        data = task.get("data") if isinstance(task, dict) else None
        url = data.get(data_key) if isinstance(data, dict) else None
        if (
            isinstance(url, str)
            and url
            and isinstance(task.get("id"), int)
            and task["id"] > task_id
        ):
            urls.append(url)
    return urls


def _next_tasks_job(
    ctx: BackendContext,
    scope: str,
    client: LabelStudioClient,
    project_id: int,
    task_id: int,
    data_key: str,
) -> PrefetchJob:
    def run(stale: Callable[[], bool]) -> None:
        try:
            urls = next_task_urls(client, project_id, task_id, ctx.settings.prefetch_next, data_key)
        except LabelStudioError as exc:
            logger.info("cannot list the tasks after %d for prefetching: %s", task_id, exc)
            return
        if urls and not stale():
            predictor, _ = ctx.runtime.serving(scope)
            jobs = [_embed_job(ctx, scope, url, client) for url in urls]
            ctx.prefetcher.schedule(jobs, limit=cache_room(predictor))

    return PrefetchJob(f"{scope}|next-after:{task_id}", run)


def prefetch_opened(
    ctx: BackendContext, tasks: Sequence[Task], config: ProjectConfig, project_id: int | None
) -> None:
    """Schedule the embeddings of opened tasks (and of the next ones); never raises."""
    if ctx.settings.prefetch_workers < 1 or not config.images:
        return
    scope = serving_scope(project_id)
    try:
        predictor, _ = ctx.runtime.serving(scope)
    except Exception:  # no model yet: nothing to prefetch for
        return
    _, data_key = config.first_image()
    client = ctx.ls_client()
    jobs = []
    for task in tasks:
        url = (task.data or {}).get(data_key)
        if isinstance(url, str) and url:
            jobs.append(_embed_job(ctx, scope, url, client))
    last = tasks[-1].id
    if ctx.settings.prefetch_next and client and project_id is not None and isinstance(last, int):
        jobs.append(_next_tasks_job(ctx, scope, client, project_id, last, data_key))
    if jobs:
        ctx.prefetcher.schedule(jobs, limit=cache_room(predictor))

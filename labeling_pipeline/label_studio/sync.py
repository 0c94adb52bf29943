"""Pull a Label Studio project into the store: its images and accepted brush annotations.

Skipped tasks (``was_cancelled``) are ignored; every other annotation's brush regions replace
what the store held for that annotation; annotations that disappeared from the synced tasks are
removed. A task whose image cannot be fetched is reported and its annotations are still stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core_model.errors import InvalidImageError
from labeling_pipeline.label_studio.annotations import annotation_masks
from labeling_pipeline.label_studio.client import LabelStudioClient
from labeling_pipeline.label_studio.config import LabelConfigError, parse_label_config
from labeling_pipeline.label_studio.fetch import FetchPolicy, ImageFetchError, fetch_task_image
from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.images import cache_image_bytes
from labeling_pipeline.store.masks import delete_other_annotations
from labeling_pipeline.store.repository import add_image, label_studio_project, replace_human_masks

logger = logging.getLogger(__name__)


@dataclass
class SyncResult:
    """Counts of one synchronisation."""

    project_id: int = 0
    tasks: int = 0
    images: int = 0
    annotations: int = 0
    masks: int = 0
    removed_annotations: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts (at most 20 problems)."""
        return {
            "project_id": self.project_id,
            "tasks": self.tasks,
            "images": self.images,
            "annotations": self.annotations,
            "masks": self.masks,
            "removed_annotations": self.removed_annotations,
            "problems": self.problems[:20],
        }


def image_data_key(label_config: str | None) -> str:
    """Return the task-data key of the first ``<Image value="$key">`` tag (default "image")."""
    if label_config:
        try:
            return parse_label_config(label_config).first_image()[1] or "image"
        except LabelConfigError:
            pass
    return "image"


def _store_task_image(
    settings: PipelineSettings,
    store: Store,
    project_id: int,
    task: Mapping[str, Any],
    url: str,
    fetch: Callable[[str], bytes],
    result: SyncResult,
) -> int | None:
    try:
        cached = cache_image_bytes(fetch(url), settings.images_dir)
    except (ImageFetchError, InvalidImageError) as exc:
        result.problems.append(f"task {task.get('id')}: {exc}")
        return None
    with store.session() as session:
        image = add_image(
            session,
            project_id,
            sha256=cached.sha256,
            local_path=str(cached.path),
            width=cached.width,
            height=cached.height,
            source_url=url,
            ls_task_id=int(task["id"]),
        )
        result.images += 1
        return image.id


def _store_annotations(
    store: Store,
    project_id: int,
    task: Mapping[str, Any],
    image_id: int | None,
    result: SyncResult,
) -> set[int]:
    kept: set[int] = set()
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled") or "id" not in annotation:
            continue
        converted = annotation_masks(annotation.get("result") or [])
        result.problems += [f"annotation {annotation['id']}: {p}" for p in converted.problems]
        with store.session() as session:
            result.masks += replace_human_masks(
                session,
                project_id,
                ls_task_id=int(task["id"]),
                annotation_id=int(annotation["id"]),
                masks=converted.masks,
                image_id=image_id,
            )
        kept.add(int(annotation["id"]))
        result.annotations += 1
    return kept


def sync_project(
    settings: PipelineSettings,
    store: Store,
    ls_project_id: int,
    *,
    client: LabelStudioClient,
    policy: FetchPolicy | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SyncResult:
    """Synchronise one Label Studio project; return counts and problems.

    Args:
        settings: For the image cache location.
        store: Target store.
        ls_project_id: Label Studio project id.
        client: Authenticated client.
        policy: Image fetch policy (Label Studio's own host is always allowed).
        on_progress: Called with (tasks done, tasks total).
    """
    policy = policy or FetchPolicy()
    record = client.get_project(ls_project_id)
    label_config = record.get("label_config")
    title = str(record.get("title") or "project")
    with store.session() as session:
        project = label_studio_project(
            session, ls_project_id, title=title, label_config=label_config
        )
        project_id = project.id
    result = SyncResult(project_id=project_id)
    key = image_data_key(label_config)
    tasks = client.export_tasks(ls_project_id)
    for done, task in enumerate(tasks, start=1):
        if "id" not in task:
            continue
        result.tasks += 1
        url = (task.get("data") or {}).get(key)
        image_id = (
            _store_task_image(
                settings,
                store,
                project_id,
                task,
                url,
                lambda u: fetch_task_image(u, client=client, policy=policy),
                result,
            )
            if url
            else None
        )
        kept = _store_annotations(store, project_id, task, image_id, result)
        with store.session() as session:
            result.removed_annotations += delete_other_annotations(
                session, project_id, int(task["id"]), kept
            )
        if on_progress is not None:
            on_progress(done, len(tasks))
    logger.info("synced Label Studio project %s: %s", ls_project_id, result.as_dict())
    return result

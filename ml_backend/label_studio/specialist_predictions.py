"""Pre-annotation by a project's active task specialist, for /predict without a context.

When a Label Studio project has a current specialist (it passed its gate), an opened task,
"Retrieve predictions" and batch predictions get the specialist's masks: one brush region per
connected component of at least `MIN_AREA_PX` pixels, the probability thresholded at the fixed
`THRESHOLD` (never stretched per image), each region scored by its mean probability. The task's
score is the mean region score, or, with the project option ``specialist_score: "uncertainty"``,
the share of uncertain pixels (0.3 < p < 0.7) so that Label Studio's Data Manager can sort tasks
by it (active learning); the model version names the specialist version. Clicks
(requests with a context) never come here: the interactive path is unchanged.

A specialist that cannot be loaded (e.g. its base weights changed) is logged and skipped: the
project then gets what it got without one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core_model.errors import UnSAMv2Error

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from core_model.specialist import LoadedSpecialist
    from labeling_pipeline.label_studio.config import ProjectConfig
    from ml_backend.label_studio.context import BackendContext
    from ml_backend.label_studio.project_settings import ProjectSettings
    from ml_backend.label_studio.schemas import Task

logger = logging.getLogger(__name__)

THRESHOLD = 0.5
MIN_AREA_PX = 64
MODEL_VERSION_PREFIX = "specialist "


class _Loaded:
    """Specialists loaded in this process, by version name (the newest `max_items` kept)."""

    def __init__(self, max_items: int = 2) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, LoadedSpecialist] = OrderedDict()
        self._lock = threading.Lock()  # one load and one forward pass at a time

    def get(self, name: str, path: Path) -> LoadedSpecialist:
        from core_model.specialist import load_specialist

        with self._lock:
            if name not in self._items:
                self._items[name] = load_specialist(path)
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
            self._items.move_to_end(name)
            return self._items[name]

    def lock(self) -> threading.Lock:
        return self._lock


_LOADED = _Loaded()


def loaded_specialist(name: str, path: Path, device: str = "cpu") -> LoadedSpecialist:
    """Return the copy of a version that `specialist_probabilities` runs, moved to `device`.

    Raises:
        UnSAMv2Error: the specialist cannot be loaded (e.g. its base weights changed).
    """
    loaded = _LOADED.get(name, path)
    if device != "cpu":
        with _LOADED.lock():  # not during a forward pass
            loaded.model.to(device)
    return loaded


def specialist_probabilities(
    name: str, path: Path, image: npt.NDArray[np.uint8]
) -> tuple[LoadedSpecialist, npt.NDArray[np.float32]]:
    """Run a specialist version (loaded once per process) on an image.

    Args:
        name: Version name (the cache key).
        path: Its checkpoint file.
        image: (H, W, 3) uint8 RGB.

    Returns:
        The loaded specialist and its (C, H, W) float32 probabilities in the image's frame.

    Raises:
        UnSAMv2Error: the specialist cannot be loaded (e.g. its base weights changed).
    """
    from core_model.specialist import predict_probabilities

    loaded = _LOADED.get(name, path)
    with _LOADED.lock():
        return loaded, predict_probabilities(loaded.model, image)


def _active(ctx: BackendContext, ls_project_id: int) -> tuple[str, Path] | None:
    from labeling_pipeline.specialist.service import active_specialist_paths
    from labeling_pipeline.store.repository import NotFoundError, find_project

    try:
        with ctx.store.session() as session:
            project_id = find_project(session, f"ls:{ls_project_id}").id
    except NotFoundError:
        return None
    active = active_specialist_paths(ctx.store, project_id)
    return active[0] if active else None


def specialist_predictions(
    ctx: BackendContext,
    tasks: Sequence[Task],
    config: ProjectConfig,
    project_id: int | None,
    settings: ProjectSettings,
) -> list[dict[str, Any]] | None:
    """Return one prediction per task from the project's specialist, or None without one."""
    active = _active(ctx, project_id) if project_id is not None else None
    if active is None or not config.images:
        return None
    name, path = active
    try:
        loaded = _LOADED.get(name, path)
    except UnSAMv2Error as exc:
        logger.error(
            "specialist %s of Label Studio project %s not served: %s", name, project_id, exc
        )
        return None
    image_name, _ = config.first_image()
    brush = config.brush_for(image_name)
    missing = [label for label in loaded.labels if label not in brush.labels]
    if missing:
        logger.warning(
            "specialist %s labels %s are not in <%s>; not served", name, missing, brush.name
        )
        return None
    uncertainty = settings.specialist_score == "uncertainty"
    results = [
        _predict_task(ctx, task, config, image_name, brush.name, loaded, name, uncertainty)
        for task in tasks
    ]
    if not settings.preannotate:  # the annotator's first click is still coming
        from ml_backend.label_studio.prefetch_tasks import prefetch_opened

        prefetch_opened(ctx, tasks, config, project_id)
    return results


def _predict_task(
    ctx: BackendContext,
    task: Task,
    config: ProjectConfig,
    image_name: str,
    from_name: str,
    loaded: LoadedSpecialist,
    version: str,
    uncertainty: bool,
) -> dict[str, Any]:
    from core_model.specialist import predict_probabilities, regions, uncertain_share
    from ml_backend.errors import BadRequestError
    from ml_backend.label_studio.convert import brush_result, prediction, result_id

    url = (task.data or {}).get(config.images[image_name])
    if not isinstance(url, str) or not url:
        raise BadRequestError(f"task {task.id} has no image under data.{config.images[image_name]}")
    _, load = ctx.images.resolve(url, client=ctx.ls_client())
    image = load()
    with _LOADED.lock():
        prob = predict_probabilities(loaded.model, image)
    found = regions(prob, threshold=THRESHOLD, min_area_px=MIN_AREA_PX)
    results = []
    for index, region in enumerate(found):
        label = loaded.labels[max(region.class_index - 1, 0)]
        results.append(
            brush_result(
                region.mask,
                region_id=result_id(task.id, f"specialist-{index}"),
                from_name=from_name,
                to_name=image_name,
                label=label,
                score=region.score,
            )
        )
    uncertain = uncertain_share(prob)
    confidence = sum(r.score for r in found) / len(found) if found else 0.0
    score = uncertain if uncertainty else confidence
    logger.info(
        "task %s: specialist %s found %d region(s), uncertain share %.3f",
        task.id,
        version,
        len(found),
        uncertain,
    )
    return prediction(results, score=score, model_version=MODEL_VERSION_PREFIX + version)

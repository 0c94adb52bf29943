"""Store lookups for exports and imports run on the backend's data directory.

The backend records the granularity of every mask it suggests (``prediction_records``, by task
and result id) and copies it onto the stored human masks when an annotation arrives
(``human_masks``, by annotation and region id). An export looks both up per task; a prediction
import records the granularity of what it posts, so masks accepted from it keep theirs. Synced
images are cached as ``<sha256>.<ext>`` (the ``file_name`` pseudo-label workers write), which
the import maps back to their Label Studio tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

from labeling_pipeline.export.predictions import RecordPredicted
from labeling_pipeline.export.records import GranularityMap, GranularitySource
from labeling_pipeline.store import Store
from labeling_pipeline.store.masks import annotation_granularities
from labeling_pipeline.store.repository import (
    prediction_granularities,
    record_predictions,
    task_ids_by_file_name,
)


def store_granularities(store: Store) -> GranularitySource:
    """Return a lookup: Label Studio task id -> granularity by (annotation id, region id).

    Keys ``(annotation_id, region_id)`` come from human masks, ``(None, region_id)`` from
    prediction records.
    """

    def lookup(ls_task_id: int) -> GranularityMap:
        with store.session() as session:
            known: dict[tuple[int | None, str], float] = {
                (None, region): value
                for region, value in prediction_granularities(session, ls_task_id).items()
            }
            for key, value in annotation_granularities(session, ls_task_id).items():
                known[key] = value
        return known

    return lookup


def store_task_names(store: Store, ls_project_id: int) -> dict[str, int]:
    """Return cached image file name (``<sha256>.<ext>``) -> task id for a synced project."""
    with store.session() as session:
        return task_ids_by_file_name(session, ls_project_id)


def store_prediction_recorder(
    store: Store, ls_project_id: int, model_version: str
) -> RecordPredicted:
    """Return a callback that records the granularity of imported prediction regions."""

    def record(ls_task_id: int, regions: Sequence[tuple[str, str, float]]) -> None:
        if not regions:
            return
        with store.session() as session:
            record_predictions(
                session,
                ls_project_id=ls_project_id,
                ls_task_id=ls_task_id,
                regions=regions,
                model_version=model_version,
            )

    return record

"""Specialist training as a job: a job row with the request, run by the worker's task.

`create_specialist_job` records the request (project, labels, settings, base files);
`run_specialist_job` is what the Celery task on the ``training`` queue calls. A redelivered job
that already finished returns its stored result; one that was interrupted resumes training from
its run folder (``<data dir>/specialists/job-<id>``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.specialist.data import MIN_IMAGES
from labeling_pipeline.specialist.gate import SpecialistGate
from labeling_pipeline.specialist.service import train_specialist
from labeling_pipeline.specialist.trainer import SpecialistTrainConfig
from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import (
    create_job,
    finish_job,
    get_job,
    set_job_progress,
    start_job,
)
from labeling_pipeline.store.repository import find_project

logger = logging.getLogger(__name__)

JOB_KIND = "specialist"


def create_specialist_job(
    store: Store,
    project: str | int,
    labels: Sequence[str],
    *,
    config: Mapping[str, Any] | None = None,
    gate: Mapping[str, Any] | None = None,
    hiera: str | None = None,
    dino: str | None = None,
    min_images: int | None = None,
) -> int:
    """Check the settings and record a queued specialist job; return its id.

    Raises:
        SpecialistConfigError: unknown or bad settings (no job is recorded).
        NotFoundError: no such project.
    """
    SpecialistTrainConfig.from_mapping(config)
    SpecialistGate.from_mapping(gate)
    params: dict[str, Any] = {
        "labels": list(labels),
        "config": dict(config or {}),
        "gate": dict(gate or {}),
        "hiera": hiera,
        "dino": dino,
    }
    if min_images is not None:
        params["min_images"] = int(min_images)
    with store.session() as session:
        project_id = find_project(session, project).id
        return create_job(session, JOB_KIND, project_id=project_id, params=params).id


def run_specialist_job(
    settings: PipelineSettings, store: Store, job_id: int, *, show_progress: bool = False
) -> dict[str, Any]:
    """Train the job's specialist and record the outcome on the job row.

    Raises:
        UnSAMv2Error: the data, settings or base files were refused (the caller fails the job).
    """
    with store.session() as session:
        job = get_job(session, job_id)
        if job.status == "done":
            return dict(job.result)
        start_job(session, job_id)
        project_id, params = job.project_id, dict(job.params or {})
    config = dict(params.get("config") or {})
    config.setdefault("device", settings.device)

    def progress(step: int, total: int, loss: float) -> None:
        if step == total or step % 10 == 0:
            with store.session() as session:
                set_job_progress(
                    session, job_id, done=step, total=total, message=f"loss {loss:.4f}"
                )

    run = train_specialist(
        store,
        models_dir=settings.models_dir,
        run_dir=settings.data_dir / "specialists" / f"job-{job_id:05d}",
        project=int(project_id or 0),
        labels=list(params.get("labels") or []),
        config=SpecialistTrainConfig.from_mapping(config),
        gate=SpecialistGate.from_mapping(params.get("gate")),
        hiera=Path(params["hiera"]) if params.get("hiera") else None,
        dino=Path(params["dino"]) if params.get("dino") else None,
        show_progress=show_progress,
        on_step=progress,
        min_images=int(params.get("min_images", MIN_IMAGES)),
    )
    result = run.to_dict()
    with store.session() as session:
        finish_job(session, job_id, result=result, message=run.verdict.reason)
    return result

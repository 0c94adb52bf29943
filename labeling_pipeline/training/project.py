"""Train a project's model: pseudo-labels (+ accepted human masks, UnSAMv2+) -> train -> publish.

Used by the Celery ``unsamv2.train`` task and by ``unsamv2 train``. Human masks enter the
divide stage of the pseudo-label pipeline as proposals (source "human", never refined), so they
get granularities from the part/whole hierarchies they form with the pseudo-labels. The base
model is the configured checkpoint (or the best one in the weights folder); what is trained is
published as a new model version only when the whole run succeeded.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core_model.masks import decode_coco_rle
from labeling_pipeline.model_files.registry import ModelRegistry
from labeling_pipeline.model_files.weights import find_checkpoint
from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.locks import exclusive_file_lock
from labeling_pipeline.store.masks import human_masks_by_image
from labeling_pipeline.store.models import HumanMask, Image
from labeling_pipeline.store.repository import (
    fail_job,
    finish_job,
    get_job,
    project_images,
    set_job_progress,
    start_job,
)
from labeling_pipeline.store.runs import finish_training_run, training_run_for_job
from labeling_pipeline.training.config import TrainConfig
from labeling_pipeline.training.data import TrainingDataError, TrainingImage, training_images
from labeling_pipeline.training.loop import Trainer
from labeling_pipeline.training.publish import publish_trained_model

if TYPE_CHECKING:
    from labeling_pipeline.pseudo_labels.features import FeatureExtractor

#: Returns the feature extractor for a spec such as ``color`` or ``dinov2:PATH``.
ExtractorFactory = Callable[[str], "FeatureExtractor"]

logger = logging.getLogger(__name__)


def base_checkpoint(settings: PipelineSettings) -> Path:
    """The checkpoint training starts from.

    Raises:
        TrainingDataError: none is configured or present.
    """
    if settings.checkpoint is not None and settings.checkpoint.is_file():
        return settings.checkpoint
    found = find_checkpoint(settings.weights_dir, settings.model)
    if found is None:
        raise TrainingDataError(
            f"no base checkpoint for model {settings.model!r}: set UNSAMV2_CHECKPOINT or "
            "download/import one with `unsamv2 weights`"
        )
    return found


def _pseudo_labels(
    images: list[Image],
    humans: dict[int, list[HumanMask]],
    out_dir: Path,
    extractor: FeatureExtractor,
    config: dict[str, Any],
) -> list[tuple[Path, Path, str]]:
    from labeling_pipeline.pseudo_labels import Proposal, pseudo_label_image_file

    pairs = []
    for image in images:
        masks = humans.get(image.id, [])
        proposals = [
            Proposal(decode_coco_rle(m.rle), 1.0, "human")
            for m in masks
            if m.height == image.height and m.width == image.width
        ]
        digest = hashlib.sha1(",".join(f"{m.id}:{m.updated_at}" for m in masks).encode())
        name = f"{image.id}-{digest.hexdigest()[:8]}.json" if masks else f"{image.id}.json"
        result = pseudo_label_image_file(
            Path(image.local_path),
            out_dir,
            extractor=extractor,
            config=config,
            proposals=proposals,
            json_name=name,
            image_id=image.id,
        )
        if result.ok and result.json_path is not None:
            pairs.append((Path(image.local_path), result.json_path, f"file:{image.sha256}"))
        else:
            logger.warning("image %s left out of training: %s", image.id, result.reason)
    return pairs


def train_project(
    settings: PipelineSettings,
    store: Store,
    job_id: int,
    *,
    extractor_for: ExtractorFactory,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Run the training job `job_id` (kind "train"); return its result summary.

    Prerequisites (a base checkpoint, images in the project) are checked before any work. Any
    error marks the job failed (with the error's message) before it propagates.

    Args:
        settings: Pipeline settings (model, device, data folders).
        store: The project store.
        job_id: A job of kind "train" naming a project.
        extractor_for: Builds the pseudo-label feature extractor for a spec (the caller decides
            whether it is cached per process).
        show_progress: Show a progress bar on stderr.

    Raises:
        TrainingDataError: no images, no masks, or no base checkpoint.
    """
    try:
        return _train_job(settings, store, job_id, extractor_for, show_progress)
    except Exception as exc:
        with store.session() as session:
            job = get_job(session, job_id)
            if job.status != "done":
                fail_job(session, job_id, str(exc) or type(exc).__name__)
        raise


def _train_job(
    settings: PipelineSettings,
    store: Store,
    job_id: int,
    extractor_for: ExtractorFactory,
    show_progress: bool,
) -> dict[str, Any]:
    with store.session() as session:
        job = get_job(session, job_id)
        if job.status == "done":  # a redelivered message: the version is published already
            return dict(job.result)
        job = start_job(session, job_id)
        project_id, params = job.project_id, dict(job.params or {})
        run_id = training_run_for_job(session, job_id, project_id).id
        if project_id is None:
            raise TrainingDataError("the training job names no project")
        images = list(project_images(session, project_id))
    if not images:
        raise TrainingDataError("the project has no images: sync it or add images first")
    base = base_checkpoint(settings)  # fail before pseudo-labelling the whole project
    config = TrainConfig.from_mapping(params.get("config"), device=settings.device)
    run_dir = settings.data_dir / "training" / f"run-{run_id:05d}"
    with exclusive_file_lock(run_dir / ".lock"):  # a redelivery never trains the same run twice
        return _train_locked(
            settings,
            store,
            job_id,
            run_id,
            project_id,
            params,
            config,
            images,
            run_dir,
            base,
            extractor_for,
            show_progress,
        )


def _train_locked(
    settings: PipelineSettings,
    store: Store,
    job_id: int,
    run_id: int,
    project_id: int,
    params: dict[str, Any],
    config: TrainConfig,
    images: list[Image],
    run_dir: Path,
    base: Path,
    extractor_for: ExtractorFactory,
    show_progress: bool,
) -> dict[str, Any]:
    from core_model.build import build_model

    with store.session() as session:
        job = get_job(session, job_id)
        if job.status == "done":
            return dict(job.result)
    with store.session() as session:
        humans = human_masks_by_image(session, project_id)
    pairs = _pseudo_labels(
        images,
        humans,
        run_dir / "pseudo_labels",
        extractor_for(str(params.get("features") or settings.features)),
        dict(params.get("pseudo_label_config") or {}),
    )
    data: list[TrainingImage] = training_images(pairs)
    model = build_model(settings.model, base, device=settings.device)
    every = max(1, config.steps // 100)

    def progress(step: int, total: int, loss: float) -> None:
        if step % every == 0 or step == total:
            with store.session() as session:
                set_job_progress(
                    session, job_id, done=step, total=total, message=f"loss {loss:.4f}"
                )

    result = Trainer(
        model, data, config, run_dir=run_dir, show_progress=show_progress, on_step=progress
    ).train()
    used = sum(len(v) for v in humans.values())
    metadata = {
        "project_id": project_id,
        "training_run_id": run_id,
        "images": len(data),
        "human_masks": used,
        "base_checkpoint": str(base),
        "base_model": settings.model,
        "metrics": {k: v for k, v in result.metrics.items() if k != "config"},
        "config": config.to_dict(),
    }
    version = publish_trained_model(
        ModelRegistry(store, settings.models_dir),
        model,
        model_name=settings.model,
        config=config,
        base_checkpoint=base,
        metadata=metadata,
    )
    summary = {
        "model_version": version.name,
        "steps": result.steps,
        "images": len(data),
        "human_masks": used,
        "loss_first": result.metrics["loss_first"],
        "loss_last": result.metrics["loss_last"],
    }
    with store.session() as session:
        finish_training_run(
            session,
            run_id,
            metrics=result.metrics,
            human_masks_used=used,
            model_version_id=version.id,
            config=config.to_dict(),
        )
        finish_job(session, job_id, result=summary)
    return summary

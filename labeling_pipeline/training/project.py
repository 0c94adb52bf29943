"""Train a project's model: hold out, pseudo-label, train, gate, then publish or reject.

Used by the Celery ``unsamv2.train`` task and by ``unsamv2 train``. A run belongs to a lineage
(scope ``ls:<id>`` for a Label Studio project, else ``project:<id>``, or the job's "scope"
parameter). Images with accepted masks are split by image (`holdout`): the held-out ones are
kept out of training entirely (pseudo-labels and proposals included) and score the candidate
against what the scope is served now (`gate`, `candidate`). Human masks of the training images
enter the divide stage of the pseudo-label pipeline as proposals (source "human", never
refined), so they get granularities from the part/whole hierarchies they form with the
pseudo-labels. The base model is the configured checkpoint (or the best one in the weights
folder); a lineage refuses to continue from a base file whose sha256 changed. Runs of one scope
never interleave (a lock per scope: the second waits).

Job parameters: "config" (training settings), "features", "gate" (`GateConfig` settings),
"publish" (publish even if the gate rejects or cannot decide), "scope".
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core_model.checkpoint import file_sha256
from core_model.masks import decode_coco_rle
from labeling_pipeline.model_files.lineage import cleanup
from labeling_pipeline.model_files.registry import ModelRegistry
from labeling_pipeline.model_files.weights import find_checkpoint
from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import fail_job, finish_job, get_job, set_job_progress, start_job
from labeling_pipeline.store.locks import LockTimeoutError, exclusive_file_lock
from labeling_pipeline.store.masks import human_masks_by_image
from labeling_pipeline.store.models import HumanMask, Image, Project
from labeling_pipeline.store.repository import project_images
from labeling_pipeline.store.runs import finish_training_run, training_run_for_job
from labeling_pipeline.store.versions import check_scope, lineage_base_sha256, project_scope
from labeling_pipeline.training.candidate import Candidate, judge_and_commit
from labeling_pipeline.training.config import TrainConfig
from labeling_pipeline.training.data import TrainingDataError, TrainingImage, training_images
from labeling_pipeline.training.gate import GateConfig, load_held_out
from labeling_pipeline.training.holdout import HoldoutSplit, split_holdout
from labeling_pipeline.training.loop import Trainer

if TYPE_CHECKING:
    from labeling_pipeline.pseudo_labels.features import FeatureExtractor

#: Returns the feature extractor for a spec such as ``color`` or ``dinov2:PATH``.
ExtractorFactory = Callable[[str], "FeatureExtractor"]

logger = logging.getLogger(__name__)

#: How long a run waits for another run of its scope before giving up.
LINEAGE_LOCK_TIMEOUT_S = 6 * 3600.0


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
    lock_timeout_s: float = LINEAGE_LOCK_TIMEOUT_S,
) -> dict[str, Any]:
    """Run the training job `job_id` (kind "train"); return its result summary.

    Prerequisites (a base checkpoint unchanged since the lineage began, images in the project)
    are checked before any work. Any error marks the job failed (with the error's message)
    before it propagates; the served model is then unchanged.

    Args:
        settings: Pipeline settings (model, device, data folders).
        store: The project store.
        job_id: A job of kind "train" naming a project.
        extractor_for: Builds the pseudo-label feature extractor for a spec (the caller decides
            whether it is cached per process).
        show_progress: Show a progress bar on stderr.
        lock_timeout_s: Longest wait for a running training run of the same scope.

    Raises:
        TrainingDataError: no images, nothing left to train on, no or a changed base
            checkpoint, or another run of the scope kept running past `lock_timeout_s`.
        PublishError: the version could not be written (disk full); nothing was published.
    """
    try:
        return _train_job(settings, store, job_id, extractor_for, show_progress, lock_timeout_s)
    except Exception as exc:
        with store.session() as session:
            job = get_job(session, job_id)
            if job.status != "done":
                fail_job(session, job_id, str(exc) or type(exc).__name__)
        raise


@dataclass(frozen=True)
class _Run:
    settings: PipelineSettings
    store: Store
    job_id: int
    run_id: int
    project_id: int
    scope: str
    params: dict[str, Any]
    config: TrainConfig
    gate: GateConfig
    images: list[Image]
    humans: dict[int, list[HumanMask]]
    run_dir: Path
    base: Path
    base_sha256: str
    extractor_for: ExtractorFactory
    show_progress: bool


def gate_config(settings: PipelineSettings, overrides: Any) -> GateConfig:
    """Return the gate settings: the process defaults, then the job's overrides."""
    defaults = {
        "metric": settings.gate_metric,
        "tolerance": settings.gate_tolerance,
        "min_masks": settings.gate_min_masks,
        "holdout_fraction": settings.holdout_fraction,
    }
    return GateConfig.from_mapping({**defaults, **dict(overrides or {})})


def check_lineage_base(store: Store, scope: str, base: Path, sha256: str) -> None:
    """Refuse a base checkpoint whose content differs from the one the lineage began with.

    Raises:
        TrainingDataError: the sha256 differs.
    """
    with store.session() as session:
        recorded = lineage_base_sha256(session, scope)
    if recorded is not None and recorded != sha256:
        raise TrainingDataError(
            f"the base checkpoint {base} changed since the lineage {scope} began: its sha256 is "
            f"{sha256} now, the lineage was trained from {recorded}; restore that file or "
            f"train another scope"
        )


def _scope_of(session: Any, project_id: int, params: dict[str, Any]) -> str:
    if params.get("scope"):
        return check_scope(str(params["scope"]))
    project = session.get(Project, project_id)
    if project is None:
        raise TrainingDataError(f"project {project_id} does not exist")
    return project_scope(project)


def _train_job(
    settings: PipelineSettings,
    store: Store,
    job_id: int,
    extractor_for: ExtractorFactory,
    show_progress: bool,
    lock_timeout_s: float,
) -> dict[str, Any]:
    with store.session() as session:
        job = get_job(session, job_id)
        if job.status == "done":  # a redelivered message: the version is committed already
            return dict(job.result)
        job = start_job(session, job_id)
        project_id, params = job.project_id, dict(job.params or {})
        run_id = training_run_for_job(session, job_id, project_id).id
        if project_id is None:
            raise TrainingDataError("the training job names no project")
        scope = _scope_of(session, project_id, params)
        images = list(project_images(session, project_id))
        humans = human_masks_by_image(session, project_id)
    if not images:
        raise TrainingDataError(
            "the project has no images (and no accepted masks): sync it or add images first"
        )
    base = base_checkpoint(settings)  # fail before pseudo-labelling the whole project
    base_sha = file_sha256(base)
    check_lineage_base(store, scope, base, base_sha)
    run = _Run(
        settings,
        store,
        job_id,
        run_id,
        project_id,
        scope,
        params,
        TrainConfig.from_mapping(params.get("config"), device=settings.device),
        gate_config(settings, params.get("gate")),
        images,
        humans,
        settings.data_dir / "training" / f"run-{run_id:05d}",
        base,
        base_sha,
        extractor_for,
        show_progress,
    )
    lineage_lock = settings.data_dir / "training" / f"lineage-{scope.replace(':', '-')}.lock"
    try:
        with (
            exclusive_file_lock(lineage_lock, timeout_s=lock_timeout_s),
            exclusive_file_lock(run.run_dir / ".lock"),  # a redelivery never trains twice
        ):
            removed = cleanup(ModelRegistry(store, settings.models_dir))
            if removed:
                logger.info("removed %d folder(s) left by killed runs", removed)
            return _train_locked(run)
    except LockTimeoutError:
        raise TrainingDataError(
            f"another training run of {scope} kept running for {lock_timeout_s:g} s; "
            "this one did not start (runs of one project never interleave)"
        ) from None


def _split(run: _Run) -> tuple[HoldoutSplit, list[Image]]:
    split = split_holdout(
        run.images,
        {image_id: len(masks) for image_id, masks in run.humans.items()},
        fraction=run.gate.holdout_fraction,
        min_images=run.gate.min_holdout_images,
    )
    train = [image for image in run.images if image.id not in split.held_out]
    if not train:
        raise TrainingDataError(
            f"the project's only image with accepted masks is held out to judge the model "
            f"(scope {run.scope}), so nothing is left to train on: add images or accepted "
            "masks on other images"
        )
    return split, train


def _train_locked(run: _Run) -> dict[str, Any]:
    from core_model.build import build_model

    with run.store.session() as session:
        job = get_job(session, run.job_id)
        if job.status == "done":
            return dict(job.result)
    split, train = _split(run)
    humans = {k: v for k, v in run.humans.items() if k not in split.held_out}
    pairs = _pseudo_labels(
        train,
        humans,
        run.run_dir / "pseudo_labels",
        run.extractor_for(str(run.params.get("features") or run.settings.features)),
        dict(run.params.get("pseudo_label_config") or {}),
    )
    data: list[TrainingImage] = training_images(pairs)
    model = build_model(run.settings.model, run.base, device=run.settings.device)
    result = Trainer(
        model,
        data,
        run.config,
        run_dir=run.run_dir,
        show_progress=run.show_progress,
        on_step=_progress(run),
    ).train()
    held = load_held_out(run.images, run.humans, split.held_out)
    used = sum(len(v) for v in humans.values())
    holdout = {
        "images": len(split.held_out),
        "masks": len(held),
        "eligible_images": split.eligible,
        "image_ids": sorted(split.held_out),
    }
    training = {
        "steps": result.steps,
        "images": len(data),
        "human_masks": used,
        "loss_first": result.metrics["loss_first"],
        "loss_last": result.metrics["loss_last"],
    }
    metadata = {
        "project_id": run.project_id,
        "scope": run.scope,
        "training_run_id": run.run_id,
        "images": len(data),
        "human_masks": used,
        "held_out": holdout,
        "base_checkpoint": str(run.base),
        "base_checkpoint_sha256": run.base_sha256,
        "base_model": run.settings.model,
        "metrics": {k: v for k, v in result.metrics.items() if k != "config"},
        "config": run.config.to_dict(),
    }
    candidate = Candidate(
        model,
        run.config,
        run.scope,
        run.base,
        metadata,
        training,
        holdout,
        force_publish=bool(run.params.get("publish")),
    )
    outcome = judge_and_commit(run.settings, run.store, candidate, held, run.gate, run.run_dir)
    summary = {
        "model_version": outcome.version.name,
        "scope": run.scope,
        "published": outcome.published,
        "gate": outcome.verdict.to_dict(),
        "report": str(run.run_dir / "report.md"),
        **training,
    }
    with run.store.session() as session:
        finish_training_run(
            session,
            run.run_id,
            metrics={**result.metrics, "gate": outcome.report.to_dict()},
            human_masks_used=used,
            model_version_id=outcome.version.id,
            config=run.config.to_dict(),
        )
        finish_job(session, run.job_id, result=summary)
    return summary


def _progress(run: _Run) -> Callable[[int, int, float], None]:
    every = max(1, run.config.steps // 100)

    def progress(step: int, total: int, loss: float) -> None:
        if step % every == 0 or step == total:
            with run.store.session() as session:
                set_job_progress(
                    session, run.job_id, done=step, total=total, message=f"loss {loss:.4f}"
                )

    return progress

"""Train a project's specialist end to end: data from the store, split, train, gate, publish.

The lineage of a specialist is the scope ``specialist:<project id>:<labels joined by '+'>``.
Everything that can be refused (labels, counts, sizes, base files) is checked before training,
and a version folder is written only after training, through
`labeling_pipeline.model_files.lineage.commit_version`: published when the gate passes, else
kept as "rejected" (never served; `unsamv2 models promote` can still publish it by hand).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core_model.errors import UnSAMv2Error
from core_model.specialist import (
    BaseRef,
    SpecialistModel,
    build_specialist,
    get_variant,
    load_dino_weights,
    load_hiera_weights,
    load_specialist,
    save_specialist,
)
from labeling_pipeline.model_files.lineage import commit_version
from labeling_pipeline.model_files.registry import CHECKPOINT_FILE, ModelRegistry
from labeling_pipeline.specialist.data import (
    MIN_IMAGES,
    MaskRow,
    SpecialistDataError,
    SpecialistSample,
    check_labels,
    check_samples,
    prepare,
)
from labeling_pipeline.specialist.gate import (
    GateVerdict,
    SpecialistGate,
    decide,
    score_probabilities,
)
from labeling_pipeline.specialist.metrics import SegmentationScores
from labeling_pipeline.specialist.trainer import (
    LOSS_PLOT,
    SpecialistTrainConfig,
    SpecialistTrainer,
    predict_prepared,
)
from labeling_pipeline.store import Store
from labeling_pipeline.store.masks import human_masks_by_image, tasks_without_image
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.repository import find_project, project_images
from labeling_pipeline.store.versions import (
    check_scope,
    current_by_scope,
    current_version,
    list_versions,
)
from labeling_pipeline.training.holdout import split_holdout

logger = logging.getLogger(__name__)

SCOPE_PREFIX = "specialist:"


def specialist_scope(project_id: int, labels: Sequence[str]) -> str:
    """Return the lineage scope of a project's specialist of `labels`."""
    return check_scope(f"{SCOPE_PREFIX}{int(project_id)}:{'+'.join(labels)}")


@dataclass(frozen=True)
class ProjectData:
    """A project's specialist data: id, labels (checked), samples."""

    project_id: int
    labels: list[str]
    samples: list[SpecialistSample]


def _config_labels(label_config: str | None) -> set[str] | None:
    if not label_config:
        return None
    from labeling_pipeline.label_studio.config import parse_label_config

    config = parse_label_config(label_config)
    return {label for brush in config.brushes for label in brush.labels}


def project_data(
    store: Store, project: str | int, labels: Sequence[str], *, min_images: int = MIN_IMAGES
) -> ProjectData:
    """Read a project's annotated images and their accepted masks; check labels and counts.

    Raises:
        SpecialistDataError: unknown/removed label, no masks of it, too few images.
        NotFoundError: no such project.
    """
    with store.session() as session:
        row = find_project(session, project)
        project_id, label_config, ls_id = row.id, row.label_config, row.ls_project_id
        images = {im.id: im for im in project_images(session, project_id)}
        by_image = human_masks_by_image(session, project_id)
        unsynced = tasks_without_image(session, project_id)
        samples = [
            SpecialistSample(
                image_id,
                images[image_id].sha256,
                Path(images[image_id].local_path),
                tuple(MaskRow(m.label, dict(m.rle)) for m in masks),
            )
            for image_id, masks in sorted(by_image.items())
            if image_id in images
        ]
    mask_labels = {m.label for s in samples for m in s.masks}
    try:
        chosen = check_labels(labels, mask_labels, _config_labels(label_config))
        check_samples(samples, chosen, min_images=min_images)
    except SpecialistDataError as exc:
        if not unsynced:
            raise
        raise SpecialistDataError(f"{exc}; {_sync_hint(unsynced, ls_id)}") from exc
    if unsynced:
        logger.warning("specialist of project %s: %s", project_id, _sync_hint(unsynced, ls_id))
    return ProjectData(project_id, chosen, samples)


def _sync_hint(tasks: set[int], ls_project_id: int | None) -> str:
    """Say that annotated tasks lack their image (the annotation webhook stores masks only)."""
    command = f"unsamv2 jobs submit sync --ls-project {ls_project_id or '<id>'}"
    return (
        f"{len(tasks)} annotated Label Studio task(s) have no image in the store yet "
        f"(their masks are not used): sync the project first (`{command}`)"
    )


def split(
    data: ProjectData, gate: SpecialistGate
) -> tuple[list[SpecialistSample], list[SpecialistSample]]:
    """Split the samples by image content (see `training.holdout`): (train, held out)."""

    @dataclass(frozen=True)
    class _Image:
        id: int
        sha256: str

    chosen = split_holdout(
        [_Image(s.image_id, s.sha256) for s in data.samples],
        {s.image_id: len(s.masks) for s in data.samples},
        fraction=gate.holdout_fraction,
        min_images=gate.min_holdout_images,
    )
    train = [s for s in data.samples if s.image_id not in chosen.held_out]
    held = [s for s in data.samples if s.image_id in chosen.held_out]
    return train, held


def build_model(
    config: SpecialistTrainConfig, num_labels: int, hiera: Path | None, dino: Path | None
) -> tuple[SpecialistModel, BaseRef, BaseRef]:
    """Build the variant and load its base files (None: random bases from the config's seed)."""
    num_classes = 1 if num_labels == 1 else num_labels + 1
    model = build_specialist(config.variant, num_classes=num_classes, seed=config.seed)
    hiera_ref = load_hiera_weights(model, hiera) if hiera else BaseRef(seed=config.seed)
    dino_ref = load_dino_weights(model, dino) if dino else BaseRef(seed=config.seed)
    if hiera is None or dino is None:
        logger.warning("training a specialist on random (not pretrained) base weights")
    return model, hiera_ref, dino_ref


@dataclass
class SpecialistRun:
    """Outcome of `train_specialist`.

    Attributes:
        scope: Lineage of the specialist.
        verdict: Gate outcome.
        version: Name of the version written (published or rejected).
        published: Whether it now serves.
        steps: Optimiser steps.
        train_images: Training images.
        held_out_images: Held-out images.
        seconds: Training time of this process.
    """

    scope: str
    verdict: GateVerdict
    version: str
    published: bool
    steps: int
    train_images: int
    held_out_images: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "scope": self.scope,
            "gate": self.verdict.to_dict(),
            "version": self.version,
            "published": self.published,
            "steps": self.steps,
            "train_images": self.train_images,
            "held_out_images": self.held_out_images,
            "seconds": round(self.seconds, 1),
        }


def _current_scores(
    store: Store, scope: str, held_prepared: Any, device: str, threshold: float
) -> SegmentationScores | None:
    with store.session() as session:
        current = current_version_of(session, scope)
        path = Path(current.path) / CHECKPOINT_FILE if current is not None else None
    if path is None:
        return None
    try:
        loaded = load_specialist(path)
    except UnSAMv2Error as exc:
        logger.warning(
            "current specialist of %s cannot be loaded (%s); gate on the bar only", scope, exc
        )
        return None
    probs = predict_prepared(loaded.model, held_prepared, device=device)
    return score_probabilities(probs, held_prepared.full_targets, threshold=threshold)


def train_specialist(
    store: Store,
    *,
    models_dir: Path,
    run_dir: Path,
    project: str | int,
    labels: Sequence[str],
    config: SpecialistTrainConfig,
    gate: SpecialistGate,
    hiera: Path | None = None,
    dino: Path | None = None,
    min_images: int = MIN_IMAGES,
    show_progress: bool = False,
    on_step: Callable[[int, int, float], None] | None = None,
) -> SpecialistRun:
    """Train, score on the held-out images, and publish only if the gate passes.

    Raises:
        SpecialistDataError: the data cannot train a specialist (nothing is written).
        CheckpointError: a base file is missing or of another size (nothing is written).
        PublishError: the version could not be written (the served one is unchanged).
    """
    data = project_data(store, project, labels, min_images=min_images)
    scope = specialist_scope(data.project_id, data.labels)
    train, held = split(data, gate)
    side = get_variant(config.variant).sam_size
    train_data, held_data = prepare(train, data.labels, side), prepare(held, data.labels, side)
    model, hiera_ref, dino_ref = build_model(config, len(data.labels), hiera, dino)
    trainer = SpecialistTrainer(
        model, train_data, config, run_dir, show_progress=show_progress, on_step=on_step
    )
    outcome = trainer.train()
    probs = predict_prepared(model, held_data, device=config.device)
    candidate = score_probabilities(probs, held_data.full_targets, threshold=gate.threshold)
    current = _current_scores(store, scope, held_data, config.device, gate.threshold)
    verdict = decide(candidate, current, gate)
    metadata = {
        "kind": "specialist",
        "project_id": data.project_id,
        "labels": data.labels,
        "variant": config.variant,
        "config": config.to_dict(),
        "gate_settings": gate.to_dict(),
        "bases": {"hiera": hiera_ref.to_dict(), "dino": dino_ref.to_dict()},
        "train_images": len(train),
        "held_out_images": len(held),
        "steps": outcome.steps,
    }
    registry = ModelRegistry(store, models_dir)
    report = Path(run_dir) / "report.json"
    report.write_text(json.dumps({"gate": verdict.to_dict(), **metadata}, indent=2, default=str))
    with registry.staging() as staging:
        save_specialist(
            staging / CHECKPOINT_FILE,
            model,
            hiera=hiera_ref,
            dino=dino_ref,
            labels=data.labels,
            metadata=metadata,
        )
        version = commit_version(
            registry,
            staging,
            model=f"specialist:{config.variant}",
            scope=scope,
            publish=verdict.passed,
            metadata=metadata,
            gate=verdict.to_dict(),
            report_files=[Path(run_dir) / LOSS_PLOT, report],
            report_dir=Path(run_dir),
        )
    logger.info(
        "specialist %s: %s (%s)",
        scope,
        "published" if verdict.passed else "rejected",
        verdict.reason,
    )
    return SpecialistRun(
        scope,
        verdict,
        version.name,
        verdict.passed,
        outcome.steps,
        len(train),
        len(held),
        outcome.seconds,
    )


def current_version_of(session: Any, scope: str) -> ModelVersion | None:
    """Return the version a specialist scope serves (no fallback to other scopes)."""
    return current_version(session, check_scope(scope))


def list_specialists(store: Store, *, project_id: int | None = None) -> list[dict[str, Any]]:
    """Return every specialist version (newest first) with whether it is its scope's current."""
    prefix = SCOPE_PREFIX if project_id is None else f"{SCOPE_PREFIX}{int(project_id)}:"
    with store.session() as session:
        current = current_by_scope(session)
        return [
            {
                "name": v.name,
                "scope": v.scope,
                "status": v.status,
                "current": v.id in current,
                "model": v.model,
                "labels": (v.metadata_ or {}).get("labels"),
                "miou": ((v.gate or {}).get("candidate") or {}).get("miou"),
                "path": v.path,
                "created_at": v.created_at.isoformat() if v.created_at else None,
            }
            for v in list_versions(session)
            if v.scope.startswith(prefix)
        ]


def active_specialist_paths(store: Store, project_id: int) -> list[tuple[str, Path]]:
    """Return (version name, checkpoint path) of each current specialist of a project."""
    return [
        (row["name"], Path(row["path"]) / CHECKPOINT_FILE)
        for row in list_specialists(store, project_id=project_id)
        if row["current"]
    ]

"""Judge a trained candidate against what its scope is served, report, and publish or reject it.

The candidate is written to a staging folder, loaded back from that file (what would be served)
and scored with the currently served version of the scope (its own, else global's, else the
base checkpoint) on the held-out masks (`gate`). The run's report is written into the run folder
and copied into the version folder; the version is then committed as published (the scope's
pointer moves) or rejected (kept, promotable by hand), in one transaction (`lineage`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from labeling_pipeline.model_files.lineage import commit_version, new_version_name
from labeling_pipeline.model_files.registry import CHECKPOINT_FILE, ModelRegistry
from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.versions import serving_version
from labeling_pipeline.training.config import TrainConfig
from labeling_pipeline.training.gate import (
    GateConfig,
    HeldOutMask,
    Scores,
    Verdict,
    decide,
    score_model,
    undecided,
)
from labeling_pipeline.training.publish import write_trained_checkpoint
from labeling_pipeline.training.report import RunReport, write_run_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A trained model waiting for the gate.

    Attributes:
        model: The trained module.
        config: Its training settings.
        scope: Lineage it belongs to.
        base: Base checkpoint it was trained from.
        metadata: JSON-ready description written with the version.
        training: Training summary for the report.
        holdout: Held-out split facts for the report.
        force_publish: Publish even if the gate rejects or cannot decide (`--publish`).
    """

    model: nn.Module
    config: TrainConfig
    scope: str
    base: Path
    metadata: Mapping[str, Any]
    training: Mapping[str, Any]
    holdout: Mapping[str, Any]
    force_publish: bool = False


@dataclass(frozen=True)
class Outcome:
    """What became of a candidate.

    Attributes:
        version: The committed version row (published or rejected).
        published: Whether its scope now serves it.
        verdict: The gate's decision.
        report: The run's report.
    """

    version: ModelVersion
    published: bool
    verdict: Verdict
    report: RunReport


def _served(
    settings: PipelineSettings, store: Store, scope: str, base: Path
) -> tuple[str | None, str, Path]:
    """Return (version name or None, model, checkpoint) of what `scope` is served now."""
    with store.session() as session:
        version = serving_version(session, scope)
        if version is not None:
            return version.name, version.model, Path(version.path) / CHECKPOINT_FILE
    return None, settings.model, base


def _scores(
    settings: PipelineSettings,
    candidate_file: Path,
    current: tuple[str | None, str, Path],
    masks: Sequence[HeldOutMask],
    gate: GateConfig,
) -> tuple[Scores | None, Scores | None, Verdict]:
    from core_model.build import build_model
    from core_model.predictor import GranularityPredictor

    if not masks:
        return None, None, undecided("no held-out masks (no accepted masks in the project)", gate)
    trained = build_model(settings.model, candidate_file, device=settings.device)
    new = score_model(GranularityPredictor(trained), masks, gate)
    name, model, checkpoint = current
    try:
        served = build_model(model, checkpoint, device=settings.device)
    except Exception as exc:  # a broken current version cannot be compared with
        reason = f"the current version {name or checkpoint} cannot be loaded ({exc})"
        return new, None, undecided(reason, gate)
    old = score_model(GranularityPredictor(served), masks, gate)
    return new, old, decide(new, old, gate)


def _outcome_text(verdict: Verdict, publish: bool) -> str:
    if verdict.decision == "publish":
        return "published"
    if publish:
        return f"published by hand (gate: {verdict.decision})"
    return "rejected" if verdict.decision == "reject" else "not published (gate undecided)"


def judge_and_commit(
    settings: PipelineSettings,
    store: Store,
    candidate: Candidate,
    masks: Sequence[HeldOutMask],
    gate: GateConfig,
    run_dir: Path,
) -> Outcome:
    """Score, report and commit the candidate; the served model changes only if it passes.

    Raises:
        PublishError: the version could not be written or recorded (nothing changed).
    """
    registry = ModelRegistry(store, settings.models_dir)
    current = _served(settings, store, candidate.scope, candidate.base)
    name = new_version_name()
    with registry.staging() as staging:
        checkpoint = write_trained_checkpoint(
            candidate.model,
            staging / CHECKPOINT_FILE,
            config=candidate.config,
            base_checkpoint=candidate.base,
            metadata=candidate.metadata,
        )
        new, old, verdict = _scores(settings, checkpoint, current, masks, gate)
        publish = verdict.decision == "publish" or candidate.force_publish
        report = RunReport(
            scope=candidate.scope,
            version=name,
            parent=current[0],
            holdout=candidate.holdout,
            gate=gate,
            candidate=new,
            current=old,
            verdict=verdict,
            training=candidate.training,
            outcome=_outcome_text(verdict, publish),
        )
        files = write_run_report(report, run_dir)
        version = commit_version(
            registry,
            staging,
            model=settings.model,
            scope=candidate.scope,
            publish=publish,
            metadata=candidate.metadata,
            gate={
                "verdict": verdict.to_dict(),
                "candidate": new.to_dict() if new else None,
                "current": old.to_dict() if old else None,
                "compared_with": current[0],
            },
            report_files=files,
            report_dir=run_dir,
            name=name,
        )
    logger.info("%s: %s (%s)", name, report.outcome, verdict.reason)
    return Outcome(version, publish, verdict, report)

"""Settings of the pipeline (store, broker, model, Label Studio, retraining).

A frozen value built once by the process entry point (`ml_backend.settings` reads the
environment) and passed into the Celery app factory and the store. Nothing here reads the
environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PipelineSettings:
    """Everything the workers and the store need.

    Attributes:
        data_dir: Root of all local state: database, embedded broker, images, pseudo-labels,
            weights, model versions.
        database_url: SQLAlchemy URL; default SQLite (WAL) in `data_dir`.
        broker_url: Celery broker; None selects the embedded filesystem broker in `data_dir`.
        result_backend: Celery result backend; None selects a default matching the broker.
        model: Model variant or YAML path (see `core_model.config`).
        checkpoint: Checkpoint file; None looks for known files in `data_dir/weights`.
        device: Torch device for model work in this process.
        label_studio_url: Base URL of Label Studio, e.g. http://localhost:8080.
        label_studio_api_key: Legacy token or personal access token of Label Studio.
        features: Feature extractor of the pseudo-label pipeline (`color`, `dinov2:PATH`, ...).
        retrain_min_new_masks: Retraining is due after this many newly accepted masks...
        retrain_period_s: ...or after this many seconds, if any mask is new.
        retrain_check_interval_s: Period of the beat entry that checks both conditions.
        visibility_timeout_s: Seconds after which Redis redelivers a message whose worker died
            (acks are late, so a killed worker's task runs again).
        job_stale_s: A running job whose worker has not been heard from for this many seconds
            is marked failed (its worker was probably killed).
        torch_threads: Torch threads per worker process (None: torch's default).
        fetch_timeout_s: Longest time for one image download (connect, body and redirects).
        gate_metric: Held-out metric that decides whether a trained version is published.
        gate_tolerance: How much worse than the served version a candidate may be on it.
        gate_min_masks: Fewer held-out masks than this: no automatic publication.
        holdout_fraction: Share of the images with accepted masks held out from training.
    """

    data_dir: Path
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    model: str = "small"
    checkpoint: Path | None = None
    device: str = "cpu"
    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    features: str = "color"
    retrain_min_new_masks: int = 50
    retrain_period_s: float = 24 * 3600.0
    retrain_check_interval_s: float = 300.0
    visibility_timeout_s: float = 3600.0
    job_stale_s: float = 1800.0
    torch_threads: int | None = None
    fetch_timeout_s: float = 30.0
    gate_metric: str = "annotator_iou"
    gate_tolerance: float = 0.02
    gate_min_masks: int = 10
    holdout_fraction: float = 0.2

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'unsamv2.sqlite3').resolve()}"

    @property
    def broker_dir(self) -> Path:
        """Folder of the embedded broker."""
        return self.data_dir / "broker"

    @property
    def images_dir(self) -> Path:
        """Content-addressed image cache."""
        return self.data_dir / "images"

    @property
    def pseudo_labels_dir(self) -> Path:
        """Pseudo-label runs, one folder per run."""
        return self.data_dir / "pseudo_labels"

    @property
    def models_dir(self) -> Path:
        """Published model versions, one folder per version."""
        return self.data_dir / "models"

    @property
    def weights_dir(self) -> Path:
        """Downloaded base checkpoints."""
        return self.data_dir / "weights"

"""Tables of the store (SQLAlchemy 2 declarative models).

Schema changes go through Alembic migrations in `labeling_pipeline/store/migrations`; the
migration of a version must create exactly these tables (a test compares them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps stored as naive UTC and read back as aware UTC, on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Convert an aware datetime to naive UTC (naive input is taken as UTC)."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        """Attach UTC to the stored naive value."""
        return value.replace(tzinfo=dt.timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime}


class Project(Base):
    """An annotation project (usually one Label Studio project)."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    ls_project_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    label_config: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Image(Base):
    """An image of a project, cached locally by content hash."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("project_id", "sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    source_url: Mapped[str | None] = mapped_column(Text)
    local_path: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    ls_task_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class HumanMask(Base):
    """One brush region of an accepted Label Studio annotation, as COCO RLE."""

    __tablename__ = "human_masks"
    __table_args__ = (UniqueConstraint("project_id", "annotation_id", "region_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    ls_task_id: Mapped[int] = mapped_column(Integer, index=True)
    annotation_id: Mapped[int] = mapped_column(Integer, index=True)
    region_id: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200))
    rle: Mapped[dict[str, Any]] = mapped_column()
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    area: Mapped[int] = mapped_column(Integer)
    granularity: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class PredictionRecord(Base):
    """A mask the backend suggested: which granularity made it (read back when accepted)."""

    __tablename__ = "prediction_records"
    __table_args__ = (UniqueConstraint("ls_task_id", "result_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ls_project_id: Mapped[int | None] = mapped_column(Integer)
    ls_task_id: Mapped[int] = mapped_column(Integer, index=True)
    result_id: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200))
    granularity: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(Base):
    """Progress and outcome of one piece of asynchronous work."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    # last sign of life: any change of the row, and the heartbeat of the task running it
    updated_at: Mapped[dt.datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)


class PseudoLabelRun(Base):
    """A pseudo-label run over a project's images."""

    __tablename__ = "pseudo_label_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    features: Mapped[str] = mapped_column(String(500))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PseudoLabelImage(Base):
    """Outcome of one image of a pseudo-label run."""

    __tablename__ = "pseudo_label_images"
    __table_args__ = (UniqueConstraint("run_id", "image_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pseudo_label_runs.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    json_path: Mapped[str | None] = mapped_column(Text)
    num_masks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    finished_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """A fine-tuning run (its progress lives in its job)."""

    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    human_masks_used: Mapped[int] = mapped_column(Integer, default=0)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A model version of one lineage: a complete folder under the data directory.

    `scope` names the lineage ("global", "ls:<Label Studio project id>", "project:<store
    project id>"); `status` is "published" (may serve), "rejected" (failed the held-out gate,
    kept with its report) or "retired" (rolled back or withdrawn). Which published version a
    scope serves is its `ModelPointer`. `gate` holds the held-out metrics of the version and of
    the one it was compared with; `report_path` the folder of its training report.
    """

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    path: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    scope: Mapped[str] = mapped_column(String(100), index=True, default="global")
    status: Mapped[str] = mapped_column(String(20), index=True, default="published")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    gate: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report_path: Mapped[str | None] = mapped_column(Text)


class ModelPointer(Base):
    """Which published version a scope serves (one row per scope; see `store.versions`)."""

    __tablename__ = "model_pointers"
    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

"""Writing and removing version folders of a lineage, atomically with their database rows.

A candidate is completed in a staging folder (checkpoint, report files, ``metadata.json``),
fsynced and renamed to ``models/<name>/``; only then is its row added, published (the scope's
pointer moves) or rejected, in one transaction. Any failure before the commit (disk full
included) removes the folder and leaves the rows and pointers as they were, so the served model
never changes on a failed write; a crash leaves at most a staging folder or an unreferenced
version folder, both removed by `cleanup`.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core_model.checkpoint import file_sha256
from labeling_pipeline.model_files.registry import (
    CHECKPOINT_FILE,
    METADATA_FILE,
    ModelRegistry,
    PublishError,
)
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.versions import add_version, version_paths

logger = logging.getLogger(__name__)

_TRASH_PREFIX = ".staging-removed-"


def new_version_name(now: dt.datetime | None = None) -> str:
    """Return a fresh version name, ``v<UTC date>-<time>-<random>``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"v{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(name: str, exc: OSError) -> PublishError:
    what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return PublishError(
        f"cannot write model version {name}: {what}; nothing was published and the served "
        "model is unchanged"
    )


def commit_version(
    registry: ModelRegistry,
    staging_dir: Path,
    *,
    model: str,
    scope: str,
    publish: bool,
    metadata: Mapping[str, Any],
    gate: Mapping[str, Any] | None = None,
    report_files: Iterable[Path] = (),
    report_dir: Path | None = None,
    name: str | None = None,
) -> ModelVersion:
    """Turn a staging folder holding ``model.pt`` into a published or rejected version.

    Args:
        registry: Registry of the data directory.
        staging_dir: From `registry.staging()`.
        model: Model variant or YAML the checkpoint is built with.
        scope: Lineage of the version.
        publish: Move the scope's pointer to it (else it is kept as "rejected").
        metadata: JSON-ready description (data, config, metrics, base checkpoint sha256).
        gate: Held-out scores and verdict.
        report_files: Files copied into the version folder (report.md, PNGs, ...).
        report_dir: Folder of the run's report (recorded on the row).
        name: Version name (default: `new_version_name()`).

    Raises:
        PublishError: no checkpoint, a write failed (disk full), or the row was refused.
    """
    checkpoint = staging_dir / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise PublishError(f"{staging_dir} has no {CHECKPOINT_FILE}; nothing published")
    now = dt.datetime.now(dt.timezone.utc)
    name = name or new_version_name(now)
    final = registry.models_dir / name
    try:
        sha256 = file_sha256(checkpoint)
        for path in report_files:
            if path.is_file():
                shutil.copy2(path, staging_dir / path.name)
        document = {
            "name": name,
            "model": model,
            "scope": scope,
            "checkpoint_sha256": sha256,
            "created_at": now.isoformat(),
            **dict(metadata),
        }
        (staging_dir / METADATA_FILE).write_text(json.dumps(document, indent=2, default=str))
        for entry in staging_dir.iterdir():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_path(staging_dir)
        os.rename(staging_dir, final)
        _fsync_path(registry.models_dir)
    except OSError as exc:
        shutil.rmtree(final, ignore_errors=True)
        raise _write_error(name, exc) from exc
    try:
        with registry.store.session() as session:
            version = add_version(
                session,
                ModelVersion(
                    name=name,
                    path=str(final),
                    model=model,
                    checkpoint_sha256=sha256,
                    metadata_=dict(metadata),
                    created_at=now,
                    scope=scope,
                    gate=dict(gate or {}),
                    report_path=str(report_dir) if report_dir is not None else None,
                ),
                publish=publish,
            )
    except Exception as exc:
        shutil.rmtree(final, ignore_errors=True)
        raise PublishError(f"cannot record model version {name}: {exc}") from exc
    logger.info(
        "%s model version %s of %s (%s)",
        "published" if publish else "kept rejected",
        name,
        scope,
        sha256[:12],
    )
    return version


def remove_folders(models_dir: Path, paths: Iterable[str]) -> int:
    """Remove version folders whose rows are gone (rename aside first, then delete)."""
    removed = 0
    for text in paths:
        path = Path(text)
        if path.parent.resolve() != models_dir.resolve() or not path.is_dir():
            continue
        trash = models_dir / f"{_TRASH_PREFIX}{path.name}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed += 1
    return removed


def cleanup(registry: ModelRegistry, *, older_than_s: float = 3600.0) -> int:
    """Remove staging folders of killed runs and version folders no row names; return count.

    Only folders older than `older_than_s` go, so a version being committed right now by
    another process is left alone.
    """
    removed = registry.cleanup_staging(older_than_s=older_than_s)
    models_dir = registry.models_dir
    if not models_dir.is_dir():
        return removed
    with registry.store.session() as session:
        known = {Path(p).name for p in version_paths(session)}
    for path in models_dir.iterdir():
        if path.name.startswith(".") or path.name in known or not path.is_dir():
            continue
        if not (path / METADATA_FILE).is_file():
            continue
        if time.time() - path.stat().st_mtime > older_than_s:
            removed += remove_folders(models_dir, [str(path)])
    return removed

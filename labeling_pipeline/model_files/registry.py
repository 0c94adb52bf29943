"""Publishing model versions atomically.

A version is a folder ``models/<name>/`` holding ``model.pt`` (any checkpoint kind
`core_model.build_model` reads, normally this project's fine-tuned format) and
``metadata.json``. It is written under ``models/.staging-<random>/``, completed, fsynced and
renamed into place; only then is the database row added and the "current" pointer moved, in one
transaction. A run that fails or is killed leaves at most a staging folder, which
`cleanup_staging` removes; readers never see a partial version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from core_model.checkpoint import file_sha256
from core_model.errors import UnSAMv2Error
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.repository import (
    DEFAULT_SCOPE,
    add_model_version_and_point,
    current_model_version,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"
METADATA_FILE = "metadata.json"
_STAGING_PREFIX = ".staging-"
#: Age (of the last change) after which a staging folder is taken as left by a killed run.
STALE_STAGING_S = 6 * 3600.0


class PublishError(UnSAMv2Error):
    """A staging folder is incomplete or the version cannot be recorded."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelRegistry:
    """Model versions of one data directory.

    Args:
        store: Database with the version rows and the pointer.
        models_dir: Folder of the version folders.
    """

    def __init__(self, store: Store, models_dir: Path) -> None:
        self.store = store
        self.models_dir = Path(models_dir)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """Yield an empty staging folder; it is removed if the block raises.

        Staging folders that killed runs left behind (older than `STALE_STAGING_S`) are removed
        first; a run's own folder lives only minutes, from its checkpoint write to its publish.
        """
        self.models_dir.mkdir(parents=True, exist_ok=True)
        removed = self.cleanup_staging(older_than_s=STALE_STAGING_S)
        if removed:
            logger.info("removed %d staging folder(s) left by interrupted runs", removed)
        path = self.models_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def publish(
        self,
        staging_dir: Path,
        *,
        model: str,
        metadata: Mapping[str, Any],
        scope: str = DEFAULT_SCOPE,
    ) -> ModelVersion:
        """Turn a complete staging folder into the current version.

        Args:
            staging_dir: From `staging`, holding ``model.pt``.
            model: Model variant or YAML to build it with.
            metadata: JSON-ready description (data, config, metrics).
            scope: Pointer to move.

        Raises:
            PublishError: no checkpoint in the folder, or the database refused the row.
        """
        checkpoint = staging_dir / CHECKPOINT_FILE
        if not checkpoint.is_file():
            raise PublishError(f"{staging_dir} has no {CHECKPOINT_FILE}; nothing published")
        now = dt.datetime.now(dt.timezone.utc)
        name = f"v{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        sha256 = file_sha256(checkpoint)
        document = {
            "name": name,
            "model": model,
            "checkpoint_sha256": sha256,
            "created_at": now.isoformat(),
            **dict(metadata),
        }
        (staging_dir / METADATA_FILE).write_text(json.dumps(document, indent=2, default=str))
        for entry in staging_dir.iterdir():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(staging_dir)
        final = self.models_dir / name
        os.rename(staging_dir, final)
        _fsync_dir(self.models_dir)
        try:
            with self.store.session() as session:
                version = add_model_version_and_point(
                    session,
                    ModelVersion(
                        name=name,
                        path=str(final),
                        model=model,
                        checkpoint_sha256=sha256,
                        metadata_=dict(metadata),
                        created_at=now,
                    ),
                    scope,
                )
        except Exception as exc:
            shutil.rmtree(final, ignore_errors=True)
            raise PublishError(f"cannot record model version {name}: {exc}") from exc
        logger.info("published model version %s (%s)", name, sha256[:12])
        return version

    def current(self, scope: str = DEFAULT_SCOPE) -> ModelVersion | None:
        """Return the current version, or None before the first publication."""
        with self.store.session() as session:
            return current_model_version(session, scope)

    def cleanup_staging(self, *, older_than_s: float = STALE_STAGING_S) -> int:
        """Remove staging folders left by crashed runs; return how many went.

        A folder counts as left behind when neither it nor anything in it changed for
        `older_than_s` seconds, so a run that is still writing its checkpoint keeps its folder.
        """
        if not self.models_dir.is_dir():
            return 0
        removed = 0
        for path in self.models_dir.glob(f"{_STAGING_PREFIX}*"):
            try:
                changed = max(p.stat().st_mtime for p in (path, *path.iterdir()))
            except OSError:  # removed meanwhile by another cleaner, or not a folder
                continue
            if time.time() - changed > older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

"""The folders of model versions: staging folders and their clean-up.

A version is a folder ``models/<name>/`` holding ``model.pt`` (any checkpoint kind
`core_model.build.build_model` reads, normally this project's fine-tuned format) and
``metadata.json``. It is written under ``models/.staging-<random>/`` (`ModelRegistry.staging`),
then `labeling_pipeline.model_files.lineage.commit_version` completes, fsyncs and renames it into
place before the database row is added and its scope's pointer moved, in one transaction. A run
that fails or is killed leaves at most a staging folder, which `cleanup_staging` removes;
readers never see a partial version.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from core_model.errors import UnSAMv2Error
from labeling_pipeline.store import Store

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"
METADATA_FILE = "metadata.json"
_STAGING_PREFIX = ".staging-"
#: Age (of the last change) after which a staging folder is taken as left by a killed run.
STALE_STAGING_S = 6 * 3600.0


class PublishError(UnSAMv2Error):
    """A staging folder is incomplete or the version cannot be recorded."""


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

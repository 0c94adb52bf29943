"""The checkpoint a backend downloads on its first start (``UNSAMV2_AUTO_DOWNLOAD``).

With no checkpoint configured or present, `ModelRuntime` calls the function returned here
once, in its background thread: it downloads the official UnSAMv2+ checkpoint
(`release.DEFAULT_RELEASE`) into the weights folder, from the Hugging Face Hub or Google Drive
(see `labeling_pipeline.model_files.release`), or from ``UNSAMV2_CHECKPOINT_URL`` when set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from labeling_pipeline.model_files.release import DEFAULT_RELEASE, download_release
from labeling_pipeline.model_files.transfer import Progress
from labeling_pipeline.model_files.weights import spec_for
from ml_backend.settings import Settings

logger = logging.getLogger(__name__)


def first_start_fetcher(settings: Settings) -> Callable[[Progress], Path] | None:
    """Return the runtime's `fetch_default` for these settings, or None: no download.

    The official checkpoints are of the ``small`` model: another ``UNSAMV2_MODEL`` gets no
    download, unless ``UNSAMV2_CHECKPOINT_URL`` names a mirror, whose file is then checked
    against the configured model instead (a test model in the official format).
    """
    if not settings.auto_download:
        return None
    spec, url = spec_for(DEFAULT_RELEASE), settings.checkpoint_url
    model, weights_dir = settings.pipeline.model, settings.pipeline.weights_dir
    if model != spec.variant and url is None:
        logger.info(
            "no first-start download: the official UnSAMv2 checkpoints are for model %r, "
            "UNSAMV2_MODEL is %r",
            spec.variant,
            model,
        )
        return None

    def fetch(progress: Progress) -> Path:
        logged = [-1]

        def report(done: int, total: int | None) -> None:
            progress(done, total)
            tenth = 10 * done // total if total else -1
            if total and tenth > logged[0]:
                logged[0] = tenth
                logger.info("downloading %s: %d of %d MB", spec.name, done >> 20, total >> 20)

        logger.info(
            "no checkpoint configured or present: downloading %s (about %d MB) into %s "
            "(UNSAMV2_AUTO_DOWNLOAD=false turns this off)",
            spec.name,
            spec.approx_mb,
            weights_dir,
        )
        return download_release(
            spec.name,
            weights_dir,
            progress=report,
            url=url,
            variant=model if url is not None else None,
        )

    return fetch

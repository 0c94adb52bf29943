"""Per-process resources of a worker: the store and feature extractors, built lazily.

Prefork children build their own (never inherited from the parent: database connections and
models must not cross a fork). This module holds the only process-level caches of the pipeline.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.worker.names import SETTINGS_KEY

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def get_store(database_url: str) -> Store:
    """Return this process's store for a database URL (migrated on first use)."""
    return Store(database_url)


def store_for(settings: PipelineSettings) -> Store:
    """Return this process's store for the settings."""
    return get_store(settings.resolved_database_url)


@functools.lru_cache(maxsize=2)
def get_feature_extractor(spec: str, device: str) -> Any:
    """Return this process's feature extractor for a spec (`color`, `dinov3:PATH`, ...)."""
    from labeling_pipeline.pseudo_labels.extractors import build_feature_extractor

    return build_feature_extractor(spec, device=device)


def _after_fork(**_: Any) -> None:
    """Drop anything inherited from the parent; limit torch threads per child."""
    from celery import current_app

    get_store.cache_clear()
    get_feature_extractor.cache_clear()
    settings: PipelineSettings | None = current_app.conf.get(SETTINGS_KEY)
    if settings is not None and settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def connect_signals() -> None:
    """Connect the fork handler to Celery's worker signals (idempotent)."""
    from celery.signals import worker_process_init

    worker_process_init.connect(_after_fork, weak=False, dispatch_uid="unsamv2-after-fork")

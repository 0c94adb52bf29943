"""What the request handlers share: settings, model runtime, store, images, memory, metrics."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError
from labeling_pipeline.label_studio.fetch import FetchPolicy
from labeling_pipeline.store import Store
from labeling_pipeline.store.repository import get_or_create_project
from ml_backend.label_studio.images import TaskImages
from ml_backend.label_studio.metrics import Metrics
from ml_backend.label_studio.project_settings import ProjectSettings, project_settings
from ml_backend.label_studio.prompt_memory import PromptMemory
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class BackendContext:
    """Process-level state of the backend (built by `create_app`).

    Attributes:
        settings: Settings of this process.
        runtime: The model runtime.
        store: The store.
        celery_app: Celery app used to queue jobs (created on first use when None).
    """

    settings: Settings
    runtime: ModelRuntime
    store: Store
    celery_app: Any = None
    memory: PromptMemory = field(default_factory=PromptMemory)
    _setup_ls: tuple[str, str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @functools.cached_property
    def celery(self) -> Any:
        """Celery app for sending tasks."""
        if self.celery_app is not None:
            return self.celery_app
        from labeling_pipeline.worker.app import create_celery_app

        return create_celery_app(self.settings.pipeline)

    @functools.cached_property
    def metrics(self) -> Metrics:
        """Prometheus metrics."""

        def cache_stats() -> Any:
            try:
                predictor, _ = self.runtime.serving()
            except Exception:  # no model yet: no cache to report
                return None
            stats = getattr(predictor.cache, "stats", None)
            return stats() if stats else None

        return Metrics(self.runtime.status, cache_stats)

    @functools.cached_property
    def images(self) -> TaskImages:
        """Task image resolver with the configured fetch policy."""
        # Label Studio's own URLs are always fetched through the client; these are the others
        policy = FetchPolicy(
            allowed_hosts=self.settings.allowed_image_hosts,
            allow_private_networks=self.settings.allow_private_networks,
            local_files_root=self.settings.local_files_root,
        )
        return TaskImages(
            self.settings.pipeline.images_dir, policy, max_pixels=self.settings.max_image_pixels
        )

    def remember_label_studio(self, hostname: Any, token: Any) -> None:
        """Keep /setup's hostname and token for when no Label Studio URL/key is configured."""
        if isinstance(hostname, str) and hostname and isinstance(token, str) and token:
            with self._lock:
                self._setup_ls = (hostname, token)

    @functools.cached_property
    def _configured_client(self) -> LabelStudioClient | None:
        pipeline = self.settings.pipeline
        if pipeline.label_studio_url and pipeline.label_studio_api_key:
            return LabelStudioClient(pipeline.label_studio_url, pipeline.label_studio_api_key)
        return None

    def ls_client(self) -> LabelStudioClient | None:
        """Client from the configuration, else from the last /setup, else None."""
        if self._configured_client is not None:
            return self._configured_client
        with self._lock:
            setup = self._setup_ls
        if setup is None:
            return None
        try:
            return LabelStudioClient(*setup)
        except LabelStudioError as exc:
            logger.warning("cannot use Label Studio's /setup credentials: %s", exc)
            return None

    def project_settings(self, ls_project_id: int | None) -> ProjectSettings:
        """Options of a Label Studio project (defaults when unknown)."""
        stored: dict[str, Any] = {}
        if ls_project_id is not None:
            with self.store.session() as session:
                stored = dict(
                    get_or_create_project(
                        session,
                        f"Label Studio project {ls_project_id} [ls:{ls_project_id}]",
                        ls_project_id=ls_project_id,
                    ).config
                    or {}
                )
        return project_settings(stored, default_granularity=self.settings.default_granularity)


def backend() -> BackendContext:
    """The context of the current Flask app."""
    context: BackendContext = current_app.extensions["unsamv2"]
    return context

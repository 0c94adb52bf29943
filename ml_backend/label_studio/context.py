"""What the request handlers share: settings, model runtime, store, images, memory, metrics.

Label Studio's host comes from the configuration, never from an unauthenticated request: /setup's
``hostname`` is used only when it names LABEL_STUDIO_URL's host or an entry of
UNSAMV2_LABEL_STUDIO_HOSTS (otherwise it is ignored with a warning), and /setup's ``access_token``
only with such a host and when LABEL_STUDIO_API_KEY is not set.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError
from labeling_pipeline.label_studio.fetch import FetchPolicy
from labeling_pipeline.label_studio.fetch_rules import (
    ImageFetchError,
    Origin,
    origin_of,
    parse_host_entry,
)
from labeling_pipeline.store import Store
from labeling_pipeline.store.repository import label_studio_project
from ml_backend.label_studio.images import TaskImages
from ml_backend.label_studio.metrics import Metrics
from ml_backend.label_studio.project_settings import ProjectSettings, project_settings
from ml_backend.label_studio.prompt_memory import PromptMemory
from ml_backend.label_studio.video_downloads import VideoDownloads
from ml_backend.prefetch import Prefetcher
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
    _setup_client: LabelStudioClient | None = field(default=None, repr=False)
    _videos: VideoDownloads | None = field(default=None, repr=False)
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
    def prefetcher(self) -> Prefetcher:
        """Background embeddings of opened tasks (see `prefetch_tasks`)."""
        return Prefetcher(max(1, self.settings.prefetch_workers))

    @functools.cached_property
    def images(self) -> TaskImages:
        """Task image resolver with the configured fetch policy."""
        # Label Studio's own URLs are always fetched through the client; these are the others
        deadline_s = self.settings.pipeline.fetch_timeout_s
        policy = FetchPolicy(
            allowed_hosts=self.settings.allowed_image_hosts,
            allow_private_networks=self.settings.allow_private_networks,
            local_files_root=self.settings.local_files_root,
            deadline_s=deadline_s,
            timeout_s=min(30.0, deadline_s),
        )
        return TaskImages(
            self.settings.pipeline.images_dir, policy, max_pixels=self.settings.max_image_pixels
        )

    def videos(self) -> VideoDownloads:
        """Downloaded task videos kept on disk (created on first use, once)."""
        with self._lock:
            if self._videos is None:
                self._videos = VideoDownloads(
                    self.settings.pipeline.data_dir / "video-cache",
                    max_bytes=self.settings.video_cache_mb * 1024 * 1024,
                )
            return self._videos

    def label_studio_origin_allowed(self, hostname: str) -> Origin | None:
        """Origin of a /setup hostname if it is LABEL_STUDIO_URL's or an allowed one, else None."""
        try:
            scheme, host, port = origin_of(hostname)
        except ImageFetchError:
            return None
        configured = self.settings.pipeline.label_studio_url
        if configured:
            try:
                if origin_of(configured) == (scheme, host, port):
                    return scheme, host, port
            except ImageFetchError:
                pass
        entries = (parse_host_entry(entry) for entry in self.settings.label_studio_hosts)
        if any(entry.host != "*" and entry.matches(host, port) for entry in entries):
            return scheme, host, port
        return None

    def remember_label_studio(self, hostname: Any, token: Any) -> None:
        """Keep /setup's hostname and token if the hostname is an allowed Label Studio host.

        Ignored (with a warning) when LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are both set, or
        when the hostname is neither LABEL_STUDIO_URL's host nor in UNSAMV2_LABEL_STUDIO_HOSTS.
        LABEL_STUDIO_API_KEY, when set, is used instead of the token. A change of host drops
        the image mappings made with the previous one.
        """
        if not isinstance(hostname, str) or not hostname or self._configured_client is not None:
            return
        origin = self.label_studio_origin_allowed(hostname)
        if origin is None:
            logger.warning(
                "ignoring /setup hostname %r: it is neither LABEL_STUDIO_URL's host nor in "
                "UNSAMV2_LABEL_STUDIO_HOSTS",
                hostname[:200],
            )
            return
        key = self.settings.pipeline.label_studio_api_key or (
            token if isinstance(token, str) else ""
        )
        if not key:
            logger.warning("ignoring /setup hostname %r: no access token", hostname[:200])
            return
        with self._lock:
            previous = (
                self.label_studio_origin_allowed(self._setup_ls[0]) if self._setup_ls else None
            )
            self._setup_ls = (hostname, key)
            self._setup_client = None
        if previous is not None and previous != origin:
            self.images.forget_host(previous)

    @functools.cached_property
    def _configured_client(self) -> LabelStudioClient | None:
        pipeline = self.settings.pipeline
        if pipeline.label_studio_url and pipeline.label_studio_api_key:
            return LabelStudioClient(pipeline.label_studio_url, pipeline.label_studio_api_key)
        return None

    def ls_client(self) -> LabelStudioClient | None:
        """Client from the configuration, else from the last accepted /setup, else None."""
        if self._configured_client is not None:
            return self._configured_client
        with self._lock:
            setup, client = self._setup_ls, self._setup_client
        if setup is None or client is not None:
            return client
        try:
            client = LabelStudioClient(*setup)
        except LabelStudioError as exc:
            logger.warning("cannot use Label Studio's /setup credentials: %s", exc)
            return None
        with self._lock:
            if self._setup_ls == setup:
                self._setup_client = client
        return client

    def project_settings(self, ls_project_id: int | None) -> ProjectSettings:
        """Options of a Label Studio project (defaults when unknown)."""
        stored: dict[str, Any] = {}
        if ls_project_id is not None:
            with self.store.session() as session:
                stored = dict(label_studio_project(session, ls_project_id).config or {})
        return project_settings(stored, default_granularity=self.settings.default_granularity)


def backend() -> BackendContext:
    """The context of the current Flask app."""
    context: BackendContext = current_app.extensions["unsamv2"]
    return context

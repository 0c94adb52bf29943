"""What the request handlers share: settings, the model runtime, the store, the Celery app."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from labeling_pipeline.store import Store
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings


@dataclass
class BackendContext:
    """Process-level state of the backend (built by `create_app`).

    Attributes:
        settings: Settings of this process.
        runtime: The model runtime.
        store: The store.
        celery: Celery app used to queue jobs (created on first use).
    """

    settings: Settings
    runtime: ModelRuntime
    store: Store
    _celery: Any = field(default=None, repr=False)

    @functools.cached_property
    def celery(self) -> Any:
        """Celery app for sending tasks."""
        if self._celery is not None:
            return self._celery
        from labeling_pipeline.celery_app import create_celery_app

        return create_celery_app(self.settings.pipeline)


def backend() -> BackendContext:
    """The context of the current Flask app."""
    context: BackendContext = current_app.extensions["unsamv2"]
    return context

"""Per-project models of a serving process: each scope's current version, loaded on first use.

`ModelRuntime` keeps the global model (its background loader and poller); `ScopedModels` serves
every other scope (``ls:<id>``, ``project:<id>``). What a scope serves is resolved from the store
(its own pointer; none: the global model) and remembered for `ttl_s`, so a click costs no query
while the answer is fresh. A scope whose version differs from the global one gets its predictor
from a `ModelPool` (least recently used models dropped first, one load per version at a time,
each predictor with its own embedding cache). A version that fails to load is not tried again
until its file changes; meanwhile the scope keeps the version it served before (or the global
model), so a broken publication never takes a project down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core_model.errors import UnSAMv2Error
from core_model.serving import MaskPredictor
from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
from labeling_pipeline.store import Store
from labeling_pipeline.store.versions import GLOBAL_SCOPE, check_scope, current_version
from ml_backend.model_pool import ModelLoadError, ModelPool

logger = logging.getLogger(__name__)

#: (predictor, version name) as `ModelRuntime.serving` returns them.
Serving = tuple[MaskPredictor, str]


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class ScopedModels:
    """The models of the scopes other than global.

    Args:
        store: Store with the scopes' pointers (None: every scope is served the global model).
        load: Builds the (gated) predictor of a weights choice and returns it with its size in
            bytes; `choice_of` makes the choices.
        choice_of: Turns a version row's (model, checkpoint, name) into a weights choice.
        max_models: Most scoped models kept loaded.
        max_bytes: Most bytes of scoped models kept loaded.
        ttl_s: How long a scope's resolved version is trusted before asking the store again.
    """

    def __init__(
        self,
        store: Store | None,
        *,
        load: Callable[[Any], tuple[MaskPredictor, int]],
        choice_of: Callable[[str, Path, str], Any],
        max_models: int,
        max_bytes: int,
        ttl_s: float,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._choice_of = choice_of
        self.pool: ModelPool[Any, MaskPredictor] = ModelPool(
            load, max_models=max_models, max_bytes=max_bytes
        )
        self._lock = threading.Lock()
        self._resolved: dict[str, tuple[Any | None, float]] = {}
        self._failed: dict[Any, tuple[int, int] | None] = {}
        self._last_good: dict[str, Any] = {}

    def choice(self, scope: str) -> Any | None:
        """Return the weights choice of the scope's own current version (None: global's)."""
        now = time.monotonic()
        with self._lock:
            cached = self._resolved.get(scope)
        if cached is not None and now < cached[1]:
            return cached[0]
        choice = cached[0] if cached is not None else None
        if self.store is not None:
            try:
                with self.store.session() as session:
                    version = current_version(session, scope)
                    choice = (
                        None
                        if version is None
                        else self._choice_of(
                            version.model, Path(version.path) / CHECKPOINT_FILE, version.name
                        )
                    )
            except UnSAMv2Error as exc:  # the store is unreachable: keep what was resolved
                logger.warning("cannot look up the model version of %s: %s", scope, exc)
        with self._lock:
            self._resolved[scope] = (choice, now + self.ttl_s)
        return choice

    def _predictor(self, scope: str, choice: Any) -> MaskPredictor | None:
        signature = _signature(choice.checkpoint)
        with self._lock:
            if choice in self._failed and self._failed[choice] == signature:
                return None  # the same broken file: wait until it changes
        try:
            predictor = self.pool.get(choice)
        except ModelLoadError as exc:
            logger.error("cannot load %s for %s: %s", choice.checkpoint, scope, exc)
            with self._lock:
                self._failed[choice] = signature
            return None
        with self._lock:
            self._failed.pop(choice, None)
            self._last_good[scope] = choice
        return predictor

    def serving(self, scope: str, global_serving: Callable[[], Serving]) -> Serving:
        """Return (predictor, version) for `scope`, loading its version on first use.

        Args:
            scope: A scope other than global.
            global_serving: The global model's `serving()` (used when the scope has no version
                of its own, or its version and every earlier one cannot be loaded).
        """
        scope = check_scope(scope)
        choice = self.choice(scope)
        if scope != GLOBAL_SCOPE and choice is not None:
            predictor = self._predictor(scope, choice)
            if predictor is not None:
                return predictor, choice.version_name or predictor.model_version
            with self._lock:
                previous = self._last_good.get(scope)
            if previous is not None:
                kept = self.pool.peek(previous)
                if kept is not None:
                    return kept, previous.version_name or kept.model_version
        return global_serving()

    def version(self, scope: str, global_version: str) -> str:
        """Return the version name `scope` is served, without loading anything."""
        choice = self.choice(check_scope(scope))
        if choice is None or scope == GLOBAL_SCOPE:
            return global_version
        with self._lock:
            failed = choice in self._failed
            previous = self._last_good.get(scope)
        if failed:
            return previous.version_name if previous is not None else global_version
        return str(choice.version_name)

    def preload(self, scope: str) -> None:
        """Start loading the scope's version in the background (a no-op when loaded)."""
        choice = self.choice(check_scope(scope))
        if choice is None or self.pool.peek(choice) is not None:
            return
        threading.Thread(
            target=self._predictor, args=(scope, choice), name="model-preload", daemon=True
        ).start()

    def status(self) -> dict[str, Any]:
        """JSON-ready: loaded scoped versions (least recently used first) and their bytes."""
        return {
            "loaded": [c.version_name for c in self.pool.loaded()],
            "bytes": self.pool.bytes(),
            "max_models": self.pool.max_models,
        }

"""Loaded models of a serving process: an LRU bounded by count and bytes, loaded once each.

`ModelPool.get(key)` returns the predictor of a weights choice, building it on first use. Two
requests for one key that is not loaded yet share one load (the second waits for the first);
loads of different keys run side by side. After a load the least recently used models are
dropped until at most `max_models` remain and their sizes sum to at most `max_bytes` (the newest
is always kept, even alone above the byte bound). Requests that already hold a dropped
predictor finish with it; only the pool forgets it. A key whose load failed is not tried again
until `retry_after` says so (the runtime retries once the file changes).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from core_model.errors import UnSAMv2Error

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")


class ModelLoadError(UnSAMv2Error):
    """A model could not be built; the message says which and why."""


@dataclass
class _Loading:
    done: threading.Event
    error: BaseException | None = None


class ModelPool(Generic[K, P]):
    """Predictors by key, least recently used dropped first.

    Args:
        load: Builds the predictor of a key and says how many bytes it holds (may take seconds;
            runs outside the pool's lock).
        max_models: Most predictors kept (>= 1).
        max_bytes: Most bytes kept, summed over predictors (the newest always stays).
    """

    def __init__(
        self,
        load: Callable[[K], tuple[P, int]],
        *,
        max_models: int,
        max_bytes: int,
    ) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self._load = load
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._models: collections.OrderedDict[K, tuple[P, int]] = collections.OrderedDict()
        self._loading: dict[K, _Loading] = {}
        self.loads = 0

    def peek(self, key: K) -> P | None:
        """Return the loaded predictor of `key` (marking it used), or None."""
        with self._lock:
            entry = self._models.get(key)
            if entry is None:
                return None
            self._models.move_to_end(key)
            return entry[0]

    def get(self, key: K) -> P:
        """Return the predictor of `key`, loading it if needed (one load per key at a time).

        Raises:
            ModelLoadError: the load failed (this caller's or the one it waited for).
        """
        while True:
            with self._lock:
                entry = self._models.get(key)
                if entry is not None:
                    self._models.move_to_end(key)
                    return entry[0]
                loading = self._loading.get(key)
                owner = loading is None
                if loading is None:
                    loading = self._loading[key] = _Loading(threading.Event())
            if owner:
                return self._load_as_owner(key, loading)
            loading.done.wait()
            if loading.error is not None:
                raise ModelLoadError(str(loading.error)) from loading.error

    def _load_as_owner(self, key: K, loading: _Loading) -> P:
        try:
            predictor, size = self._load(key)
        except BaseException as exc:
            loading.error = exc
            with self._lock:
                del self._loading[key]
            loading.done.set()
            raise ModelLoadError(str(exc)) from exc
        with self._lock:
            self.loads += 1
            self._models[key] = (predictor, size)
            self._evict_locked()
            del self._loading[key]
        loading.done.set()
        return predictor

    def _evict_locked(self) -> None:
        def total() -> int:
            return sum(size for _, size in self._models.values())

        while len(self._models) > self.max_models or (
            len(self._models) > 1 and total() > self.max_bytes
        ):
            key, _ = self._models.popitem(last=False)
            logger.info("unloaded model %s (least recently used)", key)

    def loaded(self) -> list[K]:
        """Return the loaded keys, least recently used first."""
        with self._lock:
            return list(self._models)

    def bytes(self) -> int:
        """Return the bytes held by loaded predictors."""
        with self._lock:
            return sum(size for _, size in self._models.values())


def module_bytes(predictor: object) -> int:
    """Return the bytes of the parameters and buffers of `predictor.model` (0 if none)."""
    model = getattr(predictor, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))

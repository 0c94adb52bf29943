"""Embedding caches: a protocol and a thread-safe LRU bounded in bytes.

Design:
    * Keys are strings built by the predictor from the image content hash, the model version
      and the preprocessing version, so a new model or preprocessing never reuses old entries.
    * `LRUEmbeddingCache` keeps entries in least-recently-used order and evicts the oldest until
      the total `nbytes` fits `max_bytes`. An entry larger than `max_bytes` is returned but not
      stored (so `max_bytes=0` disables storage while keeping request coalescing).
    * Thread safety: one lock guards the table; the expensive computation runs outside it.
      Concurrent `get_or_compute` calls for the same missing key are coalesced: the first
      computes, the others wait and receive the same value (or the same exception; nothing is
      stored on failure).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core_model.types import ImageEmbedding

logger = logging.getLogger(__name__)


class EmbeddingCache(Protocol):
    """What the predictor needs from a cache."""

    def get(self, key: str) -> ImageEmbedding | None:
        """Return the entry for `key`, or None."""

    def put(self, key: str, value: ImageEmbedding) -> None:
        """Store `value` under `key`."""

    def get_or_compute(self, key: str, compute: Callable[[], ImageEmbedding]) -> ImageEmbedding:
        """Return the entry for `key`, computing and storing it once if missing."""


@dataclass(frozen=True)
class CacheStats:
    """Counters of an `LRUEmbeddingCache` (cumulative since creation)."""

    hits: int
    misses: int
    coalesced: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: ImageEmbedding | None = None
        self.error: BaseException | None = None


class LRUEmbeddingCache:
    """Thread-safe LRU cache of image embeddings, bounded by total bytes.

    Args:
        max_bytes: Upper bound of the summed `ImageEmbedding.nbytes` kept (>= 0).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._hits = self._misses = self._coalesced = self._evictions = 0

    def get(self, key: str) -> ImageEmbedding | None:
        """Return the entry for `key` (marking it recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: str, value: ImageEmbedding) -> None:
        """Store `value`, evicting least-recently-used entries to stay within `max_bytes`."""
        size = value.nbytes
        if size > self.max_bytes:
            logger.debug("embedding of %d bytes exceeds the cache size; not stored", size)
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self._evictions += 1

    def get_or_compute(self, key: str, compute: Callable[[], ImageEmbedding]) -> ImageEmbedding:
        """Return the entry for `key`; on a miss compute it once, even under concurrency."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return value
            flight = self._flights.get(key)
            owner = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
                self._misses += 1
            else:
                self._coalesced += 1
        if not owner:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.value is not None  # set before `done` when there is no error
            return flight.value
        try:
            flight.value = compute()
            self.put(key, flight.value)
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        """Return a snapshot of the counters."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                coalesced=self._coalesced,
                evictions=self._evictions,
                entries=len(self._entries),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
            )

"""LRUEmbeddingCache: hits, misses, byte-bounded eviction, invalidation, concurrency."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from core_model.cache import LRUEmbeddingCache
from core_model.types import ImageEmbedding


def embedding(nbytes: int, version: str = "m1") -> ImageEmbedding:
    tensor = torch.zeros(nbytes // 4, dtype=torch.float32)
    return ImageEmbedding(
        image_embed=tensor, high_res_features=(), original_hw=(1, 1), model_version=version
    )


def test_hit_miss_and_stats() -> None:
    cache = LRUEmbeddingCache(1000)
    assert cache.get("a") is None
    value = embedding(400)
    cache.put("a", value)
    assert cache.get("a") is value
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.bytes) == (1, 1, 1, 400)


def test_evicts_least_recently_used_until_it_fits() -> None:
    cache = LRUEmbeddingCache(1000)
    a, b, c = embedding(400), embedding(400), embedding(400)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now more recent than b
    cache.put("c", c)  # 1200 > 1000: evict b
    assert cache.get("b") is None
    assert cache.get("a") is a and cache.get("c") is c
    assert cache.stats().evictions == 1 and cache.stats().bytes == 800


def test_replacing_a_key_updates_the_byte_count() -> None:
    cache = LRUEmbeddingCache(1000)
    cache.put("a", embedding(400))
    cache.put("a", embedding(800))
    assert cache.stats().bytes == 800 and cache.stats().entries == 1


def test_entry_larger_than_the_cache_is_not_stored() -> None:
    cache = LRUEmbeddingCache(100)
    big = embedding(400)
    assert cache.get_or_compute("a", lambda: big) is big
    assert cache.get("a") is None and cache.stats().bytes == 0


def test_keys_with_another_model_version_do_not_hit() -> None:
    cache = LRUEmbeddingCache(10_000)
    cache.put("img|m1|p1", embedding(40, "m1"))
    calls = []
    value = cache.get_or_compute("img|m2|p1", lambda: calls.append(1) or embedding(40, "m2"))
    assert calls == [1] and value.model_version == "m2"


def test_concurrent_requests_for_one_key_compute_once() -> None:
    cache = LRUEmbeddingCache(10_000)
    calls: list[int] = []
    started = threading.Event()

    def compute() -> ImageEmbedding:
        calls.append(1)
        started.set()
        time.sleep(0.2)  # long enough for every other thread to arrive while computing
        return embedding(40)

    results: list[ImageEmbedding] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    stats = cache.stats()
    assert stats.misses == 1 and stats.coalesced + stats.hits == 7


def test_failure_reaches_every_waiter_and_nothing_is_stored() -> None:
    cache = LRUEmbeddingCache(10_000)
    gate = threading.Event()

    def compute() -> ImageEmbedding:
        gate.wait(1.0)
        raise RuntimeError("encoder failed")

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            cache.get_or_compute("k", compute)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join()
    assert len(errors) == 4
    assert cache.get("k") is None
    # the key is usable again after a failure
    assert cache.get_or_compute("k", lambda: embedding(40)).nbytes == 40


def test_negative_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        LRUEmbeddingCache(-1)

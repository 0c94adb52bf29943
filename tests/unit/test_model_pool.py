"""The serving process's model pool: LRU by count and bytes, one load per key, failures."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from ml_backend.model_pool import ModelLoadError, ModelPool, module_bytes


def pool(sizes: dict[str, int], *, max_models: int = 2, max_bytes: int = 1000, fail=()):
    calls: list[str] = []

    def load(key: str) -> tuple[str, int]:
        calls.append(key)
        if key in fail:
            raise RuntimeError(f"cannot load {key}")
        return f"predictor-{key}", sizes[key]

    return ModelPool(load, max_models=max_models, max_bytes=max_bytes), calls


def test_models_are_loaded_once_and_the_least_recently_used_goes_first() -> None:
    models, calls = pool({"a": 1, "b": 1, "c": 1})
    assert models.get("a") == "predictor-a" and models.get("a") == "predictor-a"
    models.get("b")
    models.get("a")  # a is now the most recently used
    models.get("c")
    assert models.loaded() == ["a", "c"] and calls == ["a", "b", "c"]


def test_the_byte_bound_drops_models_but_keeps_the_newest() -> None:
    models, _ = pool({"a": 600, "b": 600, "huge": 5000}, max_models=5)
    models.get("a")
    models.get("b")
    assert models.loaded() == ["b"] and models.bytes() == 600
    models.get("huge")
    assert models.loaded() == ["huge"]


def test_a_failed_load_raises_and_leaves_the_others() -> None:
    models, calls = pool({"a": 1}, fail={"bad"})
    models.get("a")
    with pytest.raises(ModelLoadError, match="cannot load bad"):
        models.get("bad")
    assert models.loaded() == ["a"] and models.peek("bad") is None


def test_concurrent_requests_for_one_key_share_one_load() -> None:
    started = threading.Event()
    release = threading.Event()
    count = []

    def slow(key: str) -> tuple[str, int]:
        count.append(key)
        started.set()
        release.wait(5)
        return key, 1

    models: ModelPool[str, str] = ModelPool(slow, max_models=2, max_bytes=10)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(models.get("v"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait(5)
    time.sleep(0.05)  # let the other threads reach the wait
    release.set()
    for thread in threads:
        thread.join(5)
    assert results == ["v"] * 4 and count == ["v"]


def test_module_bytes_counts_parameters_and_buffers() -> None:
    class Holder:
        model = torch.nn.BatchNorm1d(4)

    # weight + bias (4 float32 each), running mean/var (4 float32 each), num_batches (int64)
    assert module_bytes(Holder()) == 4 * 4 * 4 + 8
    assert module_bytes(object()) == 0

"""`ClickBatcher`: clicks that wait together are decoded in one call (or, on a CPU, side by
side, one intra-op thread each); the queue is bounded.

The predictor is `FakePredictor` (tests/fake_predictor.py): what matters here is which clicks
share a decoder call and what happens past the bound; the test holds the door's decode lane
to make clicks wait, instead of timing them.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fake_predictor import FakePredictor, image

from core_model.types import Prompts
from ml_backend.click_batcher import ClickBatcher, attach_click_batcher, auto_max_batch
from ml_backend.errors import error_body, error_headers, status_for
from ml_backend.model_door import ModelBusyError, ModelDoor

from helpers import wait_for

CLICK = Prompts.from_arrays([[1.0, 1.0]], [1])


def _setup(max_queued: int = 32, max_batch: int = 8):
    fake, door = FakePredictor(), ModelDoor(max_queued=32)
    batcher = attach_click_batcher(door, window_ms=1.0, max_batch=max_batch, max_queued=max_queued)
    gated = door.gate(fake)
    embeddings = [gated.embed_keyed(f"img{i}", image) for i in range(6)]
    return fake, door, batcher, gated, embeddings


def _click(gated, embedding, results, index) -> threading.Thread:
    def run() -> None:
        try:
            results[index] = gated.predict(embedding, CLICK, granularity=0.5)
        except (ModelBusyError, RuntimeError) as exc:
            results[index] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_clicks_waiting_together_are_decoded_in_one_call() -> None:
    fake, door, batcher, gated, embeddings = _setup()
    door.acquire(door.decode_lane)  # the test holds the decode lane: clicks pile up
    results: dict[int, object] = {}
    first = _click(gated, embeddings[0], results, 0)
    wait_for(lambda: len(door.decode_lane.waiting) == 1, 10, "the batch worker in line")
    later = [_click(gated, embeddings[i], results, i) for i in range(1, 6)]
    wait_for(lambda: batcher.pending() == 5, 10, "five waiting clicks")
    assert door.status()["clicks_waiting"] == 5 and not door.idle()
    door.decode_lane.release(0.0)
    for thread in [first, *later]:
        thread.join(timeout=10)
    assert batcher.batches == 2 and batcher.decoded == 6  # [first], then the five together
    assert fake.decoded == ["img0", ""]  # "" : one call on the five images' stacked features
    for index in range(6):
        result = results[index]
        assert not isinstance(result, Exception)
        assert result.masks.shape == (1, *image().shape[:2])
        assert np.array_equal(result.scores, [1.0])
    assert door.idle()


def test_past_the_bound_a_click_is_refused_at_once_with_a_retry_time() -> None:
    fake, door, batcher, gated, embeddings = _setup(max_queued=2)
    door.acquire(door.decode_lane)
    results: dict[int, object] = {}
    threads = [_click(gated, embeddings[0], results, 0)]
    wait_for(lambda: len(door.decode_lane.waiting) == 1, 10, "the batch worker in line")
    threads += [_click(gated, embeddings[i], results, i) for i in (1, 2)]
    wait_for(lambda: batcher.pending() == 2, 10, "two waiting clicks")
    with pytest.raises(ModelBusyError) as refused:
        gated.predict(embeddings[3], CLICK, granularity=0.5)
    assert refused.value.retry_after_s >= 1
    assert status_for(refused.value) == 503
    assert error_headers(refused.value)["Retry-After"] == str(refused.value.retry_after_s)
    assert "busy" in error_body(refused.value)[0]["error"]
    door.decode_lane.release(0.0)
    for thread in threads:
        thread.join(timeout=10)
    assert all(not isinstance(results[i], Exception) for i in range(3))


def test_bad_clicks_fail_in_the_caller_and_calls_with_mask_input_skip_the_queue() -> None:
    fake, door, batcher, gated, embeddings = _setup()
    with pytest.raises(Exception, match="granularity"):
        gated.predict(embeddings[0], CLICK, granularity=3.0)
    gated.predict(embeddings[0], CLICK, granularity=0.5, mask_input=np.zeros((1, 4, 4)))
    assert batcher.batches == 0  # the direct path: the decode lane, no batch
    gated.predict(embeddings[0], CLICK, granularity=0.5)
    assert batcher.batches == 1


def test_failures_reach_every_waiting_click_and_arguments_are_checked() -> None:
    fake, door, batcher, gated, embeddings = _setup()
    fake.decode = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("decoder broke"))
    with pytest.raises(RuntimeError, match="decoder broke"):
        gated.predict(embeddings[0], CLICK, granularity=0.5)
    assert door.idle()  # the lane was given back
    assert auto_max_batch(fake) == 1  # a CPU predictor decodes one click per call
    with pytest.raises(ValueError, match="max_queued"):
        ClickBatcher(door, window_s=0.001, max_queued=0)
    batcher.close()


# the worker thread ending on the KeyboardInterrupt is the case under test
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_stopped_by_a_base_exception_is_restarted_by_the_next_click() -> None:
    fake, door, batcher, gated, embeddings = _setup()
    decode = fake.decode
    fake.decode = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        gated.predict(embeddings[0], CLICK, granularity=0.5)
    wait_for(lambda: batcher._thread is not None and not batcher._thread.is_alive(), 5, "stop")
    fake.decode = decode
    results: dict[int, object] = {}
    _click(gated, embeddings[1], results, 0).join(10)  # without a worker it would wait forever
    assert results[0].masks.shape[1:] == embeddings[1].original_hw
    batcher.close()


def _side_by_side_setup():
    fake, door = FakePredictor(), ModelDoor(max_queued=32)
    batcher = attach_click_batcher(door, window_ms=1.0, max_batch=1, cpu_decoders=2)
    gated = door.gate(fake)
    embeddings = [gated.embed_keyed(f"img{i}", image) for i in range(6)]
    threads_seen: list[tuple[str, int]] = []
    decode = fake.decode

    def observed(*args, **kwargs):
        threads_seen.append((threading.current_thread().name, torch.get_num_threads()))
        return decode(*args, **kwargs)

    fake.decode = observed
    return fake, door, batcher, gated, embeddings, threads_seen


def _lone_then_waiting(door, batcher, gated, embeddings, results, first, later):
    """Hold the lane; click `first` (the worker takes it alone), then `later` (they wait).

    Returns the click threads; the caller releases the lane.
    """
    door.acquire(door.decode_lane)
    threads = [_click(gated, embeddings[first], results, first)]
    wait_for(lambda: door.queued_for(door.decode_lane) == 1, 10, "the batch worker in line")
    threads += [_click(gated, embeddings[i], results, i) for i in later]
    wait_for(lambda: batcher.pending() == len(later), 10, "the later clicks waiting")
    return threads


def test_on_a_cpu_waiting_clicks_are_decoded_side_by_side_one_thread_each() -> None:
    fake, door, batcher, gated, embeddings, threads_seen = _side_by_side_setup()
    results: dict[int, object] = {}
    held = [fake.hold_decode("img1"), fake.hold_decode("img2")]
    threads = _lone_then_waiting(door, batcher, gated, embeddings, results, 0, range(1, 6))
    door.decode_lane.release(0.0)
    wait_for(lambda: fake.decode_started["img1"].is_set(), 10, "img1 decoding")
    wait_for(lambda: fake.decode_started["img2"].is_set(), 10, "img2 decoding")
    assert fake.decoding_now == 2  # two clicks decode at the same time
    for event in held:
        event.set()
    for thread in threads:
        thread.join(timeout=10)
    assert all(results[i].masks.shape[1:] == (8, 8) for i in range(6))
    wait_for(lambda: batcher.decoded == 6, 10, "the drain's count")  # counted after the lane
    assert batcher.batches == 2  # [img0] alone, then one drain of 5
    assert sorted(fake.decoded) == [f"img{i}" for i in range(6)]  # one call per click
    lone, *side = threads_seen
    assert lone[0] == "click-batcher"  # a lone click runs on every intra-op thread
    assert {name.rsplit("_", 1)[0] for name, _ in side} == {"click-decoder"}
    assert {count for _, count in side} == {1}
    assert door.idle()
    batcher.close()


def test_a_call_waiting_for_the_decode_lane_ends_the_drain() -> None:
    fake, door, batcher, gated, embeddings, _ = _side_by_side_setup()
    results: dict[int, object] = {}
    held = [fake.hold_decode("img1"), fake.hold_decode("img2")]
    threads = _lone_then_waiting(door, batcher, gated, embeddings, results, 0, (1, 2))
    door.decode_lane.release(0.0)
    wait_for(lambda: fake.decoding_now == 2, 10, "img1 and img2 decoding side by side")
    sweep = threading.Thread(
        target=lambda: gated.predict_many(embeddings[5], CLICK, [0.2, 0.8]), daemon=True
    )
    sweep.start()  # another caller waits for the decode lane
    wait_for(lambda: door.queued_for(door.decode_lane) == 1, 10, "the sweep in line")
    threads += [_click(gated, embeddings[i], results, i) for i in (3, 4)]
    wait_for(lambda: batcher.pending() == 2, 10, "two more clicks")
    for event in held:
        event.set()
    for thread in [*threads, sweep]:
        thread.join(timeout=10)
    assert fake.decoded[0] == "img0" and sorted(fake.decoded[1:3]) == ["img1", "img2"]
    assert fake.decoded[3] == "img5"  # the sweep went before the clicks queued behind it
    assert sorted(fake.decoded[4:]) == ["img3", "img4"]
    assert all(not isinstance(results[i], Exception) for i in range(5))
    batcher.close()


def test_when_the_decoder_threads_fail_every_click_of_the_batch_gets_the_error() -> None:
    fake, door, batcher, gated, embeddings, _ = _side_by_side_setup()
    broken = ThreadPoolExecutor(1)
    broken.shutdown()
    batcher._pool = broken  # submit raises: "cannot schedule new futures after shutdown"
    results: dict[int, object] = {}
    threads = _lone_then_waiting(door, batcher, gated, embeddings, results, 0, (1, 2))
    door.decode_lane.release(0.0)
    for thread in threads:
        thread.join(timeout=10)
    assert not isinstance(results[0], Exception)  # a lone click: no decoder threads
    assert all(isinstance(results[i], RuntimeError) for i in (1, 2))
    again: dict[int, object] = {}
    threads = _lone_then_waiting(door, batcher, gated, embeddings, again, 3, (4, 5))
    door.decode_lane.release(0.0)
    for thread in threads:
        thread.join(timeout=10)
    assert all(not isinstance(again[i], Exception) for i in (3, 4, 5))
    assert batcher._pool is not None and batcher._pool is not broken  # new decoder threads
    wait_for(door.idle, 10, "the lane given back after the drain")
    batcher.close()

"""`ModelDoor` and `GatedPredictor`: FIFO lanes, the wait bound, 503, cache hits that skip the line.

The predictor is `FakePredictor` (tests/fake_predictor.py): the door's behaviour is about the
order and overlap of model calls, which tests hold and release with events.
"""

from __future__ import annotations

import threading

import pytest
from fake_predictor import FakePredictor, image

from core_model.types import Prompts
from ml_backend.errors import error_body, error_headers, status_for
from ml_backend.model_door import GatedPredictor, ModelBusyError, ModelDoor

from helpers import wait_for

CLICK = Prompts.from_arrays([[1.0, 1.0]], [1])


def _start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a model call never finished"


def _queued(door: ModelDoor, count: int) -> None:
    wait_for(lambda: door.queued() == count, 10, f"{count} waiting call(s)")


def test_lane_serves_waiters_in_arrival_order() -> None:
    door = ModelDoor(max_concurrent_encodes=1, max_queued=10)
    lane = door.encode_lane
    door.acquire(lane)  # the test holds the only slot
    order: list[int] = []

    def wait_then_record(index: int) -> None:
        door.acquire(lane)
        order.append(index)
        lane.release(0.0)

    threads = []
    for index in range(6):  # each queues before the next arrives
        threads.append(_start(wait_then_record, index))
        _queued(door, index + 1)
    lane.release(0.0)
    _join(*threads)
    assert order == list(range(6))
    assert door.status()["encoding"] == 0 and door.queued() == 0


def test_encoder_runs_are_bounded_and_fifo_through_the_predictor() -> None:
    fake, door = FakePredictor(), ModelDoor(max_concurrent_encodes=1)
    gated = door.gate(fake)
    release = fake.hold("first")
    first = _start(gated.embed_keyed, "first", image)
    assert fake.started["first"].wait(10)
    later = []
    for index, key in enumerate(["b", "c", "d"]):
        later.append(_start(gated.embed_keyed, key, image))
        _queued(door, index + 1)
    assert fake.encoded == ["first"]  # the others wait for the one encoder slot
    release.set()
    _join(first, *later)
    assert fake.encoded == ["first", "b", "c", "d"] and fake.max_encoding == 1


def test_two_encoder_slots_let_two_images_encode_at_once() -> None:
    fake, door = FakePredictor(), ModelDoor(max_concurrent_encodes=2)
    gated = door.gate(fake)
    holds = [fake.hold("a"), fake.hold("b")]
    threads = [_start(gated.embed_keyed, key, image) for key in ("a", "b")]
    assert fake.started["a"].wait(10) and fake.started["b"].wait(10)
    assert fake.max_encoding == 2 and door.queued() == 0
    for hold in holds:
        hold.set()
    _join(*threads)


def test_full_line_raises_model_busy_mapped_to_503_with_retry_after() -> None:
    fake, door = FakePredictor(), ModelDoor(max_concurrent_encodes=1, max_queued=2)
    gated = door.gate(fake)
    release = fake.hold("running")
    running = _start(gated.embed_keyed, "running", image)
    assert fake.started["running"].wait(10)
    waiting = [_start(gated.embed_keyed, key, image) for key in ("w1", "w2")]
    _queued(door, 2)
    with pytest.raises(ModelBusyError) as caught:
        gated.embed_keyed("one-too-many", image)
    release.set()
    _join(running, *waiting)
    assert "one-too-many" not in fake.encoded and fake.encoded[0] == "running"
    exc = caught.value
    assert status_for(exc) == 503
    body, status = error_body(exc)
    assert status == 503 and "busy" in str(body["error"]) and body["type"] == "ModelBusyError"
    retry = error_headers(exc)["Retry-After"]
    assert retry.isdigit() and int(retry) >= 1
    assert error_headers(ValueError("x")) == {}


def test_cache_hit_and_its_decode_do_not_wait_behind_another_images_encoder() -> None:
    fake, door = FakePredictor(), ModelDoor(max_concurrent_encodes=1, max_queued=4)
    gated = door.gate(fake)
    cached = gated.embed_keyed("cached", image)
    release = fake.hold("slow")
    slow = _start(gated.embed_keyed, "slow", image)
    assert fake.started["slow"].wait(10)
    queued = _start(gated.embed_keyed, "queued", image)  # a miss: waits for the encoder
    _queued(door, 1)
    answers: list[object] = []

    def click() -> None:  # a follow-up click on the cached image
        embedding = gated.embed_keyed("cached", image)
        answers.append(gated.predict(embedding, CLICK, granularity=0.5))

    clicking = _start(click)
    _join(clicking)  # finished while "slow" still holds the encoder
    assert len(answers) == 1 and fake.encoding_now == 1 and "queued" not in fake.encoded
    assert embedding_is(cached, fake, "cached")
    release.set()
    _join(slow, queued)


def embedding_is(embedding, fake: FakePredictor, key: str) -> bool:
    return embedding.key == key and fake.encoded.count(key) == 1


def test_same_image_requests_merge_into_one_encoder_run_without_queueing() -> None:
    fake, door = FakePredictor(), ModelDoor(max_concurrent_encodes=1, max_queued=0)
    gated = door.gate(fake)
    release = fake.hold("same")
    results: list[object] = []
    threads = [_start(lambda: results.append(gated.embed_keyed("same", image))) for _ in range(4)]
    assert fake.started["same"].wait(10)
    wait_for(lambda: fake.cache.stats().coalesced == 3, 10, "coalesced requests")
    assert door.queued() == 0  # the followers wait for the flight, not in the line
    release.set()
    _join(*threads)
    assert fake.encoded == ["same"] and len(results) == 4
    assert all(r is results[0] for r in results)


def test_decoder_calls_run_one_at_a_time_in_arrival_order() -> None:
    fake, door = FakePredictor(), ModelDoor(max_queued=8)
    gated = door.gate(fake)
    embeddings = {key: gated.embed_keyed(key, image) for key in ("a", "b", "c", "d")}
    release = fake.hold_decode("a")
    first = _start(lambda: gated.predict(embeddings["a"], CLICK, granularity=0.5))
    assert fake.decode_started["a"].wait(10)
    later = []
    for index, key in enumerate(["b", "c", "d"]):
        later.append(_start(lambda k=key: gated.predict_many(embeddings[k], CLICK, [0.2, 0.8])))
        _queued(door, index + 1)
    release.set()
    _join(first, *later)
    assert fake.decoded == ["a", "b", "c", "d"] and fake.max_decoding == 1


def test_a_decode_runs_alongside_an_encoder_run() -> None:
    fake, door = FakePredictor(), ModelDoor()
    gated = door.gate(fake)
    ready = gated.embed_keyed("ready", image)
    release = fake.hold("encoding")
    encoding = _start(gated.embed_keyed, "encoding", image)
    assert fake.started["encoding"].wait(10)
    decoding = _start(lambda: gated.predict_sam2(ready, CLICK))
    _join(decoding)
    assert fake.decoded == ["ready"] and fake.encoding_now == 1
    release.set()
    _join(encoding)


def test_failed_encoder_run_gives_its_slot_back() -> None:
    fake, door = FakePredictor(), ModelDoor(max_queued=0)
    gated = door.gate(fake)

    def broken() -> object:
        raise OSError("unreadable image")

    with pytest.raises(OSError, match="unreadable"):
        gated.embed_keyed("broken", broken)
    assert door.status()["encoding"] == 0
    assert gated.embed_keyed("fine", image).key == "fine"
    assert door.status()["encoding"] == 0


def test_gated_predictor_passes_model_facts_through() -> None:
    fake = FakePredictor("v7")
    gated = GatedPredictor(fake, ModelDoor())
    assert (gated.model_version, gated.info.version, gated.image_size) == ("v7", "v7", 16)
    assert gated.cache is fake.cache and gated.max_image_pixels == fake.max_image_pixels
    assert gated.embed(image(4, 6)).original_hw == (4, 6)


def test_door_rejects_impossible_bounds() -> None:
    with pytest.raises(ValueError, match="need max_concurrent_encodes"):
        ModelDoor(max_concurrent_encodes=0)
    with pytest.raises(ValueError, match="need max_concurrent_encodes"):
        ModelDoor(max_queued=-1)

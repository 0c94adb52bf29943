"""`Prefetcher`: newest first, bounded, stale jobs dropped or cancelled, failures contained."""

from __future__ import annotations

import threading

import pytest

from ml_backend.model_door import BackgroundCancelledError, ModelDoor
from ml_backend.prefetch import Prefetcher, PrefetchJob

from helpers import wait_for


class _Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def job(self, key: str, *, block: bool = False) -> PrefetchJob:
        def run(stale) -> None:
            if block:
                self.started.set()
                self.gate.wait(10)
            self.ran.append(key)

        return PrefetchJob(key, run)


def test_newest_group_runs_first_in_its_own_order_and_old_jobs_are_dropped() -> None:
    recorder, prefetcher = _Recorder(), Prefetcher(workers=1)
    prefetcher.schedule([recorder.job("busy", block=True)], limit=3)
    assert recorder.started.wait(10)
    prefetcher.schedule([recorder.job("a1"), recorder.job("a2")], limit=3)
    prefetcher.schedule([recorder.job("b1"), recorder.job("b2")], limit=3)  # a2 falls out
    assert prefetcher.is_stale("a2") and not prefetcher.is_stale("b1")
    recorder.gate.set()
    assert prefetcher.wait_idle(10)
    assert recorder.ran == ["busy", "b1", "b2", "a1"]
    stats = prefetcher.stats()
    assert (stats.scheduled, stats.done, stats.dropped, stats.failed) == (5, 4, 1, 0)
    prefetcher.close()


def test_a_job_scheduled_again_is_not_queued_twice() -> None:
    recorder, prefetcher = _Recorder(), Prefetcher(workers=1)
    prefetcher.schedule([recorder.job("busy", block=True)], limit=8)
    assert recorder.started.wait(10)
    prefetcher.schedule([recorder.job("x"), recorder.job("y")], limit=8)
    prefetcher.schedule([recorder.job("x"), recorder.job("busy")], limit=8)
    assert prefetcher.stats().waiting == 2  # x moved ahead of y; busy runs already
    recorder.gate.set()
    assert prefetcher.wait_idle(10)
    assert recorder.ran == ["busy", "x", "y"]
    prefetcher.close()


def test_a_job_waiting_for_an_idle_model_is_cancelled_when_it_becomes_stale() -> None:
    door, prefetcher = ModelDoor(), Prefetcher(workers=1)
    door.acquire(door.decode_lane)  # an interactive call holds the model
    waiting = threading.Event()
    outcome: list[str] = []

    def run(stale) -> None:
        waiting.set()
        try:
            door.wait_until_idle(stale)
        except BackgroundCancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("ran")

    prefetcher.schedule([PrefetchJob("old", run)], limit=2)
    assert waiting.wait(10)
    prefetcher.schedule(
        [PrefetchJob("new1", lambda stale: None), PrefetchJob("new2", lambda stale: None)], limit=2
    )
    assert prefetcher.wait_idle(10)
    assert outcome == ["cancelled"]
    stats = prefetcher.stats()
    assert stats.dropped == 1 and stats.done == 2 and stats.failed == 0
    door.decode_lane.release(0.0)
    prefetcher.close()


def test_a_failing_job_is_counted_and_the_worker_goes_on() -> None:
    recorder, prefetcher = _Recorder(), Prefetcher(workers=1)

    def broken(stale) -> None:
        raise RuntimeError("bug")

    prefetcher.schedule([PrefetchJob("broken", broken), recorder.job("after")], limit=4)
    wait_for(lambda: recorder.ran == ["after"], 10, "the job after the failure")
    assert prefetcher.wait_idle(10)
    assert prefetcher.stats().failed == 1
    prefetcher.close()


def test_a_stale_job_does_not_start_even_on_an_idle_model() -> None:
    door = ModelDoor()
    assert door.idle()
    door.wait_until_idle(lambda: False)  # idle and wanted: returns at once
    with pytest.raises(BackgroundCancelledError, match="stale"):
        door.wait_until_idle(lambda: True)

"""Background embedding prefetch: bounded, newest first, stale work dropped.

When an annotator opens a task, its image (and optionally the next tasks' images) will soon
be clicked; computing the embedding now makes the first click a cache hit. `Prefetcher` runs
such jobs on a small pool of daemon threads:

* bounded: at most `limit` jobs wait (the caller passes how many embeddings the cache can
  hold next to those in use); past it, the oldest waiting jobs are dropped (stale: their
  annotator has moved on);
* newest first: the job scheduled last runs first; `schedule` takes a group most urgent first
  (the opened task, then the next ones) and keeps that order within it;
* deduplicated: a job whose key waits or runs is not queued again;
* after interactive work: each job's `run` gets a `stale()` predicate and should wait for an
  idle model (`ModelDoor.wait_until_idle`) before it starts the encoder. A job is stale once
  it has been pushed out of the newest `limit` scheduled jobs.

A job that fails is logged and counted; nothing is raised to the request that scheduled it.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core_model.errors import UnSAMv2Error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefetchJob:
    """One background embedding.

    Attributes:
        key: Identifies the work (e.g. scope and image URL); equal keys are done once.
        run: Does the work; its argument returns True once the job is stale.
    """

    key: str
    run: Callable[[Callable[[], bool]], None]


@dataclass(frozen=True)
class PrefetchStats:
    """Counters since start: jobs scheduled, done, dropped (stale or duplicate), failed."""

    scheduled: int
    done: int
    dropped: int
    failed: int
    waiting: int
    running: int


class Prefetcher:
    """A small pool that runs `PrefetchJob`s newest first (see the module docstring).

    Args:
        workers: Threads (>= 1), started on the first `schedule`.
    """

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._waiting: collections.deque[PrefetchJob] = collections.deque()
        self._running: set[str] = set()
        self._sequence: dict[str, int] = {}  # key -> order scheduled (for staleness)
        self._scheduled = 0
        self._limit = 1
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._done = self._dropped = self._failed = 0

    def schedule(self, jobs: Sequence[PrefetchJob], *, limit: int) -> None:
        """Queue `jobs` (most urgent first) ahead of older waiting jobs.

        Args:
            jobs: The group to prefetch, most urgent first.
            limit: Most jobs that may wait (>= 1); older ones are dropped.
        """
        with self._cond:
            if self._closed:
                return
            self._limit = max(1, limit)
            for job in reversed(jobs):  # pushed last = taken first
                self._scheduled += 1
                self._sequence[job.key] = self._scheduled
                if job.key in self._running:
                    continue
                if any(w.key == job.key for w in self._waiting):
                    self._waiting = collections.deque(w for w in self._waiting if w.key != job.key)
                self._waiting.append(job)
            while len(self._waiting) > self._limit:
                dropped = self._waiting.popleft()
                self._dropped += 1
                logger.debug("prefetch of %s dropped: newer tasks were opened", dropped.key)
            self._forget_locked()
            self._start_locked()
            self._cond.notify_all()

    def _forget_locked(self) -> None:
        live = {job.key for job in self._waiting} | self._running
        self._sequence = {k: v for k, v in self._sequence.items() if k in live}

    def _start_locked(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"prefetch-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def is_stale(self, key: str) -> bool:
        """True once `key` is no longer among the newest `limit` scheduled jobs."""
        with self._cond:
            order = self._sequence.get(key)
            return self._closed or order is None or self._scheduled - order >= self._limit

    def stats(self) -> PrefetchStats:
        """A snapshot of the counters."""
        with self._cond:
            return PrefetchStats(
                scheduled=self._scheduled,
                done=self._done,
                dropped=self._dropped,
                failed=self._failed,
                waiting=len(self._waiting),
                running=len(self._running),
            )

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job waits or runs; return False on timeout (tests, benchmarks)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._waiting and not self._running, timeout=timeout_s
            )

    def close(self) -> None:
        """Drop waiting jobs and stop the workers after their current job."""
        with self._cond:
            self._closed = True
            self._dropped += len(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def _next(self) -> PrefetchJob | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            job = self._waiting.pop()
            self._running.add(job.key)
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            outcome = "done"
            try:
                job.run(functools.partial(self.is_stale, job.key))
            except UnSAMv2Error as exc:  # cancelled, busy, fetch refused, bad image: expected
                outcome = "dropped" if self.is_stale(job.key) else "failed"
                logger.info("prefetch of %s not done: %s", job.key, exc)
            except Exception:  # a bug must not kill the worker
                outcome = "failed"
                logger.exception("prefetch of %s failed", job.key)
            with self._cond:
                self._running.discard(job.key)
                self._done += outcome == "done"
                self._dropped += outcome == "dropped"
                self._failed += outcome == "failed"
                self._forget_locked()
                self._cond.notify_all()

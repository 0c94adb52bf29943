"""Micro-batching of interactive clicks: one place that decodes the clicks of many annotators.

Request threads hand a checked click (`core_model.batch_decode.ClickJob`) to `ClickBatcher`
and block on its future. One worker thread takes the oldest waiting click, waits at most
`window_s` for more (less when a full batch is already there), takes the clicks of the same
model that fit a batch, holds the door's decode lane once and decodes them:

* on a GPU, up to `max_batch` clicks per `predict_clicks` call (other images and prompts in
  one call where the decoder allows);
* on a CPU, where a stacked decoder call costs more per click than one click alone (see
  `core_model.batch_decode`), up to `cpu_decoders` clicks side by side, each on its own
  decoder thread with one intra-op thread (`core_model.cpu_threads`) running the recorded
  decoder pass, which does not wait for the GIL between ops (`core_model.traced_decode`). One
  click's decoder pass is a chain of small matrix products and element-wise passes that gains
  little from a second core, so one click per core does more clicks per second; a lone click
  still runs on all cores, so an idle server answers as fast as before.

The model is thus called from this one place, with at most as many threads as the cores (or
one GPU stream), so concurrent requests never oversubscribe the cores or the GPU.

The queue is bounded: with `max_queued` clicks waiting, one more raises `ModelBusyError`
(HTTP 503 with ``Retry-After`` estimated from the recent time per decoded click) at once, so
latency never grows without bound. `max_batch` 0 picks by device: 8 rows on a GPU, 1 on a CPU.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import torch

from core_model.batch_decode import ClickJob, predict_clicks
from core_model.cpu_threads import use_one_intra_op_thread
from core_model.serving import MaskPredictor
from core_model.traced_decode import trace_passes_here
from core_model.types import MaskPrediction
from ml_backend.model_door import ModelBusyError, ModelDoor
from ml_backend.settings import Settings

logger = logging.getLogger(__name__)

GPU_MAX_BATCH = 8
_SMOOTHING = 0.2


@dataclass(eq=False)  # compared by identity (removal from the queue)
class _Waiting:
    predictor: MaskPredictor
    job: ClickJob
    future: Future[MaskPrediction] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


def auto_max_batch(predictor: MaskPredictor) -> int:
    """Rows per decoder call for `max_batch` 0: 8 on an accelerator, 1 on a CPU."""
    return 1 if predictor.device.type == "cpu" else GPU_MAX_BATCH


class ClickBatcher:
    """A bounded queue of clicks decoded in batches (a `ClickQueue` of the door).

    Args:
        door: The process's door; each batch holds its decode lane.
        window_s: Longest wait for more clicks after the oldest one arrived (>= 0).
        max_batch: Most clicks per decoder call (>= 0; 0: by device, see `auto_max_batch`).
        max_queued: Clicks that may wait (>= 1) before `submit` raises `ModelBusyError`.
        cpu_decoders: Clicks decoded side by side on a CPU, one intra-op thread each (>= 0;
            0: torch's intra-op thread count, i.e. one per core; 1: one decoder call at a time
            on all threads).
    """

    def __init__(
        self,
        door: ModelDoor,
        *,
        window_s: float,
        max_batch: int = 0,
        max_queued: int = 32,
        cpu_decoders: int = 0,
    ) -> None:
        if window_s < 0 or max_batch < 0 or max_queued < 1 or cpu_decoders < 0:
            raise ValueError(
                f"need window_s >= 0, max_batch >= 0, max_queued >= 1 and cpu_decoders >= 0, "
                f"got {window_s}, {max_batch}, {max_queued} and {cpu_decoders}"
            )
        self.door, self.window_s = door, window_s
        self.max_batch, self.max_queued = max_batch, max_queued
        self.cpu_decoders = cpu_decoders or torch.get_num_threads()
        self._pool: ThreadPoolExecutor | None = None
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._mean_click_s = 0.0
        self.batches = 0
        self.decoded = 0

    def pending(self) -> int:
        """Clicks waiting for a batch."""
        with self._cond:
            return len(self._waiting)

    def submit(self, predictor: MaskPredictor, job: ClickJob) -> MaskPrediction:
        """Decode `job` on `predictor` with the clicks around it; block until done.

        Raises:
            ModelBusyError: `max_queued` clicks already wait.
        """
        waiting = _Waiting(predictor, job)
        with self._cond:
            if len(self._waiting) >= self.max_queued:
                raise ModelBusyError(
                    f"the model is busy ({len(self._waiting)} clicks waiting); retry shortly",
                    self._retry_after_locked(predictor),
                )
            if self._thread is None or not self._thread.is_alive():  # first click, or restart
                self._thread = threading.Thread(target=self._run, name="click-batcher", daemon=True)
                self._thread.start()
            self._waiting.append(waiting)
            self._cond.notify_all()
        return waiting.future.result()

    def close(self) -> None:
        """Stop the worker after the batch it runs (waiting clicks fail)."""
        with self._cond:
            self._closed = True
            left, self._waiting = list(self._waiting), collections.deque()
            self._cond.notify_all()
        for waiting in left:
            waiting.future.set_exception(ModelBusyError("the server is stopping", 1))
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _side_by_side(self, predictor: MaskPredictor) -> int:
        """Decoder threads of one batch: `cpu_decoders` on a CPU, 1 elsewhere."""
        return self.cpu_decoders if predictor.device.type == "cpu" else 1

    def _per_call(self, predictor: MaskPredictor) -> int:
        return self.max_batch or auto_max_batch(predictor)

    def _rows(self, predictor: MaskPredictor) -> int:
        """Clicks per batch: rows per decoder call times the decoder threads."""
        return self._per_call(predictor) * self._side_by_side(predictor)

    def _retry_after_locked(self, predictor: MaskPredictor) -> int:
        del predictor  # the estimate is per decoded click, whatever the model
        return max(1, math.ceil(self._mean_click_s * (len(self._waiting) + 1)))

    def _take(self) -> list[_Waiting] | None:
        """Wait for a batch: the oldest click and those of its model within the window."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            head = self._waiting[0]
            rows = self._rows(head.predictor)
            deadline = head.arrived + self.window_s
            while len(self._waiting) < rows and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return self._take_locked(head.predictor, rows)

    def _take_locked(self, predictor: MaskPredictor, rows: int) -> list[_Waiting]:
        """Remove and return up to `rows` waiting clicks of `predictor`, oldest first."""
        batch = [w for w in self._waiting if w.predictor is predictor][:rows]
        for waiting in batch:
            self._waiting.remove(waiting)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self._decode(batch)

    def _decode(self, batch: list[_Waiting]) -> None:
        """Hold the decode lane for `batch` (and, side by side, the clicks that follow it)."""
        predictor = batch[0].predictor
        per_call = self._per_call(predictor)
        side_by_side = self._side_by_side(predictor) > 1 and len(batch) > per_call
        started = time.perf_counter()
        outcome: list[MaskPrediction] | BaseException = []
        try:
            with self.door.entered(self.door.decode_lane):
                if side_by_side:  # each click gets its answer as soon as it is decoded
                    decoded = self._drain(predictor, batch)
                else:  # one call on this thread, with every intra-op thread
                    outcome = self._outcome(predictor, batch)
                    decoded = len(batch)
        except BaseException as exc:  # the decoder threads failed: no click left waiting
            self._pool = None  # the next drain starts new decoder threads
            self._deliver([w for w in batch if not w.future.done()], exc)
            if not isinstance(exc, Exception):
                raise
            logger.warning("a click batch failed: %s", exc)
            return
        held = time.perf_counter() - started
        with self._cond:
            per_click = held / max(1, decoded)
            self._mean_click_s = (
                per_click
                if self._mean_click_s == 0
                else (1 - _SMOOTHING) * self._mean_click_s + _SMOOTHING * per_click
            )
            self.batches += 1
            self.decoded += decoded
        if not side_by_side:  # answered once the lane is free and the batch counted
            self._deliver(batch, outcome)

    def _outcome(
        self, predictor: MaskPredictor, batch: list[_Waiting]
    ) -> list[MaskPrediction] | BaseException:
        """Decode `batch` with `predict_clicks`: its results, or the exception it raised."""
        try:
            return predict_clicks(
                predictor, [w.job for w in batch], max_batch=self._per_call(predictor)
            )
        except BaseException as exc:  # every waiting request gets the failure, not a hang
            return exc

    @staticmethod
    def _deliver(batch: list[_Waiting], outcome: list[MaskPrediction] | BaseException) -> None:
        """Hand every click of `batch` its result; re-raise a failure that is not an Exception."""
        if isinstance(outcome, BaseException):
            for waiting in batch:
                waiting.future.set_exception(outcome)
            if not isinstance(outcome, Exception):
                raise outcome
            return
        for waiting, result in zip(batch, outcome, strict=True):
            waiting.future.set_result(result)

    def _drain(self, predictor: MaskPredictor, batch: list[_Waiting]) -> int:
        """Decode `batch`, then the clicks of `predictor` that keep arriving, side by side.

        Each decoder thread takes the next waiting click (up to a call's worth) as soon as it
        is free, with no barrier between clicks, until no click of this model waits or another
        call waits for the decode lane (it gets the lane next). Returns the clicks decoded.
        """
        taken = collections.deque(batch)
        per_call = self._per_call(predictor)

        def next_call() -> list[_Waiting]:
            others = self.door.queued_for(self.door.decode_lane) > 0
            with self._cond:
                if taken:
                    return [taken.popleft() for _ in range(min(per_call, len(taken)))]
                if others or self._closed:
                    return []
                return self._take_locked(predictor, per_call)

        def decode_until_done() -> int:
            count = 0
            while call := next_call():
                self._deliver(call, self._outcome(predictor, call))
                count += len(call)
            return count

        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.cpu_decoders,
                thread_name_prefix="click-decoder",
                initializer=_decoder_thread,
            )
        threads = [self._pool.submit(decode_until_done) for _ in range(self.cpu_decoders)]
        wait(threads)  # all of them stop before the lane is given back, even after a failure
        return sum(thread.result() for thread in threads)


def _decoder_thread() -> None:
    """Set up a CPU decoder thread: one intra-op thread, recorded decoder passes (no GIL)."""
    use_one_intra_op_thread()
    trace_passes_here()


def attach_click_batcher(
    door: ModelDoor,
    *,
    window_ms: float,
    max_batch: int = 0,
    max_queued: int | None = None,
    cpu_decoders: int = 0,
) -> ClickBatcher:
    """Create a `ClickBatcher` for `door` and route the door's single clicks through it.

    Args:
        door: The process's door.
        window_ms: Batch window in milliseconds.
        max_batch: Most clicks per decoder call (0: by device).
        max_queued: Clicks that may wait (default: the door's `max_queued`, at least 1).
        cpu_decoders: Clicks decoded side by side on a CPU (0: one per intra-op thread).
    """
    batcher = ClickBatcher(
        door,
        window_s=window_ms / 1000,
        max_batch=max_batch,
        max_queued=max(1, door.max_queued if max_queued is None else max_queued),
        cpu_decoders=cpu_decoders,
    )
    door.clicks = batcher
    return batcher


def serving_door(settings: Settings) -> ModelDoor:
    """The door of a serving process as the settings ask (lanes, bound, click batches)."""
    door = ModelDoor(settings.max_concurrent_encodes, settings.max_queued_requests)
    if settings.batch_clicks:
        attach_click_batcher(
            door,
            window_ms=settings.batch_window_ms,
            max_batch=settings.batch_max_size,
            cpu_decoders=settings.cpu_click_decoders,
        )
    return door

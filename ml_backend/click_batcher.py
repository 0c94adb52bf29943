"""Micro-batching of interactive clicks: one decoder call for the clicks of many annotators.

Request threads hand a checked click (`core_model.batch_decode.ClickJob`) to `ClickBatcher`
and block on its future. One worker thread takes the oldest waiting click, waits at most
`window_s` for more (less when `max_batch` are already there), takes up to `max_batch`
clicks of the same model, holds the door's decode lane once and decodes them with
`predict_clicks` (other images and prompts in one call where the decoder allows). The model
is thus called from one thread, so concurrent requests never oversubscribe the cores or the
GPU.

The queue is bounded: with `max_queued` clicks waiting, one more raises `ModelBusyError`
(HTTP 503 with ``Retry-After`` estimated from recent batch durations) at once, so latency
never grows without bound. `max_batch` 0 picks by device: 8 rows on a GPU, 1 on a CPU
(where a batched decoder call costs more per row; see `core_model.batch_decode`).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from core_model.batch_decode import ClickJob, predict_clicks
from core_model.serving import MaskPredictor
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
    """A bounded queue of clicks decoded in batches by one worker (a `ClickQueue` of the door).

    Args:
        door: The process's door; each batch holds its decode lane.
        window_s: Longest wait for more clicks after the oldest one arrived (>= 0).
        max_batch: Most clicks per decoder call (>= 0; 0: by device, see `auto_max_batch`).
        max_queued: Clicks that may wait (>= 1) before `submit` raises `ModelBusyError`.
    """

    def __init__(
        self, door: ModelDoor, *, window_s: float, max_batch: int = 0, max_queued: int = 32
    ) -> None:
        if window_s < 0 or max_batch < 0 or max_queued < 1:
            raise ValueError(
                f"need window_s >= 0, max_batch >= 0 and max_queued >= 1, got {window_s}, "
                f"{max_batch} and {max_queued}"
            )
        self.door, self.window_s = door, window_s
        self.max_batch, self.max_queued = max_batch, max_queued
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._mean_batch_s = 0.0
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

    def _rows(self, predictor: MaskPredictor) -> int:
        return self.max_batch or auto_max_batch(predictor)

    def _retry_after_locked(self, predictor: MaskPredictor) -> int:
        batches_ahead = math.ceil((len(self._waiting) + 1) / self._rows(predictor))
        return max(1, math.ceil(self._mean_batch_s * batches_ahead))

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
            batch = [w for w in self._waiting if w.predictor is head.predictor][:rows]
            for waiting in batch:
                self._waiting.remove(waiting)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self._decode(batch)

    def _decode(self, batch: list[_Waiting]) -> None:
        predictor = batch[0].predictor
        started = time.perf_counter()
        try:
            with self.door.entered(self.door.decode_lane):
                results = predict_clicks(
                    predictor, [w.job for w in batch], max_batch=self._rows(predictor)
                )
        except BaseException as exc:  # every waiting request gets the failure, not a hang
            for waiting in batch:
                waiting.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        held = time.perf_counter() - started
        with self._cond:
            self._mean_batch_s = (
                held
                if self._mean_batch_s == 0
                else (1 - _SMOOTHING) * self._mean_batch_s + _SMOOTHING * held
            )
            self.batches += 1
            self.decoded += len(batch)
        for waiting, result in zip(batch, results, strict=True):
            waiting.future.set_result(result)


def attach_click_batcher(
    door: ModelDoor, *, window_ms: float, max_batch: int = 0, max_queued: int | None = None
) -> ClickBatcher:
    """Create a `ClickBatcher` for `door` and route the door's single clicks through it.

    Args:
        door: The process's door.
        window_ms: Batch window in milliseconds.
        max_batch: Most clicks per decoder call (0: by device).
        max_queued: Clicks that may wait (default: the door's `max_queued`, at least 1).
    """
    batcher = ClickBatcher(
        door,
        window_s=window_ms / 1000,
        max_batch=max_batch,
        max_queued=max(1, door.max_queued if max_queued is None else max_queued),
    )
    door.clicks = batcher
    return batcher


def serving_door(settings: Settings) -> ModelDoor:
    """The door of a serving process as the settings ask (lanes, bound, click batches)."""
    door = ModelDoor(settings.max_concurrent_encodes, settings.max_queued_requests)
    if settings.batch_clicks:
        attach_click_batcher(
            door, window_ms=settings.batch_window_ms, max_batch=settings.batch_max_size
        )
    return door

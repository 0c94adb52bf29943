"""The one door to the model in a serving process: bounded, first-come first-served model calls.

Request threads (Label Studio, CVAT) reach the model only through a `GatedPredictor`, which a
`ModelRuntime` hands out around its current predictor. It sends every call through one of the
process's two `ModelDoor` lanes:

* the encode lane: image encoder runs (cache misses), at most `max_concurrent_encodes` at once;
* the decode lane: mask decoding (clicks, whole-image batches), one call at a time.

Each lane serves waiters in arrival order: a freed slot is handed to the oldest waiter, so no
late thread can barge in (`threading.Semaphore` makes no such promise). The lanes are separate
so that a click on an already-embedded image never waits behind another image's encoder run.
Cache hits take no lane at all, and concurrent misses of one image run the encoder once (the
cache's single flight), so only the first of them queues.

At most `max_queued` calls wait in both lanes together; one more raises `ModelBusyError`
(HTTP 503 with a ``Retry-After`` estimated from recent call durations). Memory held by waiting
requests (their decoded images) is therefore bounded too.

Two optional helpers hang on the door (see `ml_backend.click_batcher`, `ml_backend.prefetch`):

* `clicks`: a queue that collects single clicks (`predict` without `mask_input` or `refine`)
  for a few milliseconds and decodes them together, holding the decode lane once per batch;
* background work (embedding prefetch) starts only when the door is `idle`: no call holds or
  waits for a lane and no click waits in `clicks` (`wait_until_idle`).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from core_model.batch_decode import ClickJob, check_job
from core_model.cache import EmbeddingCache
from core_model.errors import UnSAMv2Error
from core_model.low_precision import DecodePrecision
from core_model.modeling.unsamv2 import DecoderOutput, ModelInfo
from core_model.preprocess import check_image, image_digest
from core_model.serving import MaskPredictor
from core_model.types import ImageEmbedding, MaskPrediction, Prompts

T = TypeVar("T")

DEFAULT_MAX_CONCURRENT_ENCODES = 1
DEFAULT_MAX_QUEUED = 32
_SMOOTHING = 0.2  # weight of the newest duration in a lane's running mean
_BACKGROUND_POLL_S = 0.02  # how often a background run looks for an idle model


class ModelBusyError(UnSAMv2Error):
    """Too many requests are waiting for the model; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackgroundCancelledError(UnSAMv2Error):
    """A background encoder run gave up its place in line (it became stale)."""


class ClickQueue(Protocol):
    """Collects single clicks and decodes them in batches (see `ml_backend.click_batcher`)."""

    def submit(self, predictor: MaskPredictor, job: ClickJob) -> MaskPrediction:
        """Decode a checked job on `predictor`; block until its masks are ready."""
        ...

    def pending(self) -> int:
        """Clicks waiting for a batch."""
        ...


class _Lane:
    """Up to `slots` holders at a time, waiters served first come, first served."""

    def __init__(self, name: str, slots: int, guard: threading.Lock) -> None:
        self.name = name
        self.slots = slots
        self.guard = guard  # the door's lock, shared by both lanes (one queue bound)
        self.active = 0
        self.waiting: collections.deque[threading.Event] = collections.deque()
        self.mean_s = 0.0

    def release(self, held_s: float) -> None:
        with self.guard:
            self.mean_s = (
                held_s
                if self.mean_s == 0
                else ((1 - _SMOOTHING) * self.mean_s + _SMOOTHING * held_s)
            )
            if self.waiting:
                self.waiting.popleft().set()  # hand the slot over: `active` stays the same
            else:
                self.active -= 1


class ModelDoor:
    """The process's encode and decode lanes and their shared wait bound.

    Args:
        max_concurrent_encodes: Encoder runs at once (>= 1; 1 per device is best: a second run
            only shares the same cores or GPU).
        max_queued: Calls that may wait in both lanes together (>= 0) before `ModelBusyError`.
    """

    def __init__(
        self,
        max_concurrent_encodes: int = DEFAULT_MAX_CONCURRENT_ENCODES,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        if max_concurrent_encodes < 1 or max_queued < 0:
            raise ValueError(
                f"need max_concurrent_encodes >= 1 and max_queued >= 0, got "
                f"{max_concurrent_encodes} and {max_queued}"
            )
        self.max_queued = max_queued
        self._guard = threading.Lock()
        self.encode_lane = _Lane("encode", max_concurrent_encodes, self._guard)
        self.decode_lane = _Lane("decode", 1, self._guard)
        self.clicks: ClickQueue | None = None

    def queued(self) -> int:
        """Calls waiting in both lanes now."""
        with self._guard:
            return len(self.encode_lane.waiting) + len(self.decode_lane.waiting)

    def queued_for(self, lane: _Lane) -> int:
        """Calls waiting for `lane` now."""
        with self._guard:
            return len(lane.waiting)

    def status(self) -> dict[str, int]:
        """JSON-ready counters: running and waiting calls per lane, and the bound."""
        clicks = self.clicks.pending() if self.clicks is not None else 0
        with self._guard:
            return {
                "encoding": self.encode_lane.active,
                "encode_waiting": len(self.encode_lane.waiting),
                "decoding": self.decode_lane.active,
                "decode_waiting": len(self.decode_lane.waiting),
                "clicks_waiting": clicks,
                "max_queued": self.max_queued,
            }

    def idle(self) -> bool:
        """True when no call holds or waits for a lane and no click waits for a batch."""
        if self.clicks is not None and self.clicks.pending():
            return False
        with self._guard:
            lanes = (self.encode_lane, self.decode_lane)
            return not any(lane.active or lane.waiting for lane in lanes)

    def wait_until_idle(self, cancelled: Callable[[], bool]) -> None:
        """Return once the model is idle (see `idle`), for background work to start.

        Raises:
            BackgroundCancelledError: `cancelled()` is true (checked first, then while waiting).
        """
        while not cancelled():
            if self.idle():
                return
            time.sleep(_BACKGROUND_POLL_S)
        raise BackgroundCancelledError("background run cancelled: it became stale")

    def acquire(self, lane: _Lane) -> None:
        """Take a slot of `lane`, waiting in line; raise `ModelBusyError` if the line is full."""
        with self._guard:
            if lane.active < lane.slots and not lane.waiting:
                lane.active += 1
                return
            waiting = len(self.encode_lane.waiting) + len(self.decode_lane.waiting)
            if waiting >= self.max_queued:
                raise ModelBusyError(
                    f"the model is busy ({waiting} requests waiting); retry shortly",
                    self._retry_after_locked(lane),
                )
            turn = threading.Event()
            lane.waiting.append(turn)
        turn.wait()

    def _retry_after_locked(self, lane: _Lane) -> int:
        ahead = len(lane.waiting) + lane.active
        return max(1, math.ceil(lane.mean_s * ahead / lane.slots))

    @contextmanager
    def entered(self, lane: _Lane) -> Iterator[None]:
        """Hold a slot of `lane` for the body of a `with` block."""
        self.acquire(lane)
        started = time.perf_counter()
        try:
            yield
        finally:
            lane.release(time.perf_counter() - started)

    def gate(self, predictor: MaskPredictor) -> GatedPredictor:
        """Return `predictor` behind this door."""
        return GatedPredictor(predictor, self)


class GatedPredictor:
    """A `MaskPredictor` whose encoder runs and decoder calls pass through a `ModelDoor`.

    Args:
        predictor: The predictor to guard (its cache and single flight are kept).
        door: The process's door.
    """

    def __init__(self, predictor: MaskPredictor, door: ModelDoor) -> None:
        self._inner = predictor
        self.door = door

    @property
    def inner(self) -> MaskPredictor:
        """The guarded predictor, for callers that take a lane of `door` themselves."""
        return self._inner

    @property
    def info(self) -> ModelInfo:
        """Where the model comes from."""
        return self._inner.info

    @property
    def model_version(self) -> str:
        """Version string of the model's weights."""
        return self._inner.model_version

    @property
    def device(self) -> torch.device:
        """Device of the model."""
        return self._inner.device

    @property
    def image_size(self) -> int:
        """Side of the model's square input frame in pixels."""
        return self._inner.image_size

    @property
    def mask_threshold(self) -> float:
        """Logit threshold of binary masks."""
        return self._inner.mask_threshold

    @property
    def max_image_pixels(self) -> int:
        """Largest accepted image (H * W)."""
        return self._inner.max_image_pixels

    @property
    def cache(self) -> EmbeddingCache:
        """The embedding cache."""
        return self._inner.cache

    def embed(self, image: npt.NDArray[np.uint8], *, key: str | None = None) -> ImageEmbedding:
        """Return the embedding of an (H, W, 3) uint8 RGB image (encoder runs wait in line)."""
        check_image(image, max_pixels=self.max_image_pixels)
        return self.embed_keyed(key if key is not None else image_digest(image), lambda: image)

    def embed_keyed(self, key: str, load: Callable[[], npt.NDArray[np.uint8]]) -> ImageEmbedding:
        """Return the embedding of the image `key`; only a cache miss waits for the encoder.

        The pixels are loaded before queueing; the encode slot is taken right after (the
        encoder runs next, see `MaskPredictor.embed_keyed`) and given back when this returns.
        """
        lane = self.door.encode_lane
        started: list[float] = []

        def load_then_wait() -> npt.NDArray[np.uint8]:
            image = load()
            self.door.acquire(lane)
            started.append(time.perf_counter())
            return image

        try:
            return self._inner.embed_keyed(key, load_then_wait)
        finally:
            if started:
                lane.release(time.perf_counter() - started[0])

    def _decoding(self, call: Callable[[], T]) -> T:
        with self.door.entered(self.door.decode_lane):
            return call()

    def decode(
        self,
        embedding: ImageEmbedding,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        granularities: Sequence[float],
        *,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = False,
        precision: DecodePrecision = "float32",
    ) -> DecoderOutput:
        """Decode B prompt sets in one call (see `GranularityPredictor.decode`)."""
        return self._decoding(
            lambda: self._inner.decode(
                embedding,
                point_coords,
                point_labels,
                granularities,
                mask_input=mask_input,
                multimask_output=multimask_output,
                precision=precision,
            )
        )

    def predict(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        *,
        granularity: float,
        multimask_output: bool = False,
        mask_input: npt.ArrayLike | None = None,
        refine: bool = False,
    ) -> MaskPrediction:
        """Predict one mask (see `GranularityPredictor.predict`).

        A plain click (no `mask_input`, no `refine`) goes through the door's click queue when
        it has one, to be decoded with the clicks that arrive at about the same time.
        """
        if self.door.clicks is not None and mask_input is None and not refine:
            job = check_job(
                self._inner, ClickJob(embedding, prompts, granularity, multimask_output)
            )
            return self.door.clicks.submit(self._inner, job)
        return self._decoding(
            lambda: self._inner.predict(
                embedding,
                prompts,
                granularity=granularity,
                multimask_output=multimask_output,
                mask_input=mask_input,
                refine=refine,
            )
        )

    def predict_many(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        granularities: Sequence[float],
        *,
        multimask_output: bool = False,
        mask_input: npt.ArrayLike | None = None,
        refine: bool = False,
    ) -> MaskPrediction:
        """Predict masks at several granularities (see `GranularityPredictor.predict_many`)."""
        return self._decoding(
            lambda: self._inner.predict_many(
                embedding,
                prompts,
                granularities,
                multimask_output=multimask_output,
                mask_input=mask_input,
                refine=refine,
            )
        )

    def predict_sam2(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        *,
        multimask_output: bool = True,
        mask_input: npt.ArrayLike | None = None,
    ) -> MaskPrediction:
        """Stock SAM-2 prediction (see `GranularityPredictor.predict_sam2`)."""
        return self._decoding(
            lambda: self._inner.predict_sam2(
                embedding, prompts, multimask_output=multimask_output, mask_input=mask_input
            )
        )

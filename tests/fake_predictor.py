"""A stand-in `MaskPredictor` whose encoder and decoder runs a test can hold and observe.

It keeps the real `LRUEmbeddingCache` (so cache hits and single flight behave as in the real
predictor) but replaces the network by tiny tensors, so tests of the serving machinery need no
model. Used where the point is the order and overlap of model calls, which a real model would
only make slow, not different.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from core_model.cache import LRUEmbeddingCache
from core_model.modeling.unsamv2 import DecoderOutput, ModelInfo
from core_model.types import ImageEmbedding, MaskPrediction, Prompts


class FakePredictor:
    """Records encoder and decoder runs; `hold`/`hold_decode` make runs on a key wait."""

    image_size = 16
    mask_threshold = 0.0
    max_image_pixels = 1_000_000
    device = torch.device("cpu")

    def __init__(self, version: str = "fake-1") -> None:
        self.info = ModelInfo("fake", version, "random", None, "granularity")
        self.cache = LRUEmbeddingCache(1 << 20)
        self.encoded: list[str] = []
        self.decoded: list[str] = []
        self.encoding_now = 0
        self.decoding_now = 0
        self.max_encoding = 0
        self.max_decoding = 0
        self.started: dict[str, threading.Event] = {}
        self._held: dict[str, threading.Event] = {}
        self.decode_started: dict[str, threading.Event] = {}
        self._decode_held: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return self.info.version

    def hold(self, key: str) -> threading.Event:
        """Make the encoder of `key` wait until the returned event is set."""
        self.started[key] = threading.Event()
        self._held[key] = threading.Event()
        return self._held[key]

    def embed(self, image: np.ndarray, *, key: str | None = None) -> ImageEmbedding:
        return self.embed_keyed(key or "pixels", lambda: image)

    def embed_keyed(self, key: str, load: Callable[[], np.ndarray]) -> ImageEmbedding:
        def compute() -> ImageEmbedding:
            image = load()
            with self._lock:
                self.encoded.append(key)
                self.encoding_now += 1
                self.max_encoding = max(self.max_encoding, self.encoding_now)
            if key in self._held:
                self.started[key].set()
                self._held[key].wait()
            with self._lock:
                self.encoding_now -= 1
            return ImageEmbedding(
                torch.zeros(1, 2, 1, 1),
                (torch.zeros(1, 1),),
                (int(image.shape[0]), int(image.shape[1])),
                self.model_version,
                key,
            )

        return self.cache.get_or_compute(key, compute)

    def hold_decode(self, key: str) -> threading.Event:
        """Make the next decoder runs on `key`'s embedding wait until the event is set."""
        self.decode_started[key] = threading.Event()
        self._decode_held[key] = threading.Event()
        return self._decode_held[key]

    def _decoding(self, name: str) -> None:
        with self._lock:
            self.decoded.append(name)
            self.decoding_now += 1
            self.max_decoding = max(self.max_decoding, self.decoding_now)
        if name in self._decode_held:
            self.decode_started[name].set()
            self._decode_held[name].wait()
        with self._lock:
            self.decoding_now -= 1

    def decode(
        self,
        embedding: ImageEmbedding,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        granularities: Sequence[float],
        *,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = False,
        precision: str = "float32",
    ) -> DecoderOutput:
        self._decoding(embedding.key)
        batch = len(granularities)
        return DecoderOutput(torch.zeros(batch, 1, 4, 4), torch.ones(batch, 1))

    def predict(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        *,
        granularity: float,
        multimask_output: bool = False,
        mask_input: object = None,
        refine: bool = False,
    ) -> MaskPrediction:
        return self.predict_many(embedding, prompts, [granularity])

    def predict_many(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        granularities: Sequence[float],
        *,
        multimask_output: bool = False,
        mask_input: object = None,
        refine: bool = False,
    ) -> MaskPrediction:
        self._decoding(embedding.key)
        height, width = embedding.original_hw
        count = len(granularities)
        return MaskPrediction(
            masks=np.zeros((count, height, width), dtype=bool),
            scores=np.ones(count, dtype=np.float32),
            low_res_logits=np.zeros((count, 4, 4), dtype=np.float32),
            granularities=tuple(granularities),
            mode="granularity",
            model_version=self.model_version,
        )

    def predict_sam2(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        *,
        multimask_output: bool = True,
        mask_input: object = None,
    ) -> MaskPrediction:
        return self.predict_many(embedding, prompts, [1.0])


def image(height: int = 8, width: int = 8) -> np.ndarray:
    """A small (H, W, 3) uint8 image."""
    return np.zeros((height, width, 3), dtype=np.uint8)

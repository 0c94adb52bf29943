"""A click's decoder pass run as a recorded graph, for decoder threads that work side by side.

`core_model.grid_decode` runs one click's decoder pass as about 300 small torch ops, each
dispatched from Python. Python holds the GIL between ops, so several such passes on several
threads take turns at it, and a request thread that encodes an answer holds it for
milliseconds while a decoder thread waits to start its next op. `TracedPasses` records the
pass once per decoder and input shapes with `torch.jit.trace` and runs the recording, which
executes the same ops in C++ without taking the GIL between them (outputs are bit-identical
to the Python pass; tests compare them).

Only threads that called `trace_passes_here` use it (the click queue's CPU decoder threads,
see `ml_backend.click_batcher`); everywhere else the Python pass runs as before.

`torch.jit.trace` is deprecated in recent PyTorch in favour of `torch.export` and
`torch.compile`; an exported program still runs op by op from Python, and `torch.compile` (or
AOTInductor) needs a C++ compiler at serving time. If recording fails (or a later PyTorch
drops it), the Python pass runs and a warning says so once.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

from core_model.grid_decode import SharedImage, decode_part
from core_model.low_precision import weights_state
from core_model.modeling.unsamv2 import DecoderOutput

logger = logging.getLogger(__name__)

#: Recorded passes kept: one per decoder weights and input shapes (prompt tokens per click,
#: embedding grid); a served model needs a handful.
TRACED_PASSES = 16

_thread = threading.local()


def trace_passes_here() -> None:
    """Let the calling thread run recorded decoder passes (see `traced_here`)."""
    _thread.traced = True


def traced_here() -> bool:
    """Whether the calling thread called `trace_passes_here`."""
    return bool(getattr(_thread, "traced", False))


class _Pass(nn.Module):
    """`decode_part` with the `SharedImage` terms as flat tensor arguments (what tracing needs)."""

    def __init__(self, decoder: nn.Module, hw: tuple[int, int], later: int) -> None:
        super().__init__()
        self.decoder, self.hw, self.later = decoder, hw, later

    def forward(self, sparse: torch.Tensor, *terms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keys, first_k, first_v, first_image_q, final_pe_k = terms[:5]
        later_flat = terms[5 : 5 + 2 * self.later]
        image = SharedImage(
            keys=keys,
            hw=self.hw,
            first_k=first_k,
            first_v=first_v,
            first_image_q=first_image_q,
            later_pe=tuple((later_flat[2 * i], later_flat[2 * i + 1]) for i in range(self.later)),
            final_pe_k=final_pe_k,
            high_res=tuple(terms[5 + 2 * self.later :]),
        )
        out = decode_part(self.decoder, image, sparse)
        return out.low_res_logits, out.iou


def _flat_terms(image: SharedImage) -> tuple[torch.Tensor, ...]:
    later = tuple(t for pair in image.later_pe for t in pair)
    head = (image.keys, image.first_k, image.first_v, image.first_image_q, image.final_pe_k)
    return (*head, *later, *image.high_res)


class TracedPasses:
    """Recorded decoder passes of one predictor, least recently used dropped first.

    Thread-safe: recording takes a lock (one recording at a time, about 0.1 s); recorded
    passes run concurrently.

    Args:
        capacity: Recorded passes kept (>= 1).
    """

    def __init__(self, capacity: int = TRACED_PASSES) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._passes: OrderedDict[Hashable, Any] = OrderedDict()
        self._failed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._passes)

    def run(self, decoder: nn.Module, image: SharedImage, sparse: torch.Tensor) -> DecoderOutput:
        """Run `decode_part(decoder, image, sparse)`, recorded when possible.

        Args:
            decoder: The mask decoder (eval mode, foldable; see `grid_decode.foldable`).
            image: The image-side terms.
            sparse: (B, N, C) prompt embeddings.

        Returns:
            As `grid_decode.decode_part`: logits (B, 1, S/4, S/4) and IoU (B, 1).
        """
        terms = _flat_terms(image)
        shapes = tuple((tuple(t.shape), t.dtype) for t in (sparse, *terms))
        key = (id(decoder), weights_state(decoder), image.hw, len(image.later_pe), shapes)
        recorded = self._recorded(key, decoder, image, sparse, terms)
        if recorded is None:
            return decode_part(decoder, image, sparse)
        logits, iou = recorded(sparse, *terms)
        return DecoderOutput(low_res_logits=logits, iou=iou)

    def _recorded(
        self,
        key: Hashable,
        decoder: nn.Module,
        image: SharedImage,
        sparse: torch.Tensor,
        terms: tuple[torch.Tensor, ...],
    ) -> Any:
        with self._lock:
            if self._failed:
                return None
            recorded = self._passes.get(key)
            if recorded is not None:
                self._passes.move_to_end(key)
                return recorded
            module = _Pass(decoder, image.hw, len(image.later_pe)).eval()
            trace: Any = getattr(torch.jit, "trace", None)  # None once PyTorch drops it
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the deprecation notice, on every call
                    recorded = trace(module, (sparse, *terms), check_trace=False)
            except Exception as exc:  # any failure: the Python pass, which always works
                self._failed = True
                logger.warning("decoder passes run in Python: recording failed (%s)", exc)
                return None
            self._passes[key] = recorded
            while len(self._passes) > self.capacity:
                self._passes.popitem(last=False)
            return recorded

"""A bfloat16 copy of the mask decoder for grid decoding on CPUs with native bfloat16 matmuls.

On CPUs with AMX or AVX512-BF16, oneDNN runs bfloat16 matmuls 6-9x faster than float32 ones
(measured on the development machine: 1.0-2.2 TFLOP/s against 170-250 GFLOP/s at the
decoder's shapes) and elementwise passes move half the bytes. The whole-image grid (hundreds
of one-click prompts on one image) is where this pays; interactive clicks stay float32.

The price is rounding: bfloat16 keeps 8 significant bits, so logits and predicted IoUs move by
about 1e-2 and pixels whose logit is within that of the threshold may flip. What this does to
whole-image masks is measured and bounded in `core_model.whole_image` (see
`WholeImageConfig.decode_precision`).
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from typing import Any, Literal

import torch
from torch import nn

#: Floating dtype of the grid decoder's arithmetic.
DecodePrecision = Literal["float32", "bfloat16"]
#: Accepted settings: a precision, or "auto" (see `resolve_precision`).
PRECISION_SETTINGS = ("auto", "float32", "bfloat16")


@functools.cache
def native_bfloat16_matmul() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AMX tiles or AVX512-BF16).

    Without them PyTorch emulates bfloat16 matmuls, which is slower than float32.
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None and bool(probe()):
            return True
    return False


def weights_state(module: nn.Module) -> tuple[int, ...]:
    """Identity and in-place version of every parameter (changes when weights are loaded)."""
    state: list[int] = []
    for p in module.parameters():
        state.extend((p.data_ptr(), p._version))
    return tuple(state)


class LowPrecisionDecoders:
    """bfloat16 copies of mask decoders, rebuilt when the original's weights change.

    Thread-safe; one copy per decoder module (a Hiera-S decoder is ~4 M parameters, 8 MiB in
    bfloat16).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._copies: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module]]
        self._copies = weakref.WeakKeyDictionary()

    def get(self, decoder: nn.Module) -> Any:
        """Return an eval-mode bfloat16 copy of `decoder` matching its current weights."""
        state = weights_state(decoder)
        with self._lock:
            held = self._copies.get(decoder)
            if held is not None and held[0] == state:
                return held[1]
            low = copy.deepcopy(decoder).to(torch.bfloat16).eval()
            low.requires_grad_(False)
            self._copies[decoder] = (state, low)
            return low


def resolve_precision(setting: str, device: torch.device) -> DecodePrecision:
    """Turn a precision setting ("auto", "float32" or "bfloat16") into the one to run.

    "auto" is bfloat16 on a CPU with native bfloat16 matmuls, float32 otherwise (CUDA already
    decodes under bfloat16 autocast).

    Raises:
        ValueError: an unknown setting.
    """
    if setting == "auto":
        native = device.type == "cpu" and native_bfloat16_matmul()
        return "bfloat16" if native else "float32"
    if setting == "float32":
        return "float32"
    if setting == "bfloat16":
        return "bfloat16"
    raise ValueError(f"decode precision must be one of {PRECISION_SETTINGS}, got {setting!r}")

"""malloc keeps freed tensor memory: observed through malloc's own statistics, not time."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest
import torch

from core_model import allocator
from ml_backend.settings import SettingsError, tune_memory_allocator

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only"
)

BLOCK = 40 * 1024 * 1024  # above glibc's default mmap threshold, below the kept one


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # noqa: RUF012  (ctypes layout of glibc's struct mallinfo2)
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mapped_bytes_while_holding_a_block() -> int:
    """How much more memory malloc has mapped with mmap while a BLOCK tensor is alive."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    before = libc.mallinfo2().hblkhd
    block = torch.empty(BLOCK // 4, dtype=torch.float32)
    block.fill_(1.0)
    during = libc.mallinfo2().hblkhd
    del block
    return int(during - before)


def test_large_blocks_come_from_the_heap_when_kept() -> None:
    try:
        assert allocator.release_freed_memory()
        mapped_by_default = _mapped_bytes_while_holding_a_block()
        assert allocator.keep_freed_memory()
        mapped_when_kept = _mapped_bytes_while_holding_a_block()
    finally:
        allocator.keep_freed_memory()  # what the command line runs with
    assert mapped_by_default >= BLOCK  # its own mmap, unmapped (and faulted in anew) each time
    assert mapped_when_kept == 0  # from the heap, reused after free


def test_the_setting_can_be_turned_off_and_is_checked() -> None:
    assert tune_memory_allocator({"UNSAMV2_KEEP_FREED_MEMORY": "false"}) is False
    assert tune_memory_allocator({}) is True
    with pytest.raises(SettingsError, match="UNSAMV2_KEEP_FREED_MEMORY"):
        tune_memory_allocator({"UNSAMV2_KEEP_FREED_MEMORY": "sometimes"})

"""malloc keeps freed tensor memory: observed through malloc's own statistics, not time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ml_backend.settings import SettingsError, tune_memory_allocator

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only"
)

# Run in a fresh interpreter: in a long test process the heap already holds large free chunks
# (left by earlier tests with memory kept), and malloc serves a block from them before it
# would consider mmap at all.
_PROBE = """
import ctypes, ctypes.util, torch
from core_model import allocator

BLOCK = 40 * 1024 * 1024  # above glibc's default mmap threshold, below the kept one

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_while_holding_a_block():
    before = libc.mallinfo2().hblkhd
    block = torch.empty(BLOCK // 4, dtype=torch.float32)
    block.fill_(1.0)
    during = libc.mallinfo2().hblkhd
    del block
    return during - before

assert allocator.release_freed_memory()
default = mapped_while_holding_a_block()
assert allocator.keep_freed_memory()
kept = mapped_while_holding_a_block()
print(default, kept, BLOCK)
"""


def test_large_blocks_come_from_the_heap_when_kept() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    mapped_by_default, mapped_when_kept, block = map(int, done.stdout.split())
    assert mapped_by_default >= block  # its own mmap, unmapped (and faulted in anew) each time
    assert mapped_when_kept == 0  # from the heap, reused after free


def test_the_setting_can_be_turned_off_and_is_checked() -> None:
    assert tune_memory_allocator({"UNSAMV2_KEEP_FREED_MEMORY": "false"}) is False
    assert tune_memory_allocator({}) is True
    with pytest.raises(SettingsError, match="UNSAMV2_KEEP_FREED_MEMORY"):
        tune_memory_allocator({"UNSAMV2_KEEP_FREED_MEMORY": "sometimes"})

"""malloc keeps freed tensor memory: measured in page faults, not time."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from core_model import allocator
from ml_backend.settings import SettingsError, tune_memory_allocator

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only"
)

BLOCK = 40 * 1024 * 1024  # above glibc's default mmap threshold, below the kept one


def _faults_filling_blocks(count: int = 8) -> int:
    """Minor page faults taken while allocating, filling and freeing `count` blocks."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(count):
        block = torch.empty(BLOCK // 4, dtype=torch.float32)
        block.fill_(1.0)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_kept_memory_is_reused_without_page_faults() -> None:
    pages = BLOCK // resource.getpagesize()
    try:
        assert allocator.release_freed_memory()
        mapped_each_time = _faults_filling_blocks()
        assert allocator.keep_freed_memory()
        _faults_filling_blocks(1)  # the first block comes in once
        kept = _faults_filling_blocks()
    finally:
        allocator.keep_freed_memory()  # what the command line runs with
    assert mapped_each_time > 6 * pages  # each of the 8 blocks paged in again with the defaults
    # kept: reused; other threads of the process may take the free block once in a while
    assert kept < 2 * pages


def test_the_setting_can_be_turned_off_and_is_checked() -> None:
    assert tune_memory_allocator({"UNSAMV2_KEEP_FREED_MEMORY": "false"}) is False
    assert tune_memory_allocator({}) is True
    with pytest.raises(SettingsError, match="UNSAMV2_KEEP_FREED_MEMORY"):
        tune_memory_allocator({"UNSAMV2_KEEP_FREED_MEMORY": "sometimes"})

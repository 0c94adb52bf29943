"""`use_one_intra_op_thread`: one thread runs on one core, every other thread keeps its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

from core_model.cpu_threads import use_one_intra_op_thread

T = TypeVar("T")


def _in_new_thread(body: Callable[[], T]) -> T:
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(body()))
    thread.start()
    thread.join(timeout=30)
    return out[0]


def test_only_the_calling_thread_drops_to_one_intra_op_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the case that matters: a default above one
    try:

        def one() -> tuple[int, float]:
            use_one_intra_op_thread()
            return torch.get_num_threads(), float(torch.ones(1 << 16).add(1).sum())

        assert _in_new_thread(one) == (1, 2.0 * (1 << 16))  # ops still run, on one thread
        assert torch.get_num_threads() == 2  # the caller's own setting
        assert _in_new_thread(torch.get_num_threads) == 2  # threads started later: the default
    finally:
        torch.set_num_threads(before)

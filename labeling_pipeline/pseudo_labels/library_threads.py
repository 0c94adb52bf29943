"""One thread per numerical library while the pipeline runs its own worker threads.

The pipeline refines parts and runs conquers on its own threads (`PseudoLabelConfig.
conquer_workers`, `RefineConfig.workers`). OpenCV and OpenBLAS each keep a pool of one thread
per core as well; nested inside the workers they oversubscribe the cores, and OpenBLAS's idle
threads spin. With both libraries on one thread during the call, 6 harder scenes at 1024x768
on 2 cores took 4.1 instead of 5.0 s of CPU per image, and 2.86 instead of 3.0 s of wall time
(four alternating runs each).

OpenCV's thread count and BLAS limits are process-wide, so concurrent and nested calls share
one limit: the first to enter sets it and the last to leave restores the previous settings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
from threadpoolctl import threadpool_limits


class _SharedLimit:
    """Reference-counted process-wide limit (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._opencv_threads = 0
        self._blas: threadpool_limits | None = None

    def acquire(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._opencv_threads = cv2.getNumThreads()
                cv2.setNumThreads(1)
                self._blas = threadpool_limits(limits=1, user_api="blas")
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                cv2.setNumThreads(self._opencv_threads)
                if self._blas is not None:
                    self._blas.restore_original_limits()
                    self._blas = None


_LIMIT = _SharedLimit()


@contextmanager
def one_thread_per_library(enabled: bool = True) -> Iterator[None]:
    """Run the block with OpenCV and BLAS on one thread each (no-op when not `enabled`)."""
    if not enabled:
        yield
        return
    _LIMIT.acquire()
    try:
        yield
    finally:
        _LIMIT.release()

"""An exclusive lock on a file (fcntl), released by the OS if the holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from core_model.errors import UnSAMv2Error


class LockTimeoutError(UnSAMv2Error):
    """The lock stayed held by another process for longer than the timeout."""


@contextlib.contextmanager
def exclusive_file_lock(path: Path, *, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the duration of the block.

    Used so that two executions of the same idempotent task (a redelivery racing a slow
    original) never write the same output at once; the second waits, then finds the work done.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeoutError(f"{path} stayed locked for {timeout_s} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

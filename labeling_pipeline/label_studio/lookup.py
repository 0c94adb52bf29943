"""Host name lookups that respect a guarded fetch's deadline.

`socket.getaddrinfo` has no timeout of its own: a resolver that never answers (or a name
server made slow on purpose) would hold a request past its fetch deadline. Lookups therefore
run on a small, bounded pool of daemon threads and the caller waits at most the time left. A
lookup that outlives its caller still holds its thread until the system resolver gives up, so
the pool is bounded: when every thread is busy with such a lookup, a new one is refused at once
instead of queueing without bound.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

# Lookups in flight at once across the process. Each is one blocked thread at worst; four
# covers concurrent fetches of a normal backend (one per request thread rarely overlaps).
MAX_LOOKUPS = 4

_slots = threading.BoundedSemaphore(MAX_LOOKUPS)

Resolve = Callable[[str, int], Sequence[str]]


class HostLookupError(OSError):
    """A host name could not be resolved in time, or too many lookups are in flight."""


def system_resolve(host: str, port: int) -> list[str]:
    """Return the addresses of host (IPv4 and IPv6 text) from the system resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def resolve_within(host: str, port: int, resolve: Resolve, timeout_s: float) -> list[str]:
    """Resolve host with `resolve`, waiting at most `timeout_s` seconds.

    Args:
        host: Host name or address text.
        port: TCP port, passed to the resolver.
        resolve: ``(host, port) -> addresses``; runs on a bounded daemon thread.
        timeout_s: Longest wait (the time left before the fetch's deadline).

    Returns:
        The addresses, in the resolver's order.

    Raises:
        HostLookupError: The lookup did not finish in time, or `MAX_LOOKUPS` are in flight.
        OSError, UnicodeError: The resolver's own failure.
    """
    if not _slots.acquire(blocking=False):
        raise HostLookupError(f"too many host lookups in flight ({MAX_LOOKUPS}); try again later")
    future: Future[list[str]] = Future()

    def work() -> None:
        try:
            future.set_result(list(resolve(host, port)))
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)
        finally:
            _slots.release()

    threading.Thread(target=work, name=f"lookup-{host}", daemon=True).start()
    try:
        return future.result(timeout=max(timeout_s, 0.0))
    except FutureTimeout:
        raise HostLookupError(f"looking up {host!r} took longer than {timeout_s:.3g} s") from None

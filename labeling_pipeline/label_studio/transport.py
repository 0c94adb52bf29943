"""Guarded HTTP downloads: host rules, connect-time address checks, redirects, one deadline.

Every remote image (and every file downloaded from Label Studio) goes through `guarded_get`:

- a URL is fetched only if its origin is the trusted one (Label Studio's, the only origin that
  gets the Authorization header) or its host, and port if the entry names one, is on the
  allow-list of the `FetchPolicy`;
- for any other origin the host is resolved once, every address is checked (loopback, private,
  link-local, shared, reserved, multicast and unspecified addresses are refused unless private
  networks are allowed) and the socket is connected to a checked address, so a name cannot
  resolve to another address between the check and the connection;
- redirects are followed by hand, each hop checked again by the same rules;
- the whole fetch (name lookups, connect, headers, body, every hop) has one deadline: when it
  passes, the sockets are shut down; bodies are capped at `max_bytes`;
- every failure becomes an `ImageFetchError` with a one-line message naming the status code or
  the kind of failure, never the remote body. Proxies from the environment are not used.

The rules themselves (entries, origins, ranges, `FetchPolicy`) live in `fetch_rules`.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import create_connection

from labeling_pipeline.label_studio.fetch_rules import (
    MAX_REDIRECTS,
    FetchPolicy,
    ImageFetchError,
    Origin,
    Resolver,
    describe,
    is_blocked_address,
    origin_of,
)
from labeling_pipeline.label_studio.lookup import HostLookupError, resolve_within, system_resolve


def _resolve(host: str, port: int, resolver: Resolver | None, timeout_s: float) -> list[str]:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: never asked to DNS
        return ["127.0.0.1", "::1"]
    return resolve_within(host, port, resolver or system_resolve, timeout_s)


class _Guard:
    """State of one guarded fetch: its rules, deadline and sockets."""

    def __init__(self, policy: FetchPolicy, trusted: Origin | None) -> None:
        self.policy = policy
        self.trusted = trusted
        self.deadline = time.monotonic() + policy.deadline_s
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(policy.deadline_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Guard:
        self._timer.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def remaining(self) -> float:
        """Seconds left before the deadline (raises once it has passed)."""
        left = self.deadline - time.monotonic()
        if left <= 0 or self.expired:
            raise ImageFetchError(
                f"the download took longer than {self.policy.deadline_s:g} s "
                "(UNSAMV2_FETCH_TIMEOUT_S)"
            )
        return left

    def check(self, origin: Origin) -> bool:
        """Refuse an origin that is neither trusted nor allowed; return whether it is trusted."""
        if origin == self.trusted:
            return True
        _, host, port = origin
        if not self.policy.allows_host(host, port):
            raise ImageFetchError(
                f"host {host}:{port} is not in the allowed image hosts "
                "(UNSAMV2_ALLOWED_IMAGE_HOSTS)"
            )
        return False

    def connect(self, scheme: str, host: str, port: int, timeout: Any, **options: Any) -> Any:
        """Open a socket to a checked address of host (the only way guarded pools connect)."""
        host = host.strip("[]").rstrip(".").lower()
        trusted = self.check((scheme, host, port))
        try:
            addresses = _resolve(host, port, self.policy.resolver, self.remaining())
        except HostLookupError as exc:
            self.remaining()  # the deadline message when the lookup used up the time left
            raise ImageFetchError(str(exc)) from None
        except (OSError, UnicodeError):
            raise ImageFetchError(f"cannot resolve host {host!r}") from None
        if not trusted and not self.policy.allow_private_networks:
            for address in addresses:
                if is_blocked_address(address):
                    raise ImageFetchError(
                        f"refusing to fetch from {host} ({address}): private or reserved address "
                        "(UNSAMV2_ALLOW_PRIVATE_NETWORKS)"
                    )
        error: OSError = OSError(f"no address for {host}")
        for address in addresses:
            limit = min(self.remaining(), timeout if isinstance(timeout, int | float) else 1e9)
            try:
                sock = create_connection((address, port), limit, **options)
            except OSError as exc:
                error = exc
                continue
            with self._lock:
                self._sockets.append(sock.dup())  # shut down from the timer thread at the deadline
            return sock
        raise error


_CURRENT: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar("guard", default=None)


def _guard() -> _Guard:
    guard = _CURRENT.get()
    if guard is None:
        raise ImageFetchError("guarded connections are only opened inside guarded_get")
    return guard


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guard().connect(  # type: ignore[no-any-return]
            "http",
            self._dns_host,
            self.port,
            self.timeout,
            source_address=self.source_address,
            socket_options=self.socket_options,
        )


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guard().connect(  # type: ignore[no-any-return]
            "https",
            self._dns_host,
            self.port,
            self.timeout,
            source_address=self.source_address,
            socket_options=self.socket_options,
        )


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (requests.exceptions.ConnectTimeout, "the connection timed out"),
    (requests.exceptions.ReadTimeout, "no data within the read timeout"),
    (requests.exceptions.SSLError, "TLS error"),
    (requests.exceptions.ChunkedEncodingError, "the body ended early or is malformed"),
    (requests.exceptions.ContentDecodingError, "the body cannot be decoded"),
    (requests.exceptions.InvalidURL, "invalid URL"),
    (requests.exceptions.MissingSchema, "invalid URL"),
    (requests.exceptions.InvalidSchema, "invalid URL"),
    (requests.exceptions.TooManyRedirects, "too many redirects"),
    (requests.exceptions.ConnectionError, "the connection failed"),
    (UnicodeError, "invalid URL"),
)
TRANSPORT_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
)
"""Everything a download may raise besides the project's own errors."""


def describe_failure(exc: BaseException) -> str:
    """A short, body-free description of a transport failure."""
    for kind, text in _FAILURES:
        if isinstance(exc, kind):
            return text
    return "the transfer failed"


def _read_body(answer: requests.Response, max_bytes: int, url: str) -> bytes:
    declared = answer.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageFetchError(f"{describe(url)} is larger than {max_bytes} bytes")
    chunks, size = [], 0
    for chunk in answer.iter_content(1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise ImageFetchError(f"{describe(url)} is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _follow(
    session: requests.Session,
    url: str,
    guard: _Guard,
    authorization: Callable[[], str] | None,
) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        trusted = guard.check(origin_of(url))
        headers = {"Authorization": authorization()} if trusted and authorization else {}
        wait = min(guard.policy.timeout_s, guard.remaining())
        with session.get(
            url, headers=headers, stream=True, allow_redirects=False, timeout=(wait, wait)
        ) as answer:
            if answer.is_redirect:
                url = urljoin(url, answer.headers.get("location", ""))
                continue
            if not 200 <= answer.status_code < 300:
                raise ImageFetchError(
                    f"{describe(url)} answered {answer.status_code}", status=answer.status_code
                )
            return _read_body(answer, guard.policy.max_bytes, url)
    raise ImageFetchError(f"more than {MAX_REDIRECTS} redirects; stopped at {describe(url)}")


def guarded_get(
    url: str,
    policy: FetchPolicy,
    *,
    trusted_origin: Origin | None = None,
    authorization: Callable[[], str] | None = None,
) -> bytes:
    """Download `url` under `policy` (see the module docstring) and return its body.

    Args:
        url: Absolute http(s) URL.
        policy: Allowed hosts, private networks, size limit, deadline and timeouts.
        trusted_origin: Label Studio's origin: allowed at any address, and the only origin that
            gets the Authorization header.
        authorization: Returns the Authorization header value for the trusted origin.

    Raises:
        ImageFetchError: refused, unreachable, non-2xx (status in `status`), too large, too slow.
    """
    guard = _Guard(policy, trusted_origin)
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    token = _CURRENT.set(guard)
    try:
        with guard:
            data = _follow(session, url, guard, authorization)
        if guard.expired:  # sockets shut down mid-answer can look like a short, complete one
            guard.remaining()
        return data
    except ImageFetchError:
        if guard.expired:
            guard.remaining()  # the deadline message, whatever broke first
        raise
    except TRANSPORT_ERRORS as exc:
        if guard.expired:
            guard.remaining()
        raise ImageFetchError(f"cannot download {describe(url)}: {describe_failure(exc)}") from None
    finally:
        _CURRENT.reset(token)
        session.close()

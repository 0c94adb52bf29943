"""Rules of remote fetches: allow-list entries, origins, address ranges, the fetch policy.

Allow-list entries are ``*``, ``host`` (any port), ``host:port`` or ``[v6]:port`` (that port),
``scheme://host`` (the scheme's default port) and ``*.domain`` (its subdomains). An address is
refused unless it is public unicast: loopback, private, shared, link-local, reserved, multicast
and unspecified ranges, IPv4-mapped and NAT64 forms included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from core_model.errors import UnSAMv2Error

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
DEFAULT_DEADLINE_S = 30.0
DEFAULT_TIMEOUT_S = 30.0
MAX_REDIRECTS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> IP addresses; replaces the system resolver (tests map names to loopback)."""

Origin = tuple[str, str, int]
"""(scheme, lower-case host without brackets or trailing dot, port)."""


class ImageFetchError(UnSAMv2Error):
    """The task's image cannot be fetched (missing, refused by policy, too large, too slow, ...).

    Attributes:
        status: HTTP status of the remote answer, or None when there was none.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HostEntry:
    """One allow-list entry: ``*``, ``host``, ``*.domain``, ``host:port`` (scheme optional).

    Attributes:
        host: Lower-case host name or IP address, ``*`` (any), or ``*.domain`` (its subdomains).
        port: The only allowed port, or None for any port.
    """

    host: str
    port: int | None = None

    def matches(self, host: str, port: int) -> bool:
        """Whether (host, port) is allowed by this entry."""
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def parse_host_entry(text: str) -> HostEntry:
    """Parse ``host``, ``host:port``, ``[v6]:port``, ``*.domain`` or ``scheme://host[:port]``.

    With a scheme and no port, the scheme's default port is the only one allowed; without either,
    any port of the host is.

    Raises:
        ImageFetchError: empty host or bad port.
    """
    raw = text.strip().lower()
    if raw == "*":
        return HostEntry("*")
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    parts = urlsplit("//" + rest.split("/", 1)[0])
    try:
        port = parts.port
    except ValueError:
        raise ImageFetchError(f"bad port in host entry {text!r}") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ImageFetchError(f"no host in host entry {text!r}")
    if port is None and scheme in _DEFAULT_PORTS:
        port = _DEFAULT_PORTS[scheme]
    return HostEntry(host, port)


def origin_of(url: str) -> Origin:
    """Return (scheme, host, port) of an http(s) URL.

    Raises:
        ImageFetchError: another scheme, no host, or a bad port.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ImageFetchError(f"unsupported URL scheme {scheme!r} (only http and https)")
    try:
        port = parts.port
    except ValueError:
        raise ImageFetchError("the URL has a bad port") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ImageFetchError("the URL has no host")
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def describe(url: str) -> str:
    """scheme://host/path of a URL for messages (no query string: it may hold signatures)."""
    parts = urlsplit(url)
    text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched, and within which limits.

    Attributes:
        allowed_hosts: Host entries (see `parse_host_entry`) whose http(s) URLs may be fetched,
            besides Label Studio's own origin.
        allow_private_networks: Allow private, loopback, link-local and reserved addresses.
        local_files_root: Label Studio's LOCAL_FILES_DOCUMENT_ROOT, if shared with this host.
        max_bytes: Largest accepted file.
        deadline_s: Longest time for a whole fetch (connect, headers, body, redirects).
        timeout_s: Connect timeout and longest wait for any data (capped by `deadline_s`).
        resolver: Replaces the system resolver; None uses it.
    """

    allowed_hosts: frozenset[str] = frozenset()
    allow_private_networks: bool = False
    local_files_root: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    deadline_s: float = DEFAULT_DEADLINE_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    def allows_host(self, host: str, port: int) -> bool:
        """Whether the allow-list admits (host, port)."""
        return any(parse_host_entry(entry).matches(host, port) for entry in self.allowed_hosts)

    def with_max_bytes(self, max_bytes: int) -> FetchPolicy:
        """Return a copy with another size limit."""
        return replace(self, max_bytes=max_bytes)


def is_blocked_address(address: str) -> bool:
    """Whether an IP address is not a public unicast one (IPv4-mapped and NAT64 unwrapped)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return not ip.is_global or ip.is_multicast

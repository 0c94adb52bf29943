"""Fetch the image of a Label Studio task safely.

Task data hold Label Studio paths (``/data/upload/...``, ``/data/local-files/?d=...``),
http(s) URLs, or data URIs. Label Studio paths are downloaded with the API client (or read from
a shared local-files root). Other http(s) hosts must be allowed explicitly, and addresses in
private, loopback, link-local or reserved ranges are refused unless allowed (server-side request
forgery). Every download is bounded in bytes; every redirect hop is checked again.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import requests

from core_model.errors import UnSAMv2Error
from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
_MAX_REDIRECTS = 3


class ImageFetchError(UnSAMv2Error):
    """The task's image cannot be fetched (missing, refused by policy, too large, ...)."""


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched.

    Attributes:
        allowed_hosts: Extra host names (or ``*``) whose http(s) URLs may be fetched.
        allow_private_networks: Allow private, loopback and link-local addresses.
        local_files_root: Label Studio's LOCAL_FILES_DOCUMENT_ROOT, if shared with this host.
        max_bytes: Largest accepted file.
    """

    allowed_hosts: frozenset[str] = frozenset()
    allow_private_networks: bool = False
    local_files_root: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES


def _read_local_file(query: str, root: Path | None, max_bytes: int) -> bytes:
    relative = unquote((parse_qs(query).get("d") or [""])[0])
    if root is None:
        raise ImageFetchError("local file URL, but no local files root is configured")
    base = root.resolve()
    path = (base / relative).resolve()
    if base not in path.parents:
        raise ImageFetchError(f"local file {relative!r} is outside the local files root")
    if not path.is_file():
        raise ImageFetchError(f"local file {relative!r} does not exist")
    if path.stat().st_size > max_bytes:
        raise ImageFetchError(f"local file {relative!r} is larger than {max_bytes} bytes")
    return path.read_bytes()


def _check_address(host: str, policy: FetchPolicy) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ImageFetchError(f"cannot resolve host {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        blocked = (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        )
        if blocked and not policy.allow_private_networks:
            raise ImageFetchError(
                f"refusing to fetch from {host} ({address}): private or reserved address "
                "(allow private networks to permit it)"
            )


def _fetch_http(url: str, policy: FetchPolicy) -> bytes:
    for _ in range(_MAX_REDIRECTS + 1):
        host = urlsplit(url).hostname or ""
        if "*" not in policy.allowed_hosts and host not in policy.allowed_hosts:
            raise ImageFetchError(f"host {host!r} is not in the allowed image hosts")
        _check_address(host, policy)
        try:
            answer = requests.get(url, stream=True, timeout=30, allow_redirects=False)
        except requests.RequestException as exc:
            raise ImageFetchError(f"cannot download {url}: {exc}") from None
        if answer.is_redirect:
            url = urljoin(url, answer.headers.get("location", ""))
            continue
        if answer.status_code >= 400:
            raise ImageFetchError(f"{url} answered {answer.status_code}")
        chunks, size = [], 0
        for chunk in answer.iter_content(1 << 16):
            size += len(chunk)
            if size > policy.max_bytes:
                raise ImageFetchError(f"{url} is larger than {policy.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    raise ImageFetchError(f"too many redirects fetching {url}")


def _data_uri(url: str, max_bytes: int) -> bytes:
    header, _, payload = url.partition(",")
    if ";base64" not in header or len(payload) > max_bytes * 4 // 3 + 4:
        raise ImageFetchError("only base64 data URIs within the size limit are supported")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise ImageFetchError("malformed base64 data URI") from None


def fetch_task_image(url: str, *, client: LabelStudioClient | None, policy: FetchPolicy) -> bytes:
    """Return the bytes of a task's image.

    Args:
        url: The task data value (Label Studio path, http(s) URL, or data URI).
        client: Label Studio client for its own paths and host; None if not configured.
        policy: Allowed hosts, private networks, local files root, size limit.

    Raises:
        ImageFetchError: unsupported, refused, missing, or too large.
    """
    if not isinstance(url, str) or not url:
        raise ImageFetchError(f"task has no image URL (got {url!r})")
    if url.startswith("data:"):
        return _data_uri(url, policy.max_bytes)
    parts = urlsplit(url)
    if parts.path.startswith("/data/local-files") and policy.local_files_root is not None:
        return _read_local_file(parts.query, policy.local_files_root, policy.max_bytes)
    is_ls = not parts.scheme or (client is not None and parts.netloc == client.host)
    if is_ls:
        if client is None:
            raise ImageFetchError(
                f"{url} is a Label Studio path but no Label Studio URL/API key is configured"
            )
        try:
            return client.download(url, max_bytes=policy.max_bytes)
        except LabelStudioError as exc:
            raise ImageFetchError(str(exc)) from None
    if parts.scheme in ("http", "https"):
        return _fetch_http(url, policy)
    raise ImageFetchError(
        f"unsupported image URL scheme {parts.scheme!r}: use Label Studio storage with "
        "presigned http(s) URLs, uploads, or local files"
    )

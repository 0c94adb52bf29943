"""Fetch the image of a Label Studio task safely.

Task data hold Label Studio paths (``/data/upload/...``, ``/data/local-files/?d=...``),
http(s) URLs, or data URIs. Label Studio paths, and absolute URLs of Label Studio's own origin,
are downloaded with the API client (or read from a shared local-files root). Other http(s) hosts
must be allowed explicitly, and addresses in private, loopback, link-local or reserved ranges are
refused unless allowed (server-side request forgery). Every download has a size limit and a
deadline, and every redirect hop is checked again (see `fetch_rules` and `transport`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError
from labeling_pipeline.label_studio.fetch_rules import (
    DEFAULT_MAX_BYTES,
    FetchPolicy,
    ImageFetchError,
    origin_of,
)
from labeling_pipeline.label_studio.transport import guarded_get

__all__ = ["DEFAULT_MAX_BYTES", "FetchPolicy", "ImageFetchError", "fetch_task_image"]


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


def _data_uri(url: str, max_bytes: int) -> bytes:
    header, _, payload = url.partition(",")
    if ";base64" not in header or len(payload) > max_bytes * 4 // 3 + 4:
        raise ImageFetchError("only base64 data URIs within the size limit are supported")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise ImageFetchError("malformed base64 data URI") from None


def _is_label_studio(url: str, client: LabelStudioClient | None) -> bool:
    parts = urlsplit(url)
    if not parts.scheme:
        return True
    if client is None or parts.scheme.lower() not in ("http", "https"):
        return False
    try:
        return origin_of(url) == client.origin
    except ImageFetchError:
        return False


def fetch_task_image(url: str, *, client: LabelStudioClient | None, policy: FetchPolicy) -> bytes:
    """Return the bytes of a task's image.

    Args:
        url: The task data value (Label Studio path, http(s) URL, or data URI).
        client: Label Studio client for its own paths and origin; None if not configured.
        policy: Allowed hosts, private networks, local files root, size limit, deadline.

    Raises:
        ImageFetchError: unsupported, refused, missing, too large, too slow, or any transport
            failure (the message names the status code, never the remote body).
    """
    if not isinstance(url, str) or not url.strip():
        raise ImageFetchError("the task has no image URL")
    url = url.strip()
    if url[:5].lower() == "data:":
        return _data_uri(url, policy.max_bytes)
    parts = urlsplit(url)
    if parts.path.startswith("/data/local-files") and policy.local_files_root is not None:
        return _read_local_file(parts.query, policy.local_files_root, policy.max_bytes)
    if _is_label_studio(url, client):
        if client is None:
            raise ImageFetchError(
                "the image is a Label Studio path, but no Label Studio is configured: set "
                "LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY, or let /setup's token be used)"
            )
        try:
            return client.download(url, max_bytes=policy.max_bytes, policy=policy)
        except LabelStudioError as exc:
            raise ImageFetchError(str(exc), status=exc.status) from None
    if parts.scheme.lower() in ("http", "https"):
        return guarded_get(url, policy)
    raise ImageFetchError(
        f"unsupported image URL scheme {parts.scheme[:20]!r}: use Label Studio storage with "
        "presigned http(s) URLs, uploads, or local files"
    )

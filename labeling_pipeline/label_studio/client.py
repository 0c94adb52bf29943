"""A small Label Studio REST client (projects, exports, authenticated downloads).

Authentication follows Label Studio 1.23: a legacy API token is sent as ``Token <key>``; a
personal access token (a JWT refresh token) is exchanged at ``/api/token/refresh/`` for an
access token, sent as ``Bearer <access>`` and renewed shortly before it expires (5 minutes).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from core_model.errors import UnSAMv2Error
from labeling_pipeline.label_studio.fetch_rules import (
    FetchPolicy,
    ImageFetchError,
    Origin,
    origin_of,
)
from labeling_pipeline.label_studio.transport import (
    TRANSPORT_ERRORS,
    describe_failure,
    guarded_get,
)

DEFAULT_TIMEOUT_S = 30.0
_MAX_REDIRECTS = 3


class LabelStudioError(UnSAMv2Error):
    """Label Studio is unreachable, refused the request, or answered something unusable.

    Attributes:
        status: HTTP status of Label Studio's answer, or None when it was not reached.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _jwt_payload(token: str) -> dict[str, Any] | None:
    """Return the (unverified) payload of a JWT, or None if `token` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


class LabelStudioClient:
    """Authenticated access to one Label Studio server.

    Requests go to this server's origin only: API calls follow redirects within it and refuse
    others; downloads follow redirects elsewhere only under the caller's `FetchPolicy`, without
    the Authorization header. Error messages give the status code, never the answer's body.

    Args:
        base_url: e.g. ``http://localhost:8080``.
        api_key: Legacy token or personal access token.
        timeout_s: Connect and read timeout per request.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        try:
            self.origin: Origin = origin_of(base_url or "")
        except ImageFetchError:
            raise LabelStudioError(
                f"Label Studio URL must be http(s)://host[:port], got {base_url[:100]!r}"
            ) from None
        if not api_key:
            raise LabelStudioError("a Label Studio API key is required (LABEL_STUDIO_API_KEY)")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._is_pat = _jwt_payload(api_key) is not None
        self._access: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._http = requests.Session()
        self._http.trust_env = False

    @property
    def host(self) -> str:
        """host[:port] of the server (for allow-lists)."""
        return urlsplit(self.base_url).netloc

    def _authorization(self) -> str:
        if not self._is_pat:
            return f"Token {self._api_key}"
        with self._lock:
            if self._access is None or time.time() > self._access[1] - 30:
                self._access = self._refresh_access()
            return f"Bearer {self._access[0]}"

    def _refresh_access(self) -> tuple[str, float]:
        answer = self._send(
            "POST", "/api/token/refresh/", json={"refresh": self._api_key}, authorize=False
        )
        access = answer.json().get("access") if answer.content else None
        if not isinstance(access, str):
            raise LabelStudioError("Label Studio did not return an access token for the PAT")
        expires = float((_jwt_payload(access) or {}).get("exp", time.time() + 300))
        return access, expires

    def url(self, path_or_url: str) -> str:
        """Resolve a path such as ``/data/upload/1/x.png`` against the server."""
        if urlsplit(path_or_url).scheme:
            return path_or_url
        return urljoin(self.base_url + "/", path_or_url.lstrip("/"))

    def _send(
        self, method: str, path: str, *, authorize: bool = True, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if authorize:
            headers["Authorization"] = self._authorization()
        url = self.url(path)
        for _ in range(_MAX_REDIRECTS + 1):
            answer = self._request(method, url, headers, stream, kwargs)
            if not answer.is_redirect:
                break
            answer.close()
            url = urljoin(url, answer.headers.get("location", ""))
            if self._origin_of(url) != self.origin:
                raise LabelStudioError(
                    f"Label Studio redirected {method} {path} to another host; refused",
                    status=answer.status_code,
                )
            if answer.status_code == 303:
                method = "GET"
        else:
            raise LabelStudioError(f"too many redirects for {method} {path}")
        return self._check(answer, method, path)

    @staticmethod
    def _origin_of(url: str) -> Origin | None:
        try:
            return origin_of(url)
        except ImageFetchError:
            return None

    def _request(
        self, method: str, url: str, headers: dict[str, str], stream: bool, kwargs: dict[str, Any]
    ) -> requests.Response:
        if self._origin_of(url) != self.origin:
            raise LabelStudioError(f"refusing to send a Label Studio request to {url[:100]!r}")
        try:
            return self._http.request(
                method,
                url,
                headers=headers,
                timeout=self.timeout_s,
                stream=stream,
                allow_redirects=False,
                **kwargs,
            )
        except TRANSPORT_ERRORS as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.base_url}: {describe_failure(exc)}"
            ) from None

    @staticmethod
    def _check(answer: requests.Response, method: str, path: str) -> requests.Response:
        if answer.status_code in (401, 403):
            answer.close()
            raise LabelStudioError(
                f"Label Studio refused {method} {path} ({answer.status_code}): check "
                "LABEL_STUDIO_API_KEY (a legacy token needs legacy tokens enabled; a personal "
                "access token works always)",
                status=answer.status_code,
            )
        if answer.status_code >= 400:
            answer.close()
            raise LabelStudioError(
                f"Label Studio answered {answer.status_code} to {method} {path}",
                status=answer.status_code,
            )
        return answer

    def get_json(self, path: str, **params: Any) -> Any:
        """GET a JSON document."""
        answer = self._send("GET", path, params=params or None)
        try:
            return answer.json()
        except ValueError:
            raise LabelStudioError(f"Label Studio answered non-JSON to GET {path}") from None

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request (e.g. ``json=`` body) and return the JSON answer (None if empty)."""
        answer = self._send(method, path, **kwargs)
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            raise LabelStudioError(f"Label Studio answered non-JSON to {method} {path}") from None

    def get_project(self, project_id: int) -> dict[str, Any]:
        """Return the project record (title, label_config, ...)."""
        project = self.get_json(f"/api/projects/{int(project_id)}")
        if not isinstance(project, dict):
            raise LabelStudioError(f"unexpected project record for {project_id}")
        return project

    def export_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Return every task of a project with its annotations (JSON export)."""
        tasks = self.get_json(
            f"/api/projects/{int(project_id)}/export", exportType="JSON", download_all_tasks="true"
        )
        if not isinstance(tasks, list):
            raise LabelStudioError(f"unexpected export of project {project_id}")
        return tasks

    def download(
        self, path_or_url: str, *, max_bytes: int, policy: FetchPolicy | None = None
    ) -> bytes:
        """Download a file served by Label Studio (uploads, local files), at most `max_bytes`.

        Args:
            path_or_url: A path on this server or an absolute URL of its origin.
            max_bytes: Largest accepted file.
            policy: Rules for redirects to other hosts, deadline and timeouts (default: no other
                host, 30 s deadline).

        Raises:
            ImageFetchError: refused, unreachable, non-2xx, too large or too slow.
            LabelStudioError: a personal access token cannot be exchanged.
        """
        policy = (policy or FetchPolicy(timeout_s=self.timeout_s)).with_max_bytes(max_bytes)
        try:
            return guarded_get(
                self.url(path_or_url),
                policy,
                trusted_origin=self.origin,
                authorization=self._authorization,
            )
        except ImageFetchError as exc:
            if exc.status in (401, 403):
                raise ImageFetchError(
                    f"Label Studio refused the download ({exc.status}): check "
                    "LABEL_STUDIO_API_KEY or the token Label Studio sent to /setup",
                    status=exc.status,
                ) from None
            raise

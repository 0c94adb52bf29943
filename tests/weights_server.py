"""A local stand-in for the Hugging Face Hub, Google Drive and a mirror, on 127.0.0.1.

It serves checkpoint bytes with HTTP ``Range`` support and can break off the first transfer
(`cut_after`), hold a transfer after its first chunk until released (`gate`), answer the Hub's
``/api/models/<repo>`` listing (or 404 when `hub_listing` is None), and answer Drive's
``/uc?export=download&id=ID`` with the large-file warning page, whose ``download-form``
(hidden ``id``, ``export``, ``confirm``, ``uuid``) leads to ``/download``. Every request is
logged in `requests` as (path, query, Range header).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HUB_REPO = "yujunwei04/UnSAMv2"
HUB_COMMIT = "c0ffee" + "0" * 34
DRIVE_UUID = "5d1e7c2a-0000-4000-8000-000000000001"
_FIRST_CHUNK = 1024 * 1024


class WeightsServer(ThreadingHTTPServer):
    """The server; configure the attributes before the client calls."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}  # mirror path -> bytes
        self.hub_files: dict[str, bytes] = {}  # repo path -> bytes
        self.hub_listing: list[dict[str, Any]] | None = []  # siblings; None: no repository
        self.drive: dict[str, bytes] = {}  # file id -> bytes
        self.drive_error: str | None = None  # Drive's error caption instead of the form
        self.cut_after: int | None = None  # the next file transfer stops after this many bytes
        self.gate: threading.Event | None = None  # file transfers wait after the first chunk
        self.requests: list[tuple[str, dict[str, list[str]], str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def drive_url(self) -> str:
        return self.url + "/uc?export=download&id={id}"


class _Handler(BaseHTTPRequestHandler):
    server: WeightsServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.server.requests.append((parts.path, query, self.headers.get("Range")))
        hub_prefix = f"/{HUB_REPO}/resolve/{HUB_COMMIT}/"
        if parts.path == f"/api/models/{HUB_REPO}":
            self._listing()
        elif parts.path.startswith(hub_prefix) and parts.path[len(hub_prefix) :] in (
            self.server.hub_files
        ):
            self._file(self.server.hub_files[parts.path[len(hub_prefix) :]])
        elif parts.path == "/uc" and query.get("id", [""])[0] in self.server.drive:
            self._warning_page(query["id"][0])
        elif parts.path == "/download" and query.get("uuid") == [DRIVE_UUID]:
            self._file(self.server.drive[query["id"][0]])
        elif parts.path in self.server.files:
            self._file(self.server.files[parts.path])
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, kind: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _listing(self) -> None:
        if self.server.hub_listing is None:
            body = json.dumps({"error": "Repository not found"}).encode()
            self._send(404, body, "application/json", X_Error_Code="RepoNotFound")
            return
        info = {"id": HUB_REPO, "sha": HUB_COMMIT, "siblings": self.server.hub_listing}
        self._send(200, json.dumps(info).encode(), "application/json")

    def _warning_page(self, file_id: str) -> None:
        if self.server.drive_error is not None:
            caption = f'<p class="uc-error-subcaption">{self.server.drive_error}</p>'
            self._send(200, f"<html><body>{caption}</body></html>".encode(), "text/html")
            return
        inputs = "".join(
            f'<input type="hidden" name="{name}" value="{value}">'
            for name, value in (
                ("id", file_id),
                ("export", "download"),
                ("confirm", "t"),
                ("uuid", DRIVE_UUID),
            )
        )
        page = (
            "<html><body><p>Google Drive can't scan this file for viruses.</p>"
            f'<form id="download-form" action="{self.server.url}/download" method="get">'
            f'<input type="submit" value="Download anyway">{inputs}</form></body></html>'
        )
        self._send(200, page.encode(), "text/html; charset=utf-8")

    def _file(self, data: bytes) -> None:
        wanted = self.headers.get("Range")
        start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
        if start >= len(data) and wanted:
            self._send(416, b"", "text/plain", Content_Range=f"bytes */{len(data)}")
            return
        body = data[start:]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut, self.server.cut_after = self.server.cut_after, None
        if cut is not None:  # break off: send part of the body, then close the connection
            self.wfile.write(body[:cut])
            self.close_connection = True
            return
        self.wfile.write(body[:_FIRST_CHUNK])
        self.wfile.flush()
        if self.server.gate is not None:
            self.server.gate.wait(30)
        self.wfile.write(body[_FIRST_CHUNK:])


@contextmanager
def weights_server() -> Iterator[WeightsServer]:
    """Run a `WeightsServer` on 127.0.0.1 for the block; stopped and closed afterwards."""
    server = WeightsServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if server.gate is not None:
            server.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(5)

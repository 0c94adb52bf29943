"""Local HTTP servers for the fetch tests: a canary that records every hit, scripted answers.

All listen on 127.0.0.1 (random ports) and are stopped by the fixture that started them.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

Route = Callable[[BaseHTTPRequestHandler, threading.Event], None]
SECRET_BODY = "SECRET-REMOTE-BODY-must-not-be-echoed"


def png_bytes(
    color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 48)
) -> bytes:
    """A PNG of noise with a flat rectangle of `color` (so two colors give two images)."""
    image = np.random.default_rng(1).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image[10:30, 10:40] = color
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG whose header is intact but whose data stops halfway."""
    buffer = io.BytesIO()
    image = np.random.default_rng(2).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def body(data: bytes, status: int = 200, content_type: str = "image/png") -> Route:
    """Answer `status` with `data`."""

    def route(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(status)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def redirect(location: str | Callable[[], str], status: int = 302) -> Route:
    """Redirect to `location` (or to what the callable returns at request time)."""

    def route(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(status)
        handler.send_header("location", location() if callable(location) else location)
        handler.send_header("content-length", "0")
        handler.end_headers()

    return route


def drip(total: int = 40, every_s: float = 0.5) -> Route:
    """Declare `total` bytes, then send one byte every `every_s` seconds."""

    def route(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("content-length", str(total))
        handler.end_headers()
        for _ in range(total):
            if stop.wait(every_s):
                return
            handler.wfile.write(b"x")
            handler.wfile.flush()

    return route


def drip_headers(every_s: float = 0.5, count: int = 40) -> Route:
    """Send the status line, then one header line every `every_s` seconds."""

    def route(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for index in range(count):
            if stop.wait(every_s):
                return
            handler.wfile.write(f"x-slow-{index}: 1\r\n".encode())
            handler.wfile.flush()

    return route


def cut_off_chunked() -> Route:
    """A chunked body that stops in the middle of a chunk (connection closed)."""

    def route(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        handler.wfile.write(b"400\r\n" + png_bytes()[:100])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    return route


def cut_off_length() -> Route:
    """Declare 5000 bytes, send 100 and close."""

    def route(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 100)
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    return route


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 that records every connection and request.

    Attributes:
        routes: Path (without query) -> route; unknown paths answer 404 with a secret body.
        hits: (method, path, headers) of every request received.
        connections: Number of TCP connections accepted.
    """

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.hits: list[tuple[str, str, dict[str, str]]] = []
        self.connections = 0
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.hits.append(("GET", self.path, dict(self.headers.items())))
                route = server.routes.get(self.path.split("?", 1)[0])
                try:
                    if route is None:
                        body(SECRET_BODY.encode(), 404, "text/plain")(self, server._stop)
                    else:
                        route(self, server._stop)
                except OSError:  # the client gave up (deadline): fine
                    self.close_connection = True

            do_POST = do_GET  # noqa: N815

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                server.connections += 1
                return True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that give up mid-answer are part of the tests

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def reached(self) -> bool:
        """Whether anything connected at all."""
        return bool(self.connections or self.hits)

    @contextmanager
    def running(self) -> Iterator[LocalServer]:
        """Serve until the block ends."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._httpd.shutdown()
            self._httpd.server_close()


#: Host spellings that all reach this machine (or the cloud metadata address); none may be fetched.
LOOPBACK_FORMS = [
    "127.0.0.1",
    "127.1",
    "0x7f000001",
    "2130706433",
    "017700000001",
    "0.0.0.0",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "169.254.169.254",
    "localhost",
    "localhost.",
]

"""Small video files for tests, and a 127.0.0.1 HTTP server that serves files from memory."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np


def write_clip(
    path: Path,
    *,
    frames: int = 8,
    size_hw: tuple[int, int] = (96, 128),
    fps: float = 10.0,
    square: int = 28,
    step_px: int = 4,
    vanish_after: int | None = None,
) -> list[tuple[int, int, int, int]]:
    """Write a clip of a bright square moving right over dark noise.

    Args:
        path: Output file: ``.mp4`` (MPEG-4 Part 2) or ``.webm`` (VP8, which browsers play).
        frames: Number of frames.
        size_hw: (height, width) of the frames.
        fps: Frame rate written in the container.
        square: Side of the square in pixels.
        step_px: How far the square moves per frame.
        vanish_after: Frame index from which the square is gone (None: always there).

    Returns:
        (x0, y0, x1, y1) pixel box of the square per frame (exclusive right/bottom edges).
    """
    import cv2

    height, width = size_hw
    codec = "VP80" if path.suffix == ".webm" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    rng = np.random.default_rng(0)
    boxes = []
    for index in range(frames):
        image = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
        x0, y0 = 10 + step_px * index, (height - square) // 2
        if vanish_after is None or index < vanish_after:
            image[y0 : y0 + square, x0 : x0 + square] = (40, 220, 240)
        boxes.append((x0, y0, x0 + square, y0 + square))
        writer.write(image)
    writer.release()
    return boxes


class FileServer:
    """Serve `files` (path -> bytes) on 127.0.0.1; other paths answer 404.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        hits: Paths requested, in order.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                server.hits.append(path)
                data = server.files.get(path)
                self.send_response(200 if data is not None else 404)
                self.send_header("content-type", "video/mp4")
                self.send_header("content-length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[FileServer]:
        """Serve until the block ends (then stop and close the socket)."""
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join(5)

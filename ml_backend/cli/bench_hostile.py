"""Hostile clients for `unsamv2 bench backend --hostile`: slow, oversized and absurd requests.

Three kinds, each in its own thread, until told to stop (loopback only):

* slow drip: a /predict request whose header arrives at once and whose body arrives one byte
  every `drip_s` seconds (a client on a bad link, or one holding connections open on purpose);
* oversized: a /predict header announcing one byte more than the server's body limit, followed
  by as much of the body as the server accepts before it answers;
* huge size: a valid-looking click whose ``original_width`` / ``original_height`` claim an image of
  a million pixels a side (the mask would have to be resized to it).

Every answer's status is counted by kind; a hostile client that gets no answer counts "none".
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

_CHUNK = 64 * 1024
_HUGE_SIDE = 1_000_000


class HostileClients:
    """Start `count` hostile clients (kinds in turn) against 127.0.0.1:`port`.

    Args:
        port: The backend's port on 127.0.0.1.
        body: Returns a valid /predict body for a click (its JSON is reused by every kind).
        max_body_bytes: The server's request body limit.
        count: Number of clients.
        drip_s: Seconds between two bytes of a slow client.
        pause_s: Pause of the oversized and huge-size clients between two requests.
    """

    KINDS = ("slow_drip", "oversized", "huge_size")

    def __init__(
        self,
        port: int,
        body: Callable[[], dict[str, Any]],
        max_body_bytes: int,
        *,
        count: int = 8,
        drip_s: float = 0.5,
        pause_s: float = 0.05,
    ) -> None:
        self.port, self.body, self.max_body_bytes = port, body, max_body_bytes
        self.count, self.drip_s, self.pause_s = count, drip_s, pause_s
        self.statuses: dict[str, Counter[str]] = {kind: Counter() for kind in self.KINDS}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the clients."""
        runs = {"slow_drip": self._slow_drip, "oversized": self._oversized, "huge_size": self._huge}
        for index in range(self.count):
            kind = self.KINDS[index % len(self.KINDS)]
            thread = threading.Thread(target=self._loop, args=(kind, runs[kind]), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> dict[str, dict[str, int]]:
        """Stop the clients and return the statuses they got, by kind."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._lock:
            return {kind: dict(counts) for kind, counts in self.statuses.items()}

    def server_errors(self) -> int:
        """Answers with a 5xx status so far."""
        with self._lock:
            return sum(
                n for counts in self.statuses.values() for s, n in counts.items() if s[0] == "5"
            )

    def _loop(self, kind: str, run: Callable[[], str]) -> None:
        while not self._stop.is_set():
            try:
                status = run()
            except OSError:
                status = "none"
            with self._lock:
                self.statuses[kind][status] += 1
            self._stop.wait(self.pause_s)

    def _head(self, length: int) -> bytes:
        return (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
        ).encode()

    def _slow_drip(self) -> str:
        payload = json.dumps(self.body()).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(self._head(len(payload)))
            for byte in payload:
                if self._stop.wait(self.drip_s):
                    return "unfinished"
                sock.sendall(bytes([byte]))
            return _status(sock)

    def _oversized(self) -> str:
        size = self.max_body_bytes + 1
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(self._head(size) + b"[")
            sent, chunk = 1, b" " * _CHUNK
            try:
                while sent < size and not self._stop.is_set():
                    sock.sendall(chunk[: size - sent])
                    sent += _CHUNK
            except OSError:
                pass  # the server answered and closed before the whole body was sent
            return _status(sock)

    def _huge(self) -> str:
        body = self.body()
        for region in body["params"]["context"]["result"]:
            region["original_width"] = region["original_height"] = _HUGE_SIDE
        payload = json.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(self._head(len(payload)) + payload)
            return _status(sock)


def _status(sock: socket.socket) -> str:
    """Read the status code of the answer on `sock` ("none" if the server closed silently)."""
    try:
        line = sock.makefile("rb").readline(1024)
    except OSError:
        return "none"
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 and parts[1].isdigit() else "none"

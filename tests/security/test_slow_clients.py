"""Slow clients cannot starve the HTTP server: /health and clicks answer while 8 dribble bytes.

The server is the one `unsamv2 serve` runs (`create_http_server`, waitress) on 127.0.0.1 with
two request threads and the tiny model; the slow clients are raw sockets that send a /predict
request's header or body one byte every 0.5 s. The bounds are generous (a behavioural check:
with one thread per connection, as before, these calls waited for the slow clients' timeouts).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from core_model.checkpoint import official_state_dict
from labeling_pipeline.store import Store
from ml_backend.http_server import create_http_server
from ml_backend.label_studio.app import create_app
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

from helpers import ServiceProcess, free_port, wait_for

SLOW_CLIENTS = 8
BOUND_S = 10.0


def interactive_body(region_id: str = "k1") -> dict[str, Any]:
    """A smart click of the shipped config on the 128 x 96 scene, as Label Studio sends it."""
    keypoint = {
        "id": region_id,
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 128,
        "original_height": 96,
        "is_positive": True,
        "value": {"x": 50, "y": 45, "width": 0.5, "keypointlabels": ["Car @0.5"]},
    }
    task = {"id": 5, "data": {"image": "/data/local-files/?d=scene.png"}}
    return {
        "tasks": [task],
        "project": "12.1700000000",
        "label_config": shipped_config(),
        "params": {"context": {"result": [keypoint]}},
    }


def _checkpoint(folder: Path, model: torch.nn.Module) -> Path:
    path = folder / "tiny.pt"
    torch.save({"model": official_state_dict(model)}, path)
    return path


@pytest.fixture(scope="module")
def server_url(tmp_path_factory, tiny_model) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("slow")
    scene = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    Image.fromarray(scene).save(folder / "scene.png")
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(folder / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(_checkpoint(folder, tiny_model)),
            "UNSAMV2_LOCAL_FILES_ROOT": str(folder),
            "UNSAMV2_HTTP_THREADS": "2",
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    server = create_http_server(app, settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(10)


def _dribble(
    port: int, stop: threading.Event, opened: list[socket.socket], body_only: bool
) -> None:
    body = json.dumps(interactive_body()).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    opened.append(sock)
    if body_only:  # the whole header at once, then the body byte by byte
        sock.sendall(head)
        payload = body
    else:  # the header itself byte by byte
        payload = head + body
    for byte in payload:
        if stop.wait(0.5):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


@pytest.fixture
def slow_clients(server_url: str) -> Iterator[list[socket.socket]]:
    port = int(server_url.rsplit(":", 1)[1])
    stop, opened = threading.Event(), []
    threads = [
        threading.Thread(target=_dribble, args=(port, stop, opened, i % 2 == 0), daemon=True)
        for i in range(SLOW_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(opened) == SLOW_CLIENTS, 10, "the slow clients to connect")
    stop.wait(1.5)  # every slow client has started dribbling
    yield opened
    stop.set()
    for thread in threads:
        thread.join(5)
    for sock in opened:
        sock.close()


def test_health_and_clicks_answer_while_slow_clients_dribble(
    server_url: str, slow_clients: list[socket.socket]
) -> None:
    health = requests.get(f"{server_url}/health", timeout=BOUND_S)
    assert health.status_code == 200 and health.json()["model"]["state"] == "ready"
    for index in range(3):  # more calls than request threads
        answer = requests.post(
            f"{server_url}/predict",
            json=interactive_body(f"k{index}"),
            timeout=BOUND_S,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["result"][0]["type"] == "brushlabels"
    assert all(_waiting_for_answer(sock) for sock in slow_clients)  # held open, not dropped


def _waiting_for_answer(sock: socket.socket) -> bool:
    """True while the server keeps the connection open without answering yet."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False  # an answer, or the server closed the connection


def test_oversized_body_is_refused_before_it_reaches_a_request_thread(server_url: str) -> None:
    limit = Settings.from_env({}).max_request_bytes
    port = int(server_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as sock:
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n{{".encode()
        )
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"413", status_line


def test_serve_command_answers_and_stops_on_sigterm(tmp_path: Path, tiny_model) -> None:
    checkpoint = _checkpoint(tmp_path, tiny_model)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_STUDIO_"))}
    env.update(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_TORCH_THREADS": "1",
            "UNSAMV2_HTTP_THREADS": "2",
        }
    )
    service = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    try:

        def ready() -> bool:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except (requests.RequestException, ValueError):
                return service.process.poll() is not None
            return body["model"]["state"] == "ready"

        wait_for(ready, 120, "unsamv2 serve to load the model", interval=0.5)
        assert service.process.poll() is None, service.log()[-3000:]
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(30) == 0, service.log()[-3000:]
    finally:
        service.stop()

"""First start without weights: the backend downloads the UnSAMv2 checkpoint, then serves.

The checkpoint comes from a mirror on 127.0.0.1 (``UNSAMV2_CHECKPOINT_URL``) holding a
test-tiny model in the official format (the released ``small`` one is too big to make here);
the mirror holds the transfer after its first chunk until the test has seen ``downloading``.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import pytest
import requests
import torch
from PIL import Image
from weights_server import weights_server

from core_model.build import build_model
from core_model.checkpoint import official_state_dict
from labeling_pipeline.model_files.release import download_release
from ml_backend.first_start import first_start_fetcher
from ml_backend.label_studio.app import create_app
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

from helpers import ServiceProcess, free_port, wait_for


@pytest.fixture(scope="module")
def official_bytes() -> bytes:
    torch.manual_seed(5)
    buffer = io.BytesIO()
    torch.save({"model": official_state_dict(build_model("test-tiny"))}, buffer)
    return buffer.getvalue()


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    Image.new("RGB", (128, 96), (30, 30, 30)).save(files / "scene.png")
    return {
        "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
        "UNSAMV2_MODEL": "test-tiny",
        "UNSAMV2_CHECKPOINT_URL": url,
        "UNSAMV2_LOCAL_FILES_ROOT": str(files),
        "UNSAMV2_MODEL_POLL_S": "60",
        "UNSAMV2_TORCH_THREADS": "1",
    }


def _click(client, label: str):
    click = {
        "id": "k1",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 128,
        "original_height": 96,
        "is_positive": True,
        "value": {"x": 50, "y": 45, "width": 0.5, "keypointlabels": [label]},
    }
    task = {"id": 5, "data": {"image": "/data/local-files/?d=scene.png"}}
    return client.post(
        "/predict",
        json={
            "tasks": [task],
            "project": "3.1700000000",
            "label_config": shipped_config(),
            "params": {"context": {"result": [click]}},
        },
    )


def test_first_start_downloads_the_checkpoint_then_answers_clicks(
    tmp_path: Path, official_bytes: bytes
) -> None:
    with weights_server() as server:
        server.files["/unsamv2_plus_ckpt.pt"] = official_bytes
        server.gate = threading.Event()
        settings = Settings.from_env(_env(tmp_path, f"{server.url}/unsamv2_plus_ckpt.pt"))
        app = create_app(settings)  # starts the runtime: no checkpoint, so it downloads
        runtime = app.extensions["unsamv2"].runtime
        client = app.test_client()
        try:

            def downloading():
                model = client.get("/health").get_json()["model"]
                return model if model["download"] and model["download"]["bytes"] else None

            model = wait_for(downloading, 30, "/health to show the download")
            assert model["state"] == "downloading" and "MB" in model["reason"]
            progress = model["download"]
            assert progress["total"] == len(official_bytes)
            assert 0 < progress["bytes"] < progress["total"]
            assert progress["percent"] == round(100 * progress["bytes"] / progress["total"], 1)
            waiting = _click(client, "Car @0.5")
            assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "30"
            assert "downloading" in waiting.get_json()["error"]
            server.gate.set()

            def ready():
                model = client.get("/health").get_json()["model"]
                return model if model["state"] == "ready" else None

            model = wait_for(ready, 60, "the downloaded model to load")
            assert model["granularity_mode"] == "granularity" and model["download"] is None
            for label in ("Car @0.2", "Car @1"):  # clicks are answered at any granularity
                answer = _click(client, label)
                assert answer.status_code == 200, answer.get_json()
                assert answer.get_json()["results"][0]["result"][0]["type"] == "brushlabels"
        finally:
            runtime.stop()
    weights = tmp_path / "data" / "weights"
    assert (weights / "unsamv2_plus_ckpt.pt").read_bytes() == official_bytes
    assert "unsamv2_plus_ckpt.pt" in (weights / "manifest.json").read_text()


def test_offline_first_start_says_in_one_line_what_to_do(tmp_path: Path, caplog) -> None:
    """Hub and Drive unreachable (closed ports): /health and the log carry the same line."""
    closed = f"http://127.0.0.1:{free_port()}"
    settings = Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path)})

    def fetch(progress):
        return download_release(
            "unsamv2_plus",
            settings.pipeline.weights_dir,
            progress=progress,
            endpoint=closed,
            drive_url=closed + "/uc?id={id}",
            timeout_s=2,
        )

    runtime = ModelRuntime(settings.pipeline, poll_s=0, fetch_default=fetch)
    with caplog.at_level(logging.ERROR, logger="ml_backend.runtime"):
        runtime.refresh()
        runtime.refresh()  # tried once per process: no second attempt, no second line
    status = runtime.status()
    assert status["state"] == "unavailable" and status["download"] is None
    reason = status["reason"]
    assert reason.startswith("offline:") and "\n" not in reason
    assert "unsamv2 weights download unsamv2_plus" in reason
    assert str(settings.pipeline.weights_dir.resolve()) in reason
    assert [r.getMessage() for r in caplog.records] == [reason]


def test_no_download_when_turned_off_or_for_another_model(tmp_path: Path) -> None:
    base = {"UNSAMV2_DATA_DIR": str(tmp_path)}
    assert first_start_fetcher(Settings.from_env(base)) is not None  # on by default
    off = Settings.from_env({**base, "UNSAMV2_AUTO_DOWNLOAD": "false"})
    assert first_start_fetcher(off) is None
    other = Settings.from_env({**base, "UNSAMV2_MODEL": "large"})
    assert first_start_fetcher(other) is None  # the releases are of the small model
    configured = Settings.from_env({**base, "UNSAMV2_CHECKPOINT": str(tmp_path / "x.pt")})

    def never(progress):
        raise AssertionError("a configured checkpoint is never replaced by a download")

    runtime = ModelRuntime(configured.pipeline, poll_s=0, fetch_default=never)
    runtime.refresh()
    assert "does not exist" in runtime.status()["reason"]


def test_serve_downloads_on_first_start(tmp_path: Path, official_bytes: bytes) -> None:
    """`unsamv2 serve` (what `unsamv2 up` and `make run` start) with no weights anywhere."""
    with weights_server() as server:
        server.files["/ckpt.pt"] = official_bytes
        port = free_port()
        env = {
            **_env(tmp_path, f"{server.url}/ckpt.pt"),
            "UNSAMV2_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
        service = ServiceProcess(["serve"], {**_base_env(), **env}, tmp_path / "serve.log")
        try:

            def state():
                try:
                    body = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                except (requests.RequestException, ValueError):
                    return service.process.poll() is not None
                return body["model"]["state"] == "ready"

            wait_for(state, 90, "serve to download and load the model", interval=0.3)
            assert service.process.poll() is None, service.log()[-3000:]
        finally:
            service.stop()
    assert "downloading unsamv2_plus" in service.log()


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_"))}

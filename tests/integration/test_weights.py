"""Checkpoint download (verified, resumable, offline errors) and import, on a local server."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from core_model.checkpoint import is_granularity_key, official_state_dict
from labeling_pipeline.model_files import weights
from labeling_pipeline.model_files.weights import (
    WeightsError,
    download,
    find_checkpoint,
    import_checkpoint,
)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(BaseHTTPRequestHandler):
    payload = PAYLOAD
    sha256 = hashlib.sha256(PAYLOAD).hexdigest()
    requests: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("x-linked-etag", f'"{self.sha256}"')
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        range_header = self.headers.get("Range")
        self.requests.append(range_header or "full")
        start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
        body = self.payload[start:]
        self.send_response(206 if range_header else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    spec = weights.WEIGHTS["sam2.1_hiera_tiny"]
    monkeypatch.setitem(
        weights.WEIGHTS,
        spec.name,
        weights.WeightSpec(
            spec.name,
            spec.filename,
            spec.variant,
            spec.kind,
            f"{base}/file.pt",
            f"{base}/meta.pt",
            spec.approx_mb,
        ),
    )
    _Handler.requests = []
    yield base
    httpd.shutdown()


def test_download_verifies_against_the_mirror_checksum(server, tmp_path: Path) -> None:
    seen = []
    path = download("sam2.1_hiera_tiny", tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == PAYLOAD and path.name == "sam2.1_hiera_tiny.pt"
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not (tmp_path / "sam2.1_hiera_tiny.pt.part").exists()
    assert download("sam2.1_hiera_tiny", tmp_path) == path  # present and verified: no download
    assert _Handler.requests == ["full"]


def test_download_resumes_a_partial_file(server, tmp_path: Path) -> None:
    (tmp_path / "sam2.1_hiera_tiny.pt.part").write_bytes(PAYLOAD[:300_000])
    path = download("sam2.1_hiera_tiny", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.requests == ["bytes=300000-"]


def test_checksum_mismatch_keeps_nothing(server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_Handler, "sha256", "0" * 64)
    with pytest.raises(WeightsError, match="does not match"):
        download("sam2.1_hiera_tiny", tmp_path)
    assert list(tmp_path.glob("sam2.1_hiera_tiny*")) == []


def test_offline_error_is_clear(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="offline"):
        download("sam2.1_hiera_small", tmp_path, url="http://127.0.0.1:9/none.pt", timeout_s=2)


def test_unsamv2_checkpoints_are_imported_not_downloaded(tmp_path: Path, make_tiny) -> None:
    with pytest.raises(WeightsError, match="browser"):
        download("unsamv2_plus", tmp_path)
    model = make_tiny()
    official = tmp_path / "downloaded.pt"
    torch.save({"model": official_state_dict(model)}, official)
    target = import_checkpoint("unsamv2_plus", official, tmp_path / "weights")
    assert target.name == "unsamv2_plus_ckpt.pt"
    assert find_checkpoint(tmp_path / "weights", "small") == target
    plain = tmp_path / "plain.pt"
    torch.save(
        {"model": {k: v for k, v in model.state_dict().items() if not is_granularity_key(k)}}, plain
    )
    with pytest.raises(WeightsError, match="not an UnSAMv2"):
        import_checkpoint("unsamv2", plain, tmp_path / "weights")
    with pytest.raises(WeightsError, match="unknown checkpoint"):
        import_checkpoint("sam3", plain, tmp_path / "weights")

"""Checkpoint download (verified, resumable, offline errors) and import, on a local server."""

from __future__ import annotations

import dataclasses
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


@pytest.fixture
def tiny_specs(monkeypatch) -> None:
    """The UnSAMv2 and SAM-2.1 tiny names stand for the test-tiny model (no real weights here)."""
    for name in ("unsamv2", "unsamv2_plus", "sam2.1_hiera_tiny"):
        monkeypatch.setitem(
            weights.WEIGHTS, name, dataclasses.replace(weights.WEIGHTS[name], variant="test-tiny")
        )


def test_unsamv2_checkpoints_are_imported_or_downloaded_as_releases(
    tmp_path: Path, make_tiny, tiny_specs
) -> None:
    with pytest.raises(WeightsError, match="is an UnSAMv2 release"):
        download("unsamv2_plus", tmp_path)
    model = make_tiny()
    official = tmp_path / "downloaded.pt"
    torch.save({"model": official_state_dict(model)}, official)
    target = import_checkpoint("unsamv2_plus", official, tmp_path / "weights")
    assert target.name == "unsamv2_plus_ckpt.pt"
    assert find_checkpoint(tmp_path / "weights", "test-tiny") == target
    plain = tmp_path / "plain.pt"
    torch.save(
        {"model": {k: v for k, v in model.state_dict().items() if not is_granularity_key(k)}}, plain
    )
    with pytest.raises(WeightsError, match="not an UnSAMv2"):
        import_checkpoint("unsamv2", plain, tmp_path / "weights")
    with pytest.raises(WeightsError, match="unknown checkpoint"):
        import_checkpoint("sam3", plain, tmp_path / "weights")


def test_import_refuses_a_checkpoint_of_another_model_size(tmp_path: Path, make_tiny) -> None:
    """A test-tiny UnSAMv2 file is not the `unsamv2` checkpoint (model small): shapes differ."""
    official = tmp_path / "tiny_official.pt"
    torch.save({"model": official_state_dict(make_tiny())}, official)
    with pytest.raises(WeightsError, match=r"not a checkpoint of unsamv2 \(model small\)"):
        import_checkpoint("unsamv2", official, tmp_path / "weights")
    assert not (tmp_path / "weights" / "unsamv2_ckpt.pt").exists()


def test_import_refuses_wrong_kinds_with_the_kind_found(
    tmp_path: Path, make_tiny, tiny_specs
) -> None:
    official = tmp_path / "official.pt"
    torch.save({"model": official_state_dict(make_tiny())}, official)
    with pytest.raises(WeightsError, match="not a plain SAM-2.1 checkpoint: it is an UnSAMv2"):
        import_checkpoint("sam2.1_hiera_tiny", official, tmp_path / "weights")


class _NotATensor:
    pass


@pytest.mark.parametrize("content", ["text", "pickled objects", "empty"])
def test_import_says_in_one_line_why_a_file_is_not_a_checkpoint(tmp_path: Path, content) -> None:
    path = tmp_path / "file.pt"
    if content == "text":
        path.write_text("<html>Google Drive: virus scan warning</html>")
    elif content == "pickled objects":
        torch.save({"model": _NotATensor()}, path)
    else:
        path.write_bytes(b"")
    with pytest.raises(WeightsError) as info:
        import_checkpoint("unsamv2", path, tmp_path / "weights")
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message and str(path) in message
    expected = "Python objects" if content == "pickled objects" else "not a torch checkpoint"
    assert expected in message

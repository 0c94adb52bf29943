"""Official UnSAMv2 downloads: Hub or Drive, confirmation page, resume, refusal, offline.

Everything runs against `weights_server` on 127.0.0.1: a fake Hub listing, Drive's warning
page and a mirror. The released checkpoints are of the ``small`` model, too big to make here,
so the names stand for the test-tiny model in the official format (`tiny_release`), except in
the model-size refusal, which checks a test-tiny file against the real ``small`` spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from weights_server import DRIVE_UUID, HUB_COMMIT, weights_server

from core_model.checkpoint import is_granularity_key, official_state_dict
from labeling_pipeline.model_files import release, weights
from labeling_pipeline.model_files.release import download_release
from labeling_pipeline.model_files.transfer import TransferError, confirmation_url
from labeling_pipeline.model_files.weights import WeightsError

from helpers import free_port

PLUS_ID = release.DRIVE_FILE_IDS["unsamv2_plus"]


def _bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def official_bytes() -> bytes:
    torch.manual_seed(3)
    from core_model.build import build_model

    return _bytes(official_state_dict(build_model("test-tiny")))


@pytest.fixture
def tiny_release(monkeypatch) -> None:
    """`unsamv2` and `unsamv2_plus` stand for the test-tiny model (no real weights here)."""
    for name in ("unsamv2", "unsamv2_plus"):
        spec = dataclasses.replace(weights.WEIGHTS[name], variant="test-tiny")
        monkeypatch.setitem(weights.WEIGHTS, name, spec)


@pytest.fixture
def server():
    with weights_server() as running:
        yield running


def _hub_entry(path: str, data: bytes) -> dict[str, object]:
    sha = hashlib.sha256(data).hexdigest()
    return {
        "rfilename": path,
        "size": len(data),
        "lfs": {"sha256": sha, "size": len(data), "pointerSize": 134},
    }


def _download(server, folder: Path, name: str = "unsamv2plus", **kwargs) -> Path:
    return download_release(
        name, folder, endpoint=server.url, drive_url=server.drive_url(), timeout_s=5, **kwargs
    )


def test_the_hub_is_used_when_its_listing_has_the_file(
    server, tmp_path, official_bytes, tiny_release
) -> None:
    server.hub_listing = [
        {"rfilename": "README.md"},
        _hub_entry("checkpoints/unsamv2_plus_ckpt.pt", official_bytes),
    ]
    server.hub_files["checkpoints/unsamv2_plus_ckpt.pt"] = official_bytes
    seen: list[tuple[int, int | None]] = []
    path = _download(server, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "unsamv2_plus_ckpt.pt" and path.read_bytes() == official_bytes
    assert seen[-1] == (len(official_bytes), len(official_bytes))
    assert [p for p, _, _ in server.requests] == [
        "/api/models/yujunwei04/UnSAMv2",
        f"/yujunwei04/UnSAMv2/resolve/{HUB_COMMIT}/checkpoints/unsamv2_plus_ckpt.pt",
    ]
    entry = json.loads((tmp_path / "manifest.json").read_text())["unsamv2_plus_ckpt.pt"]
    assert entry["sha256"] == hashlib.sha256(official_bytes).hexdigest()
    assert entry["source"].startswith("huggingface:")
    assert not list(tmp_path.glob("*.part"))


def test_a_hub_file_with_another_checksum_is_refused(
    server, tmp_path, official_bytes, tiny_release
) -> None:
    server.hub_listing = [_hub_entry("unsamv2_plus_ckpt.pt", b"other bytes")]
    server.hub_files["unsamv2_plus_ckpt.pt"] = official_bytes
    with pytest.raises(WeightsError, match="does not match"):
        _download(server, tmp_path)
    assert not list(tmp_path.glob("unsamv2_plus_ckpt.pt*"))


@pytest.mark.parametrize("hub", ["no such file", "no such repository"])
def test_drive_is_used_otherwise_through_its_confirmation_page(
    server, tmp_path, official_bytes, tiny_release, hub
) -> None:
    server.hub_listing = [{"rfilename": "README.md"}] if hub == "no such file" else None
    server.drive[PLUS_ID] = official_bytes
    path = _download(server, tmp_path)
    assert path.read_bytes() == official_bytes
    paths = [p for p, _, _ in server.requests]
    assert paths == ["/api/models/yujunwei04/UnSAMv2", "/uc", "/download"]
    form = server.requests[-1][1]  # the hidden fields of the form, sent back
    assert form == {
        "id": [PLUS_ID],
        "export": ["download"],
        "confirm": ["t"],
        "uuid": [DRIVE_UUID],
    }
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["unsamv2_plus_ckpt.pt"]["source"].startswith("google-drive:")
    assert _download(server, tmp_path) == path  # present: nothing is downloaded again
    assert len(server.requests) == 3


def test_a_broken_transfer_resumes_with_a_range_request(
    server, tmp_path, official_bytes, tiny_release
) -> None:
    server.hub_listing = None
    server.drive[PLUS_ID] = official_bytes
    server.cut_after = 3_000_000
    path = _download(server, tmp_path)
    assert path.read_bytes() == official_bytes
    ranges = [r for p, _, r in server.requests if p == "/download"]
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 3_000_000  # what was written before the break is kept


def test_a_partial_file_of_an_earlier_run_is_continued(
    server, tmp_path, official_bytes, tiny_release
) -> None:
    server.files["/mirror.pt"] = official_bytes
    (tmp_path / "unsamv2_ckpt.pt.part").write_bytes(official_bytes[:3_000_000])
    path = download_release("unsamv2", tmp_path, url=f"{server.url}/mirror.pt", timeout_s=5)
    assert path.read_bytes() == official_bytes
    assert [r for _, _, r in server.requests] == ["bytes=3000000-"]


def test_a_file_that_is_not_an_official_checkpoint_is_refused(
    server, tmp_path, make_tiny, tiny_release
) -> None:
    plain = {k: v for k, v in make_tiny().state_dict().items() if not is_granularity_key(k)}
    server.files["/plain.pt"] = _bytes(plain)
    with pytest.raises(WeightsError) as info:
        download_release("unsamv2", tmp_path, url=f"{server.url}/plain.pt", timeout_s=5)
    message = str(info.value)
    assert "\n" not in message and "not an UnSAMv2 checkpoint" in message
    assert not list(tmp_path.glob("unsamv2_ckpt.pt*"))  # neither the file nor a partial


def test_an_official_checkpoint_of_another_model_size_is_refused(
    server, tmp_path, official_bytes
) -> None:
    server.files["/tiny.pt"] = official_bytes
    with pytest.raises(WeightsError, match=r"not a checkpoint of unsamv2 \(model small\)"):
        download_release("unsamv2", tmp_path, url=f"{server.url}/tiny.pt", timeout_s=5)
    assert not list(tmp_path.glob("unsamv2_ckpt.pt*"))


def test_drive_error_page_is_one_line_with_drive_s_reason(server, tmp_path, tiny_release) -> None:
    server.hub_listing = None
    server.drive[PLUS_ID] = b"unused"
    server.drive_error = "Too many users have viewed or downloaded this file recently."
    with pytest.raises(WeightsError) as info:
        _download(server, tmp_path)
    assert "\n" not in str(info.value) and "Too many users" in str(info.value)


def test_offline_is_one_line_saying_what_to_run(tmp_path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(WeightsError) as info:
        download_release(
            "unsamv2plus",
            tmp_path,
            endpoint=closed,
            drive_url=closed + "/uc?id={id}",
            timeout_s=2,
        )
    message = str(info.value)
    assert "\n" not in message and message.startswith("offline:")
    assert "unsamv2 weights download unsamv2_plus" in message
    assert str(tmp_path.resolve()) in message and "weights import unsamv2_plus" in message


def test_confirmation_links_and_cookies_of_older_pages() -> None:
    page = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=X">go</a>'
    assert confirmation_url(page, "https://drive.google.com/uc?id=X", {}) == (
        "https://drive.google.com/uc?export=download&confirm=AbC1&id=X"
    )
    cookie = {"download_warning_123_X": "Tok9"}
    assert confirmation_url("<html></html>", "https://d/uc?id=X", cookie).endswith("&confirm=Tok9")
    with pytest.raises(TransferError, match="without a download form"):
        confirmation_url("<html><p>sign in</p></html>", "https://d/uc?id=X", {})


def test_cli_downloads_and_lists_the_recorded_sha256(
    server, tmp_path, official_bytes, tiny_release, monkeypatch, capsys
) -> None:
    from ml_backend.cli import main

    server.files["/plus.pt"] = official_bytes
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(tmp_path))
    url = f"{server.url}/plus.pt"
    assert main(["weights", "download", "unsamv2plus", "--url", url]) == 0
    assert (tmp_path / "weights" / "unsamv2_plus_ckpt.pt").read_bytes() == official_bytes
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    sha = hashlib.sha256(official_bytes).hexdigest()
    assert "yes" in rows["unsamv2_plus"] and f"sha256 {sha}" in rows["unsamv2_plus"]
    assert "unsamv2 weights download unsamv2 " in rows["unsamv2"] + " "

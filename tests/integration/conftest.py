"""Integration fixtures: checkpoint files of every kind, real Redis/PostgreSQL, child services."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch

from core_model.build import build_model
from core_model.checkpoint import is_granularity_key, official_state_dict

from helpers import ServiceProcess, free_port, missing_service, wait_for


def fresh_tiny(seed: int = 1234):
    torch.manual_seed(seed)
    return build_model("test-tiny")


@pytest.fixture
def official_checkpoint(tmp_path: Path) -> Path:
    """An official-layout file (original_layer + unmerged LoRA) with non-zero LoRA B."""
    model = fresh_tiny(7)
    state = official_state_dict(model, lora_rank=8, seed=3)
    generator = torch.Generator().manual_seed(11)
    for key in state:
        if key.endswith(".lora_B"):
            state[key] = torch.randn(state[key].shape, generator=generator) * 0.05
    path = tmp_path / "unsamv2_official.pt"
    torch.save({"model": state, "epoch": 5}, path)
    return path


@pytest.fixture
def sam2_checkpoint(tmp_path: Path) -> Path:
    """A plain SAM-2.1-style file: no granularity tensors, no LoRA."""
    model = fresh_tiny(5)
    state = {k: v for k, v in model.state_dict().items() if not is_granularity_key(k)}
    path = tmp_path / "sam2.1_tiny.pt"
    torch.save({"model": state}, path)
    return path


@pytest.fixture
def make_tiny():
    """Factory: `make_tiny(seed)` builds a fresh test-tiny model that a test may modify."""
    return fresh_tiny


# ----------------------------------------------------------------- services for integration


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (started and stopped by the test session)."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for(answers, 10, "redis-server")
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture
def postgres_url() -> str:
    """PostgreSQL URL given by CI (UNSAMV2_TEST_POSTGRES_URL), else skip."""
    url = os.environ.get("UNSAMV2_TEST_POSTGRES_URL")
    if not url:
        missing_service("UNSAMV2_TEST_POSTGRES_URL is not set (PostgreSQL)")
    return url


@pytest.fixture
def service_env(tmp_path: Path) -> dict[str, str]:
    """Environment for child services: a fresh data dir, embedded broker, one torch thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_STUDIO_"))}
    env.update(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
            "UNSAMV2_TORCH_THREADS": "1",
            "UNSAMV2_AUTO_DOWNLOAD": "false",  # no download from the internet in tests
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def start_service(tmp_path: Path):
    """Factory: start_service(args, env) -> ServiceProcess; all are stopped at teardown."""
    started: list[ServiceProcess] = []

    def start(args: list[str], env: dict[str, str]) -> ServiceProcess:
        service = ServiceProcess(args, env, tmp_path / f"{args[0]}-{len(started)}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real Label Studio 1.23 on 127.0.0.1 with a legacy API token: {"url", "token"}.

    Its executable comes from UNSAMV2_TEST_LABEL_STUDIO (a separate virtual environment).
    """
    executable = os.environ.get("UNSAMV2_TEST_LABEL_STUDIO")
    if not executable or not Path(executable).is_file():
        missing_service("UNSAMV2_TEST_LABEL_STUDIO does not point to a label-studio executable")
    data = tmp_path_factory.mktemp("label-studio")
    port, token = free_port(), secrets.token_hex(20)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_STUDIO"))},
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": "ci@example.com",
        "LABEL_STUDIO_PASSWORD": "ci-pass-123",
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
    }
    log = open(data / "ls.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [executable, "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/health", timeout=2).json().get("status") == "UP"
        except (requests.RequestException, ValueError):
            return process.poll() is not None

    wait_for(up, 180, "Label Studio to start", interval=1)
    assert process.poll() is None, (data / "ls.log").read_text()[-3000:]
    yield {"url": url, "token": token}
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()

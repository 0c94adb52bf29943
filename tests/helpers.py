"""Helpers shared by tests: waiting, free ports, child service processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = os.environ.get("UNSAMV2_REQUIRE_SERVICES") == "1"


def missing_service(reason: str) -> None:
    """Skip (developer machine) or fail (CI sets UNSAMV2_REQUIRE_SERVICES=1)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ServiceProcess:
    """A `python -m ml_backend.cli ...` child in its own session, its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ml_backend.cli", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: text in self.log() or self.process.poll() is not None, timeout, text)
        assert text in self.log(), f"process exited early:\n{self.log()[-3000:]}"

    def children(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)


def tiny_backend_env(
    tmp_path: Path,
    model: Any,
    *,
    port: int,
    auth: tuple[str, str],
    webhook_secret: str,
    label_studio: tuple[str, str],
    **extra: str,
) -> dict[str, str]:
    """Return the environment of a backend process serving `model` from a real checkpoint file.

    The process environment without any ``UNSAMV2_*``/``LABEL_STUDIO*`` variable, plus: data
    under `tmp_path`, the test-tiny model saved in the official format, the port, basic auth,
    the webhook secret, Label Studio's (url, token), one torch thread, and `extra`.
    """
    import torch

    from core_model.checkpoint import official_state_dict

    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(model)}, checkpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_STUDIO"))}
    env.update(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_PORT": str(port),
            "UNSAMV2_WEBHOOK_SECRET": webhook_secret,
            "UNSAMV2_BASIC_AUTH_USER": auth[0],
            "UNSAMV2_BASIC_AUTH_PASS": auth[1],
            "LABEL_STUDIO_URL": label_studio[0],
            "LABEL_STUDIO_API_KEY": label_studio[1],
            "UNSAMV2_TORCH_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


def in_process_backend(tmp_path: Path, env: dict[str, str]) -> tuple[Any, Any, Any]:
    """Build the Label Studio app in this process, serving test-tiny from a real checkpoint.

    The model has seeded random weights (seed 1234), saved in the official format under
    `tmp_path`; data goes under `tmp_path` too, with one torch thread. `env` adds or overrides
    settings. Returns (Flask app, store, model runtime), the runtime refreshed, not polling.
    """
    import torch

    from core_model.build import build_model
    from core_model.checkpoint import official_state_dict
    from labeling_pipeline.store import Store
    from ml_backend.label_studio.app import create_app
    from ml_backend.runtime import ModelRuntime
    from ml_backend.settings import Settings

    torch.manual_seed(1234)
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(build_model("test-tiny"))}, checkpoint)
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_TORCH_THREADS": "1",
            **env,
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    return app, store, runtime


def label_studio_caller(url: str, token: str) -> Callable[..., Any]:
    """Return ``call(method, path, **kwargs)`` for Label Studio's REST API at `url`.

    The call sends the token, asserts a status below 400 (naming the path and the body) and
    returns the JSON answer, or None for an empty one.
    """
    import requests

    api = requests.Session()
    api.headers["Authorization"] = f"Token {token}"

    def call(method: str, path: str, **kwargs: Any) -> Any:
        answer = api.request(method, f"{url}{path}", timeout=120, **kwargs)
        assert answer.status_code < 400, (
            f"{method} {path}: {answer.status_code} {answer.text[:500]}"
        )
        return answer.json() if answer.content else None

    return call


def backend_model_state(url: str, auth: tuple[str, str] | None) -> str | None:
    """Return the model state a backend's ``/health`` reports, or None if it does not answer."""
    import requests

    try:
        return str(requests.get(f"{url}/health", auth=auth, timeout=2).json()["model"]["state"])
    except (requests.RequestException, ValueError, KeyError):
        return None


@contextmanager
def running_backend(
    env: dict[str, str],
    url: str,
    log_dir: Path,
    *,
    auth: tuple[str, str] | None,
    worker: bool = False,
) -> Iterator[None]:
    """Run ``unsamv2 serve`` (and a worker) with `env`; wait until its model is ready; stop both.

    Logs go to ``serve.log`` and ``worker.log`` in `log_dir`.
    """
    services = [ServiceProcess(["serve"], env, log_dir / "serve.log")]
    if worker:
        services.append(ServiceProcess(["worker"], env, log_dir / "worker.log"))
    try:
        wait_for(
            lambda: backend_model_state(url, auth) == "ready",
            90,
            "the backend's model",
            interval=0.3,
        )
        yield
    finally:
        for service in services:
            service.stop()


def ls_connect(project_id: int, backend_url: str, env: dict[str, str], *extra: str) -> str:
    """Run ``unsamv2 ls-connect`` for a Label Studio project, assert success, return its output."""
    command = [sys.executable, "-m", "ml_backend.cli", "ls-connect", "--ls-project"]
    command += [str(project_id), "--backend-url", backend_url, *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout

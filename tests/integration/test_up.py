"""`unsamv2 up`: backend, worker and beat start, /health answers, Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal

import requests

from helpers import free_port, wait_for


def test_up_starts_answers_health_and_stops_cleanly(service_env, start_service) -> None:
    port = free_port()
    service_env["UNSAMV2_PORT"] = str(port)
    up = start_service(["up"], service_env)

    def health():
        try:
            body = requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
        except requests.RequestException:
            return None
        return body if body["model"]["state"] != "loading" else None

    body = wait_for(health, 90, "/health of `unsamv2 up`", interval=0.3)
    assert body["status"] == "UP"
    model = body["model"]  # no checkpoint anywhere: the backend says so and why
    assert model["state"] == "unavailable" and "UNSAMV2_CHECKPOINT" in model["reason"]
    up.wait_log("ready", timeout=60)  # the worker
    children = up.children()
    assert len(children) == 3
    up.process.send_signal(signal.SIGINT)  # what Ctrl-C delivers
    assert up.process.wait(60) == 0
    for pid in children:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"child {pid} still runs after `unsamv2 up` stopped")
    assert "Warm shutdown" in up.log()

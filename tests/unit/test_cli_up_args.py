"""`unsamv2 up --host --port` and `serve --host --port`: parsed and passed to the backend."""

from __future__ import annotations

import pytest

from ml_backend.cli import build_parser
from ml_backend.cli.services import backend_address
from ml_backend.settings import Settings


@pytest.mark.parametrize("command", ["up", "serve"])
def test_host_and_port_override_the_settings(command: str) -> None:
    settings = Settings.from_env({"UNSAMV2_HOST": "127.0.0.1", "UNSAMV2_PORT": "9090"})
    args = build_parser().parse_args([command, "--host", "0.0.0.0", "--port", "9191"])
    assert backend_address(args, settings) == ("0.0.0.0", 9191)
    plain = build_parser().parse_args([command])
    assert backend_address(plain, settings) == ("127.0.0.1", 9090)


@pytest.mark.parametrize("port", ["0", "70000", "http", "-1"])
def test_a_bad_port_is_refused_by_the_parser(port: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["up", "--port", port])
    assert stop.value.code == 2
    assert "a port is an integer from 1 to 65535" in capsys.readouterr().err

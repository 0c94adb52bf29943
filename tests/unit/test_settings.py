from __future__ import annotations

from pathlib import Path

import pytest

from ml_backend.settings import Settings, SettingsError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.pipeline.data_dir == Path("data")
    assert settings.pipeline.broker_url is None  # embedded broker
    assert settings.pipeline.resolved_database_url.startswith("sqlite:///")
    assert settings.pipeline.resolved_database_url.endswith("data/unsamv2.sqlite3")
    assert (settings.host, settings.port, settings.basic_auth) == ("127.0.0.1", 9090, None)


def test_values_are_read_and_converted(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path),
            "UNSAMV2_BROKER_URL": "redis://127.0.0.1:6379/0",
            "UNSAMV2_CHECKPOINT": str(tmp_path / "x.pt"),
            "UNSAMV2_PORT": "9191",
            "UNSAMV2_BASIC_AUTH_USER": "u",
            "UNSAMV2_BASIC_AUTH_PASS": "s3cret-pass",
            "UNSAMV2_ALLOWED_IMAGE_HOSTS": "a.example, b.example",
            "UNSAMV2_ALLOW_PRIVATE_NETWORKS": "yes",
            "UNSAMV2_DEFAULT_GRANULARITY": "0.3",
            "LABEL_STUDIO_URL": "http://ls:8080",
            "UNSAMV2_TORCH_THREADS": "2",
        }
    )
    assert settings.pipeline.data_dir == tmp_path
    assert settings.pipeline.checkpoint == tmp_path / "x.pt"
    assert settings.port == 9191 and settings.basic_auth == ("u", "s3cret-pass")
    assert settings.allowed_image_hosts == {"a.example", "b.example"}
    assert settings.allow_private_networks and settings.default_granularity == 0.3
    assert settings.pipeline.label_studio_url == "http://ls:8080"
    assert settings.pipeline.torch_threads == 2
    assert "s3cret-pass" not in repr(settings)  # secrets stay out of logs


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"UNSAMV2_PORT": "http"}, "UNSAMV2_PORT"),
        ({"UNSAMV2_PORT": "70000"}, "UNSAMV2_PORT"),
        ({"UNSAMV2_DEFAULT_GRANULARITY": "1.5"}, "UNSAMV2_DEFAULT_GRANULARITY"),
        ({"UNSAMV2_DEFAULT_GRANULARITY": "nan"}, "UNSAMV2_DEFAULT_GRANULARITY"),
        ({"UNSAMV2_ALLOW_PRIVATE_NETWORKS": "maybe"}, "UNSAMV2_ALLOW_PRIVATE_NETWORKS"),
        ({"UNSAMV2_BASIC_AUTH_USER": "u"}, "UNSAMV2_BASIC_AUTH_PASS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)

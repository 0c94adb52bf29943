"""Server-side request forgery through /setup and /predict, replayed against the backend.

A canary server on 127.0.0.1 records every connection; no request below may reach it. Fake
Label Studio and image servers also listen on 127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from request_backend import assert_clear_error, build_backend, click, interactive_body
from ssrf_servers import (
    LOOPBACK_FORMS,
    SECRET_BODY,
    LocalServer,
    body,
    cut_off_chunked,
    drip,
    png_bytes,
    redirect,
    truncated_jpeg,
)

from ml_backend.label_studio.context import BackendContext
from ml_backend.settings import Settings

CANARY_PATH = "/latest/meta-data/iam"


@pytest.fixture(scope="module")
def canary() -> Iterator[LocalServer]:
    with LocalServer({CANARY_PATH: body(b"role-credentials")}).running() as server:
        yield server


@pytest.fixture(autouse=True)
def _canary_stays_silent(canary: LocalServer) -> Iterator[None]:
    before = (canary.connections, len(canary.hits))
    yield
    assert (canary.connections, len(canary.hits)) == before, canary.hits


@pytest.fixture(scope="module")
def label_studios(canary: LocalServer) -> Iterator[tuple[LocalServer, LocalServer]]:
    """Two fake Label Studio servers serving different images under the same path."""
    first = LocalServer(
        {
            "/data/upload/1/x.png": body(png_bytes((250, 0, 0))),
            "/data/upload/1/redirect.png": redirect(f"{canary.url}{CANARY_PATH}"),
        }
    )
    second = LocalServer({"/data/upload/1/x.png": body(png_bytes((0, 0, 250)))})
    with first.running(), second.running():
        yield first, second


@pytest.fixture(scope="module")
def images() -> Iterator[LocalServer]:
    routes = {
        "/img.png": body(png_bytes()),
        "/truncated.jpg": body(truncated_jpeg(), content_type="image/jpeg"),
        "/drip.png": drip(total=40, every_s=0.5),
        "/cut.png": cut_off_chunked(),
    }
    with LocalServer(routes).running() as server:
        yield server


@pytest.fixture(scope="module")
def default_backend(tmp_path_factory, tiny_model) -> Any:
    """Default settings: no basic auth, no Label Studio URL, no allowed image hosts."""
    app, _ = build_backend(tmp_path_factory.mktemp("ssrf-default"), tiny_model)
    return app.test_client()


@pytest.fixture(scope="module")
def open_backend(tmp_path_factory, tiny_model) -> Any:
    """Every image host allowed; private addresses refused (the default)."""
    folder = tmp_path_factory.mktemp("ssrf-open")
    app, _ = build_backend(folder, tiny_model, UNSAMV2_ALLOWED_IMAGE_HOSTS="*")
    return app.test_client()


@pytest.fixture(scope="module")
def ls_backend(tmp_path_factory, tiny_model, label_studios, images) -> Any:
    """Two allowed Label Studio hosts; one image server allowed by host:port; short deadline."""
    first, second = label_studios
    folder = tmp_path_factory.mktemp("ssrf-ls")
    app, _ = build_backend(
        folder,
        tiny_model,
        UNSAMV2_LABEL_STUDIO_HOSTS=f"127.0.0.1:{first.port}, http://127.0.0.1:{second.port}",
        UNSAMV2_ALLOWED_IMAGE_HOSTS=f"127.0.0.1:{images.port}",
        UNSAMV2_ALLOW_PRIVATE_NETWORKS="true",
        UNSAMV2_FETCH_TIMEOUT_S="1.5",
    )
    return app.test_client(), folder


def setup(client: Any, hostname: str, token: str = "x") -> None:
    answer = client.post(
        "/setup", json={"project": "1.1", "hostname": hostname, "access_token": token}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def predict(client: Any, image_url: str) -> Any:
    task = {"id": 5, "data": {"image": image_url}, "drafts": [{"user": 3, "result": []}]}
    return client.post("/predict", json=interactive_body([click()], task=task))


def assert_refused(answer: Any, *forbidden: str) -> str:
    message = assert_clear_error(answer, 422)
    text = answer.get_data(as_text=True)
    for word in (SECRET_BODY, "role-credentials", "Token x", *forbidden):
        assert word not in text, text
    return message


def test_the_reported_setup_and_predict_replay_is_refused(
    default_backend: Any, canary: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ml_backend.label_studio.context"):
        setup(default_backend, canary.url)
    assert "ignoring /setup hostname" in caplog.text
    message = assert_refused(predict(default_backend, f"{canary.url}{CANARY_PATH}"))
    assert "not in the allowed image hosts" in message
    relative = assert_refused(predict(default_backend, CANARY_PATH))
    assert "no Label Studio is configured" in relative


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
def test_setup_cannot_name_a_label_studio_host(
    default_backend: Any, canary: LocalServer, host: str
) -> None:
    setup(default_backend, f"http://{host}:{canary.port}")
    assert_refused(predict(default_backend, CANARY_PATH))
    assert_refused(predict(default_backend, f"http://{host}:{canary.port}{CANARY_PATH}"))


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
def test_image_urls_to_local_addresses_are_refused(
    open_backend: Any, canary: LocalServer, host: str
) -> None:
    message = assert_refused(predict(open_backend, f"http://{host}:{canary.port}{CANARY_PATH}"))
    assert "private or reserved" in message


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1:{port}/_x", "ftp://127.0.0.1:{port}/x"]
)
def test_other_schemes_are_refused(open_backend: Any, canary: LocalServer, url: str) -> None:
    assert_refused(predict(open_backend, url.format(port=canary.port)), "root:")


def test_a_host_change_does_not_serve_the_previous_hosts_image(
    ls_backend: Any, label_studios: tuple[LocalServer, LocalServer]
) -> None:
    client, _ = ls_backend
    first, second = label_studios
    setup(client, first.url, "tok-1")
    assert predict(client, "/data/upload/1/x.png").status_code == 200
    setup(client, second.url, "tok-2")
    assert predict(client, "/data/upload/1/x.png").status_code == 200
    assert [h[2].get("Authorization") for h in second.hits] == ["Token tok-2"]
    assert all(h[2].get("Authorization") == "Token tok-1" for h in first.hits)
    # an unknown host leaves the allowed one in place, and its cached image is still used
    setup(client, "http://127.0.0.1:1", "tok-3")
    assert predict(client, "/data/upload/1/x.png").status_code == 200
    assert len(second.hits) == 1


def test_label_studio_redirects_are_checked(
    ls_backend: Any, label_studios: tuple[LocalServer, LocalServer]
) -> None:
    client, _ = ls_backend
    first, _ = label_studios
    setup(client, first.url, "tok-1")
    message = assert_refused(predict(client, "/data/upload/1/redirect.png"))
    assert "not in the allowed image hosts" in message
    missing = assert_refused(predict(client, "/data/upload/1/none.png"))
    assert "answered 404" in missing


def test_an_allowed_image_host_with_a_port_allows_that_port_only(
    ls_backend: Any, images: LocalServer, canary: LocalServer
) -> None:
    client, _ = ls_backend
    assert predict(client, f"{images.url}/img.png").status_code == 200
    wrong_port = assert_refused(predict(client, f"{canary.url}/img.png"))
    assert "not in the allowed image hosts" in wrong_port


def test_slow_and_cut_off_downloads_are_422(ls_backend: Any, images: LocalServer) -> None:
    client, _ = ls_backend
    started = time.monotonic()
    slow = assert_refused(predict(client, f"{images.url}/drip.png"))
    assert "longer than 1.5 s" in slow
    assert time.monotonic() - started < 10  # the drip lasts 20 s; loose bound
    cut = assert_refused(predict(client, f"{images.url}/cut.png"))
    assert "ended early" in cut


def test_a_broken_image_error_names_no_server_path(ls_backend: Any, images: LocalServer) -> None:
    client, folder = ls_backend
    answer = predict(client, f"{images.url}/truncated.jpg")
    message = assert_clear_error(answer, 422)
    assert "truncated" in message, message
    assert str(folder) not in message and "/images/" not in message, message


def context_for(tmp_path: Any, **env: str) -> BackendContext:
    """A backend context without model or store (only /setup's Label Studio rules are used)."""
    settings = Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path), **env})
    return BackendContext(settings=settings, runtime=None, store=None)  # type: ignore[arg-type]


def authorization(context: BackendContext) -> tuple[str, str] | None:
    client = context.ls_client()
    return None if client is None else (client.base_url, client._authorization())


def test_setup_token_is_used_only_with_an_allowed_host_and_no_configured_key(tmp_path) -> None:
    url_only = context_for(tmp_path, LABEL_STUDIO_URL="http://ls.example.com:8080")
    url_only.remember_label_studio("http://ls.example.com:9999", "t")
    assert authorization(url_only) is None
    url_only.remember_label_studio("http://LS.example.com:8080/", "t")
    assert authorization(url_only) == ("http://LS.example.com:8080", "Token t")

    key_only = context_for(
        tmp_path, LABEL_STUDIO_API_KEY="k", UNSAMV2_LABEL_STUDIO_HOSTS="ls.example.com"
    )
    key_only.remember_label_studio("https://ls.example.com", "t")
    assert authorization(key_only) == ("https://ls.example.com", "Token k")
    key_only.remember_label_studio("https://ls.example.com.evil.test", "t")
    assert authorization(key_only) == ("https://ls.example.com", "Token k")

    configured = context_for(
        tmp_path, LABEL_STUDIO_URL="http://ls.example.com:8080", LABEL_STUDIO_API_KEY="k"
    )
    configured.remember_label_studio("http://127.0.0.1:8080", "t")
    assert authorization(configured) == ("http://ls.example.com:8080", "Token k")

"""Guarded downloads without the web app: address forms, schemes, ports, redirects, deadline.

Every case points at a canary server on 127.0.0.1 that records every connection; a refused
fetch must not reach it at all. Names are resolved by a test resolver (numeric forms and a few
names mapped to loopback), so no lookup leaves the machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from ssrf_servers import (
    LOOPBACK_FORMS,
    SECRET_BODY,
    LocalServer,
    body,
    cut_off_chunked,
    cut_off_length,
    drip,
    drip_headers,
    png_bytes,
    redirect,
)

from labeling_pipeline.label_studio import lookup
from labeling_pipeline.label_studio.client import LabelStudioClient, LabelStudioError
from labeling_pipeline.label_studio.fetch import FetchPolicy, ImageFetchError, fetch_task_image
from labeling_pipeline.label_studio.fetch_rules import (
    HostEntry,
    is_blocked_address,
    parse_host_entry,
)
from ml_backend.settings import Settings, SettingsError

# more spellings and names that reach this machine, at the fetch level
HOST_FORMS = [
    *LOOPBACK_FORMS,
    "LOCALHOST",
    "app.localhost",
    "rebound.test",  # a DNS name that resolves to loopback (test resolver)
    "mixed.test",  # one public and one loopback address
]
NAMES = {"rebound.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "127.0.0.1"]}


def resolver(host: str, port: int) -> Sequence[str]:
    """Numeric forms as the C library reads them; a few test names; anything else fails."""
    if host in NAMES:
        return NAMES[host]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    return [str(info[4][0]) for info in infos]


@pytest.fixture
def canary() -> Iterator[LocalServer]:
    with LocalServer({"/latest/meta-data/iam": body(b"role-credentials")}).running() as server:
        yield server


@pytest.fixture
def images() -> Iterator[LocalServer]:
    server = LocalServer(
        {
            "/img.png": body(png_bytes()),
            "/drip": drip(total=40, every_s=0.5),
            "/drip-headers": drip_headers(every_s=0.5),
            "/cut-chunked": cut_off_chunked(),
            "/cut-length": cut_off_length(),
            "/loop": redirect("/loop"),
        }
    )
    with server.running():
        yield server


def open_policy(**changes: object) -> FetchPolicy:
    """Any host name allowed; private addresses refused."""
    return FetchPolicy(allowed_hosts=frozenset({"*"}), resolver=resolver, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", HOST_FORMS)
def test_image_urls_to_local_addresses_are_refused(host: str, canary: LocalServer) -> None:
    url = f"http://{host}:{canary.port}/latest/meta-data/iam"
    with pytest.raises(ImageFetchError, match="private or reserved") as refused:
        fetch_task_image(url, client=None, policy=open_policy())
    assert "role-credentials" not in str(refused.value)
    assert not canary.reached()


@pytest.mark.parametrize("host", HOST_FORMS)
def test_label_studio_redirects_to_local_addresses_are_refused(
    host: str, canary: LocalServer
) -> None:
    target = f"http://{host}:{canary.port}/latest/meta-data/iam"
    label_studio = LocalServer({"/data/upload/1/x.png": redirect(target)})
    with label_studio.running():
        client = LabelStudioClient(label_studio.url, "tok")
        with pytest.raises(ImageFetchError, match="private or reserved|not in the allowed"):
            fetch_task_image("/data/upload/1/x.png", client=client, policy=open_policy())
    assert len(label_studio.hits) == 1
    assert not canary.reached()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "gopher://127.0.0.1:{port}/_GET%20/",
        "ftp://127.0.0.1:{port}/x.png",
        "dict://127.0.0.1:{port}/info",
        "data:text/plain,hello",
        "jar:http://127.0.0.1:{port}/x.jar!/x.png",
        "http:///x.png",
        "http://127.0.0.1:99999/x.png",
    ],
)
def test_other_schemes_and_malformed_urls_are_refused(url: str, canary: LocalServer) -> None:
    with pytest.raises(ImageFetchError):
        fetch_task_image(url.format(port=canary.port), client=None, policy=open_policy())
    assert not canary.reached()


def test_an_allowed_host_with_a_port_allows_that_port_only(
    images: LocalServer, canary: LocalServer
) -> None:
    policy = FetchPolicy(
        allowed_hosts=frozenset({f"127.0.0.1:{images.port}"}), allow_private_networks=True
    )
    assert fetch_task_image(f"{images.url}/img.png", client=None, policy=policy) == png_bytes()
    with pytest.raises(ImageFetchError, match="not in the allowed"):
        fetch_task_image(f"{canary.url}/latest/meta-data/iam", client=None, policy=policy)
    assert not canary.reached()


def test_host_entries() -> None:
    assert parse_host_entry("Images.Example.com") == HostEntry("images.example.com", None)
    assert parse_host_entry("https://ls.example.com/") == HostEntry("ls.example.com", 443)
    assert parse_host_entry("ls.example.com:8080") == HostEntry("ls.example.com", 8080)
    assert parse_host_entry("[::1]:8080") == HostEntry("::1", 8080)
    wildcard = parse_host_entry("*.example.com")
    assert wildcard.matches("a.example.com", 443) and not wildcard.matches("example.com", 443)
    assert not wildcard.matches("evil-example.com", 443)
    with pytest.raises(ImageFetchError, match="port"):
        parse_host_entry("host:http")


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("100.64.0.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("64:ff9b::7f00:1", True),
        ("fe80::1%eth0", True),
        ("fd00::1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)
def test_address_ranges(address: str, blocked: bool) -> None:
    assert is_blocked_address(address) is blocked


def test_redirects_are_checked_with_the_same_rules(
    images: LocalServer, canary: LocalServer
) -> None:
    policy = FetchPolicy(
        allowed_hosts=frozenset({f"127.0.0.1:{images.port}"}), allow_private_networks=True
    )
    images.routes["/to-canary"] = redirect(f"{canary.url}/latest/meta-data/iam")
    images.routes["/to-file"] = redirect("file:///etc/passwd")
    images.routes["/to-self"] = redirect("/img.png", 307)
    assert fetch_task_image(f"{images.url}/to-self", client=None, policy=policy) == png_bytes()
    with pytest.raises(ImageFetchError, match="not in the allowed"):
        fetch_task_image(f"{images.url}/to-canary", client=None, policy=policy)
    with pytest.raises(ImageFetchError, match="scheme"):
        fetch_task_image(f"{images.url}/to-file", client=None, policy=policy)
    with pytest.raises(ImageFetchError, match="redirects"):
        fetch_task_image(f"{images.url}/loop", client=None, policy=policy)
    assert not canary.reached()


def test_label_studio_sends_its_token_to_its_own_origin_only(images: LocalServer) -> None:
    label_studio = LocalServer(
        {
            "/data/upload/1/x.png": redirect("/data/upload/1/y.png"),
            "/data/upload/1/y.png": body(png_bytes((1, 2, 3))),
            "/data/upload/1/ext.png": redirect(f"{images.url}/img.png"),
        }
    )
    policy = FetchPolicy(
        allowed_hosts=frozenset({f"127.0.0.1:{images.port}"}), allow_private_networks=True
    )
    with label_studio.running():
        client = LabelStudioClient(label_studio.url, "tok")
        same = fetch_task_image("/data/upload/1/x.png", client=client, policy=policy)
        other = fetch_task_image("/data/upload/1/ext.png", client=client, policy=policy)
    assert same == png_bytes((1, 2, 3)) and other == png_bytes()
    assert [h[2].get("Authorization") for h in label_studio.hits] == ["Token tok"] * 3
    assert [h[2].get("Authorization") for h in images.hits] == [None]


def test_remote_bodies_are_never_echoed(images: LocalServer, canary: LocalServer) -> None:
    policy = FetchPolicy(
        allowed_hosts=frozenset({f"127.0.0.1:{images.port}"}), allow_private_networks=True
    )
    with pytest.raises(ImageFetchError, match="answered 404") as image_error:
        fetch_task_image(f"{images.url}/missing.png", client=None, policy=policy)
    client = LabelStudioClient(images.url, "tok")
    with pytest.raises(ImageFetchError, match="answered 404") as download_error:
        fetch_task_image("/data/upload/missing.png", client=client, policy=policy)
    with pytest.raises(LabelStudioError, match="answered 404") as api_error:
        client.get_json("/api/projects/1")
    for error in (image_error, download_error, api_error):
        assert SECRET_BODY not in str(error.value)
    images.routes["/api/projects/2"] = redirect(f"{canary.url}/latest/meta-data/iam")
    with pytest.raises(LabelStudioError, match="another host"):
        client.get_json("/api/projects/2")
    assert not canary.reached()


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_a_slow_server_is_cut_at_the_deadline(images: LocalServer, path: str) -> None:
    policy = FetchPolicy(
        allowed_hosts=frozenset({"127.0.0.1"}), allow_private_networks=True, deadline_s=1.0
    )
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="longer than 1 s"):
        fetch_task_image(f"{images.url}{path}", client=None, policy=policy)
    # the drip would take 20 s; loose bound, shared machines are slow
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("path", ["/cut-chunked", "/cut-length"])
def test_a_cut_off_body_is_a_fetch_error(images: LocalServer, path: str) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), allow_private_networks=True)
    with pytest.raises(ImageFetchError, match="ended early") as error:
        fetch_task_image(f"{images.url}{path}", client=None, policy=policy)
    assert "\n" not in str(error.value)


def test_connection_refused_is_a_fetch_error(canary: LocalServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        policy = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), allow_private_networks=True)
        with pytest.raises(ImageFetchError, match="connection failed"):
            fetch_task_image(f"http://127.0.0.1:{port}/x.png", client=None, policy=policy)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"UNSAMV2_ALLOWED_IMAGE_HOSTS": "images.example.com:http"}, "UNSAMV2_ALLOWED_IMAGE_HOSTS"),
        ({"UNSAMV2_LABEL_STUDIO_HOSTS": "ls.example.com, :8080"}, "UNSAMV2_LABEL_STUDIO_HOSTS"),
        ({"UNSAMV2_LABEL_STUDIO_HOSTS": "*"}, "'\\*' is not accepted"),
        ({"UNSAMV2_FETCH_TIMEOUT_S": "0"}, "UNSAMV2_FETCH_TIMEOUT_S"),
    ],
)
def test_bad_fetch_settings_stop_the_process(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env(env)


def test_fetch_settings() -> None:
    settings = Settings.from_env(
        {"UNSAMV2_LABEL_STUDIO_HOSTS": "ls.example.com:8080", "UNSAMV2_FETCH_TIMEOUT_S": "5"}
    )
    assert settings.label_studio_hosts == frozenset({"ls.example.com:8080"})
    assert settings.pipeline.fetch_timeout_s == 5.0
    assert Settings.from_env({}).pipeline.fetch_timeout_s == 30.0


def test_the_connection_goes_to_the_address_that_was_checked(images: LocalServer) -> None:
    looked_up: list[str] = []

    def resolve_once(host: str, port: int) -> Sequence[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    policy = FetchPolicy(
        allowed_hosts=frozenset({"images.test"}),
        allow_private_networks=True,
        resolver=resolve_once,
    )
    url = f"http://images.test:{images.port}/img.png"
    assert fetch_task_image(url, client=None, policy=policy) == png_bytes()
    # one lookup, and the system resolver (which does not know images.test) was never asked
    assert looked_up == ["images.test"]
    assert images.hits[-1][2]["Host"] == f"images.test:{images.port}"


def test_a_name_lookup_that_never_answers_is_cut_at_the_deadline() -> None:
    release = threading.Event()

    def stuck_resolver(host: str, port: int) -> Sequence[str]:
        release.wait(30)  # a name server that does not answer
        return ["93.184.216.34"]

    policy = FetchPolicy(allowed_hosts=frozenset({"*"}), resolver=stuck_resolver, deadline_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ImageFetchError, match="longer than 0.5 s"):
            fetch_task_image("http://stuck.test/img.png", client=None, policy=policy)
        assert time.monotonic() - started < 10  # loose bound; without the cut: 30 s
        # stuck lookups hold their threads: past the bound, a new lookup is refused at once
        for _ in range(lookup.MAX_LOOKUPS):
            with contextlib.suppress(ImageFetchError):
                fetch_task_image("http://stuck.test/img.png", client=None, policy=policy)
        with pytest.raises(ImageFetchError, match="too many host lookups"):
            fetch_task_image("http://stuck.test/img.png", client=None, policy=policy)
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the threads end once the resolver answers
        if lookup._slots.acquire(blocking=False):
            lookup._slots.release()
            break
        time.sleep(0.05)
    with pytest.raises(ImageFetchError, match="private or reserved"):  # lookups work again
        fetch_task_image("http://rebound.test/img.png", client=None, policy=open_policy())

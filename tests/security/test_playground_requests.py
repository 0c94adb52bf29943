"""Hostile and malformed requests to the playground routes: always a clear 4xx, never a file
outside the picker's list, never a page or mask without basic auth.

The fuzz runs are derandomized and small (the tiny model decodes a sweep in tens of ms).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playground_app import HEADERS, build_playground_app, png_bytes, scene
from request_backend import assert_clear_error
from test_fuzz_routes import FUZZ, RAW_BODIES, check, mutations

AUTH = {"Authorization": "Basic cGxheTpwdw=="}  # play:pw
ROUTES = [
    ("GET", "/playground"),
    ("GET", "/playground/static/playground.js"),
    ("GET", "/playground/files"),
    ("GET", "/playground/images/" + "0" * 64),
    ("POST", "/playground/upload"),
    ("POST", "/playground/open"),
    ("POST", "/playground/task"),
    ("POST", "/playground/sweep"),
    ("POST", "/playground/whole"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model):
    return build_playground_app(
        tmp_path_factory.mktemp("playground"),
        tiny_model,
        UNSAMV2_BASIC_AUTH_USER="play",
        UNSAMV2_BASIC_AUTH_PASS="pw",
        UNSAMV2_MAX_REQUEST_BYTES=str(64 * 1024),
        UNSAMV2_MAX_IMAGE_PIXELS=str(200 * 200),
        UNSAMV2_PREANNOTATE_DEADLINE_S="0.5",
    )


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def image_id(client) -> str:
    answer = client.post("/playground/open", json={"name": "scene.png"}, headers=_h())
    assert answer.status_code == 200, answer.get_json()
    return str(answer.get_json()["image"])


def _h(**extra: str) -> dict[str, str]:
    return {**AUTH, **HEADERS, **extra}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_basic_auth(client, method: str, path: str) -> None:
    answer = client.open(path, method=method, json={}, headers=HEADERS)
    assert answer.status_code == 401 and "WWW-Authenticate" in answer.headers
    wrong = client.open(
        path, method=method, json={}, headers={**HEADERS, "Authorization": "Basic cGxheTp4"}
    )
    assert wrong.status_code == 401
    assert_clear_error(wrong, 401)


def test_posts_without_the_page_header_are_refused(client, image_id: str) -> None:
    body = {"image": image_id, "points": [{"x": 5, "y": 5}]}
    answer = client.post("/playground/sweep", json=body, headers=AUTH)
    assert "X-UnSAMv2-Playground" in assert_clear_error(answer, 400)
    form = client.post(
        "/playground/upload",
        data={"image": (io.BytesIO(png_bytes(scene())), "a.png")},
        headers=AUTH,
    )
    assert_clear_error(form, 400)


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[]", '"text"', "null", "", '{"image": ' * 300 + "1" + "}" * 300],
)
def test_bad_json_is_a_clear_400(client, raw: str) -> None:
    for path in ("/playground/sweep", "/playground/whole", "/playground/open", "/playground/task"):
        answer = client.post(path, data=raw, content_type="application/json", headers=_h())
        assert_clear_error(answer, 400)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "0.05", "1.5", '"0.5"', "true"])
def test_bad_granularities_are_refused(client, image_id: str, value: str) -> None:
    sweep = f'{{"image": "{image_id}", "points": [{{"x": 5, "y": 5}}], "granularities": [{value}]}}'
    whole = f'{{"image": "{image_id}", "granularity": {value}}}'
    for path, raw in (("/playground/sweep", sweep), ("/playground/whole", whole)):
        answer = client.post(path, data=raw, content_type="application/json", headers=_h())
        assert "granularit" in assert_clear_error(answer, 400)


@pytest.mark.parametrize(
    ("x", "y"), [(-1, 5), (5, -0.5), (128.5, 5), (5, 96.01), (1e300, 5), ("NaN", 5)]
)
def test_points_outside_the_image_are_refused(client, image_id: str, x, y) -> None:
    raw = f'{{"image": "{image_id}", "points": [{{"x": {x}, "y": {y}, "label": 1}}]}}'
    answer = client.post(
        "/playground/sweep", data=raw, content_type="application/json", headers=_h()
    )
    assert_clear_error(answer, 400)


def test_too_many_points_and_steps_are_refused(client, image_id: str) -> None:
    many = [{"x": 1, "y": 1}] * 101
    answer = client.post(
        "/playground/sweep", json={"image": image_id, "points": many}, headers=_h()
    )
    assert_clear_error(answer, 400)
    steps = [0.5] * 21
    body = {"image": image_id, "points": many[:1], "granularities": steps}
    assert_clear_error(client.post("/playground/sweep", json=body, headers=_h()), 400)
    grid = {"image": image_id, "granularity": 0.5, "points_per_side": 17}
    assert_clear_error(client.post("/playground/whole", json=grid, headers=_h()), 400)


def test_unknown_images_are_404(client) -> None:
    body = {"image": "f" * 64, "points": [{"x": 1, "y": 1}]}
    assert_clear_error(client.post("/playground/sweep", json=body, headers=_h()), 404)
    for image in ("f" * 64, "../../../etc/passwd", "..%2f..%2fsecret.png", "F" * 64):
        answer = client.get(f"/playground/images/{image}", headers=AUTH)
        assert answer.status_code == 404
    bad_id = {"image": "../" + "a" * 61, "points": [{"x": 1, "y": 1}]}
    assert_clear_error(client.post("/playground/sweep", json=bad_id, headers=_h()), 400)


@pytest.mark.parametrize(
    "name",
    [
        "../secret.png",
        "..",
        "/etc/passwd",
        "sub/inner.png",
        "sub",
        ".hidden.png",
        "link.png",
        "notes.txt",
        "scene.png\x00.txt",
        "./scene.png",
        "scene.png/",
        "%2e%2e/secret.png",
        "SCENE.PNG",
    ],
)
def test_picker_opens_listed_names_only(client, name: str) -> None:
    answer = client.post("/playground/open", json={"name": name}, headers=_h())
    assert_clear_error(answer, 404)


def test_picker_lists_no_decoys(client) -> None:
    assert client.get("/playground/files", headers=AUTH).get_json() == {"files": ["scene.png"]}


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height, with no pixel data (a 'bomb')."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"", 422),
        (b"GIF89a not really", 422),
        (png_bytes(scene())[:200], 422),  # truncated
        (_png_header_only(100_000, 100_000), 422),  # more pixels than the limit
        (png_bytes(scene().repeat(3, axis=0).repeat(2, axis=1)), 422),  # 288 x 256 > 200 x 200
        (b"\x00" * (80 * 1024), 413),  # larger than UNSAMV2_MAX_REQUEST_BYTES
    ],
)
def test_broken_and_huge_uploads_are_refused(client, payload: bytes, status: int) -> None:
    answer = client.post(
        "/playground/upload", data={"image": (io.BytesIO(payload), "x.png")}, headers=_h()
    )
    assert_clear_error(answer, status)


def test_upload_without_the_file_field(client) -> None:
    answer = client.post("/playground/upload", data={"other": "x"}, headers=_h())
    assert "'image'" in assert_clear_error(answer, 400)


def test_task_without_label_studio_is_a_clear_400(client) -> None:
    answer = client.post("/playground/task", json={"task": 3}, headers=_h())
    assert "LABEL_STUDIO_URL" in assert_clear_error(answer, 400)
    for task in (-1, 2**63, "3", 1.5, None):
        assert_clear_error(client.post("/playground/task", json={"task": task}, headers=_h()), 400)


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_fuzzed_bodies_never_break_the_routes(client, image_id: str, data) -> None:
    sweep = {"image": image_id, "points": [{"x": 60, "y": 40, "label": 1}], "granularities": [0.3]}
    whole = {"image": image_id, "granularity": 0.5, "points_per_side": 2}
    path, template = data.draw(
        st.sampled_from(
            [
                ("/playground/sweep", sweep),
                ("/playground/whole", whole),
                ("/playground/open", {"name": "scene.png"}),
                ("/playground/task", {"task": 1}),
            ]
        )
    )
    body = data.draw(mutations(template))
    check(client.post(path, data=json.dumps(body), content_type="application/json", headers=_h()))
    raw = data.draw(RAW_BODIES)
    check(client.post(path, data=raw, content_type="application/json", headers=_h()))


def test_folder_outside_symlink_target_is_never_served(app, client) -> None:
    folder = Path(app.extensions["unsamv2"].settings.playground_dir)
    assert (folder / "link.png").resolve().parent != folder.resolve()
    files = client.get("/playground/files", headers=AUTH).get_json()["files"]
    assert "link.png" not in files

"""Image fetching policy and Label Studio annotation conversion."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core_model.masks import decode_coco_rle, encode_brush_rle
from labeling_pipeline.label_studio.annotations import annotation_masks
from labeling_pipeline.label_studio.fetch import FetchPolicy, ImageFetchError, fetch_task_image
from labeling_pipeline.store.images import cache_image_bytes


def png_bytes(size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Images(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
            return
        body = png_bytes() if self.path == "/img.png" else b"x" * 5000
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def image_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_http_fetch_needs_an_allowed_host_and_a_public_address(image_server: str) -> None:
    url = f"{image_server}/img.png"
    with pytest.raises(ImageFetchError, match="not in the allowed"):
        fetch_task_image(url, client=None, policy=FetchPolicy())
    with pytest.raises(ImageFetchError, match="private or reserved"):
        fetch_task_image(
            url, client=None, policy=FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}))
        )
    allowed = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), allow_private_networks=True)
    assert fetch_task_image(url, client=None, policy=allowed) == png_bytes()
    small = FetchPolicy(
        allowed_hosts=frozenset({"127.0.0.1"}), allow_private_networks=True, max_bytes=1000
    )
    with pytest.raises(ImageFetchError, match="larger"):
        fetch_task_image(f"{image_server}/big", client=None, policy=small)


def test_redirects_are_checked_again(image_server: str) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}), allow_private_networks=True)
    with pytest.raises(ImageFetchError, match="not in the allowed"):
        fetch_task_image(f"{image_server}/redirect", client=None, policy=policy)


def test_local_files_stay_inside_their_root(tmp_path: Path) -> None:
    root = tmp_path / "files"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(png_bytes())
    (tmp_path / "secret.txt").write_text("no")
    policy = FetchPolicy(local_files_root=root)
    assert (
        fetch_task_image("/data/local-files/?d=a/x.png", client=None, policy=policy) == png_bytes()
    )
    with pytest.raises(ImageFetchError, match="outside"):
        fetch_task_image("/data/local-files/?d=../secret.txt", client=None, policy=policy)
    with pytest.raises(ImageFetchError, match="does not exist"):
        fetch_task_image("/data/local-files/?d=a/none.png", client=None, policy=policy)


def test_data_uris_and_unsupported_schemes() -> None:
    uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert fetch_task_image(uri, client=None, policy=FetchPolicy()) == png_bytes()
    with pytest.raises(ImageFetchError, match="scheme"):
        fetch_task_image("s3://bucket/x.png", client=None, policy=FetchPolicy())
    with pytest.raises(ImageFetchError, match="no Label Studio"):
        fetch_task_image("/data/upload/1/x.png", client=None, policy=FetchPolicy())


def test_image_cache_is_content_addressed(tmp_path: Path) -> None:
    first = cache_image_bytes(png_bytes(), tmp_path)
    second = cache_image_bytes(png_bytes(), tmp_path)
    assert first == second and first.path.read_bytes() == png_bytes()
    assert (first.width, first.height) == (8, 6)


def _brush(mask: np.ndarray, region: str, label: str) -> dict:
    h, w = mask.shape
    return {
        "id": region,
        "type": "brushlabels",
        "from_name": "mask",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "value": {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": [label]},
    }


def test_annotation_brush_regions_become_coco_masks() -> None:
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True
    results = [
        _brush(mask, "a1", "Car"),
        {"id": "k", "type": "keypointlabels", "value": {"x": 1, "y": 2}},
        _brush(np.zeros((6, 8), bool), "empty", "Car"),
        {**_brush(mask, "bad", "Car"), "original_width": 9},
        {**_brush(mask, "nosize", "Car"), "original_height": None},
    ]
    converted = annotation_masks(results, granularities={"a1": 0.3})
    assert [m.region_id for m in converted.masks] == ["a1"]
    record = converted.masks[0]
    assert (record.label, record.area, record.granularity) == ("Car", 12, 0.3)
    np.testing.assert_array_equal(decode_coco_rle(record.rle), mask)
    assert len(converted.problems) == 3

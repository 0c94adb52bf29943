"""CVAT's Nuclio-dashboard calls against the backend, in-process, with a tiny real model.

Requests are built the way CVAT's lambda manager builds them (headers, payload keys, base64
frame), and answers are read back the way CVAT reads them: the listing is parsed with CVAT's
rules, masks are run-length encoded as CVAT does and decoded with `cvat_sdk.masks.decode_mask`.
The helpers here are shared with the Nuclio tests.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from cvat_sdk.masks import decode_mask
from cvat_ui import interaction_step
from PIL import Image
from werkzeug.serving import make_server

from core_model.checkpoint import official_state_dict
from core_model.types import Prompts
from core_model.whole_image import WholeImageConfig
from labeling_pipeline.store import Store
from ml_backend.cvat.service import CvatOptions
from ml_backend.label_studio.app import create_app
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

# Settings that let a random-weight tiny model produce several masks, fast
TEST_DETECTOR = WholeImageConfig(
    points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
)
OPEN_FILTERS = {"pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1}
# the presets as UNSAMV2_CVAT_PRESETS JSON: "fine" as TEST_DETECTOR, "whole" with a 3 x 3 grid
# decoded at two granularities
TEST_PRESETS = json.dumps(
    [
        {"name": "fine", "granularity": 0.2, "points_per_side": 4, **OPEN_FILTERS},
        {
            "name": "whole",
            "granularity": 1.0,
            "points_per_side": 3,
            "granularities": [0.5, 1.0],
            **OPEN_FILTERS,
        },
    ]
)

# ----------------------------------------------------------------- how CVAT talks and reads


def cvat_headers(function: str | None = None) -> dict[str, str]:
    """Headers of CVAT's LambdaGateway._http (plus the function header of an invocation)."""
    headers = {
        "x-nuclio-project-name": "cvat",
        "x-nuclio-function-namespace": "nuclio",
        "x-nuclio-invoke-via": "domain-name",
        "X-Nuclio-Invoke-Timeout": "120s",
    }
    if function is not None:
        headers.update({"x-nuclio-function-name": function, "x-nuclio-path": "/"})
    return headers


def frame_b64(image: np.ndarray, fmt: str = "PNG") -> str:
    """A frame as CVAT sends it: the file's bytes, base64."""
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format=fmt)
    return base64.b64encode(stream.getvalue()).decode("utf-8")


def interactor_payload(image, pos, neg=(), box=None) -> dict[str, Any]:
    return {
        "image": frame_b64(image),
        "pos_points": [list(p) for p in pos],
        "neg_points": [list(p) for p in neg],
        "obj_bbox": box,
    }


def parse_like_cvat(entry: dict[str, Any]) -> dict[str, Any]:
    """Restate how CVAT's LambdaFunction reads a listing entry (fails where CVAT would)."""
    anno = entry["metadata"]["annotations"]
    assert anno.get("type") in {"detector", "interactor", "tracker", "reid"}
    spec = json.loads(anno.get("spec") or "[]")
    names = [label["name"] for label in spec]
    assert len(names) == len(set(names)), "CVAT rejects non-unique labels"
    return {
        "id": entry["metadata"]["name"],
        "kind": anno["type"],
        "labels": [(label["name"], label.get("type", "unknown")) for label in spec],
        "description": entry["spec"]["description"],
        "state": entry["status"]["state"],
        "name": anno.get("name", entry["metadata"]["name"]),
        "version": int(anno.get("version", "1")),
        "min_pos_points": int(anno.get("min_pos_points", 1)),
        "min_neg_points": int(anno.get("min_neg_points", -1)),
        "startswith_box": bool(anno.get("startswith_box", False)),
        "startswith_box_optional": bool(anno.get("startswith_box_optional", False)),
        "annotations": anno,
    }


def runs(values) -> list[int]:
    """Run lengths of 0/1 values, starting with a (possibly empty) background run, as CVAT."""
    flat = np.asarray(values).reshape(-1) != 0
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    lengths = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + lengths


def interactor_mask(reply: dict[str, Any], height: int, width: int) -> np.ndarray:
    """What the CVAT UI makes of an interactor reply: RLE of the rows plus the bounds."""
    return decode_mask(
        runs(reply["mask"]) + list(reply["bounds"]), image_width=width, image_height=height
    )


def detector_mask(shape: dict[str, Any], height: int, width: int) -> np.ndarray:
    """What CVAT's _call_detector stores for a mask shape: RLE of the values plus the corners."""
    *values, xtl, ytl, xbr, ybr = shape["mask"]
    points = runs(values) + [xtl, ytl, xbr, ybr]
    return decode_mask(points, image_width=width, image_height=height)


# ----------------------------------------------------------------- the backend


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    """The shared tiny model as an official-format checkpoint file (read, not modified)."""
    path = tmp_path_factory.mktemp("cvat-model") / "tiny.pt"
    torch.save({"model": official_state_dict(tiny_model)}, path)
    return path


@pytest.fixture(scope="module")
def backend(tmp_path_factory, checkpoint):
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path_factory.mktemp("cvat-backend")),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_MAX_IMAGE_PIXELS": "20000",
            "UNSAMV2_CVAT_PRESETS": TEST_PRESETS,
            "UNSAMV2_BASIC_AUTH_USER": "cvat",
            "UNSAMV2_BASIC_AUTH_PASS": "p@ss word",
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    # no deadline: tests compare with complete runs
    app.extensions["unsamv2.cvat"].options = CvatOptions(
        max_image_pixels=settings.max_image_pixels, whole_image=WholeImageConfig(max_masks=100)
    )
    return app, runtime


@pytest.fixture
def client(backend):
    app, _ = backend
    client = app.test_client()
    auth = base64.b64encode(b"cvat:p@ss word").decode()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Basic {auth}"
    return client


def invoke(client, function: str, payload: dict[str, Any]):
    return client.post("/api/function_invocations", json=payload, headers=cvat_headers(function))


# ----------------------------------------------------------------- listing


def test_listing_parses_as_cvat_parses_it(client) -> None:
    answer = client.get("/api/functions", headers=cvat_headers())
    assert answer.status_code == 200
    listing = answer.get_json()
    assert list(listing) == [
        "unsamv2-interactor-fine",
        "unsamv2-interactor-whole",
        "unsamv2-detector-fine",
        "unsamv2-detector-whole",
        "unsamv2-tracker-fine",
        "unsamv2-tracker-whole",
    ]
    parsed = {name: parse_like_cvat(entry) for name, entry in listing.items()}
    for name, function in parsed.items():
        assert function["id"] == name and function["state"] == "ready"
        assert all(isinstance(v, str) for v in function["annotations"].values())
        assert "false" not in {v.lower() for v in function["annotations"].values()}
    fine = parsed["unsamv2-interactor-fine"]
    assert fine["kind"] == "interactor" and fine["version"] >= 2
    assert (fine["min_pos_points"], fine["min_neg_points"]) == (0, 0)
    assert fine["startswith_box_optional"] and not fine["startswith_box"]
    assert "0.2" in fine["name"] and "granularity 0.2" in fine["description"]
    whole = parsed["unsamv2-detector-whole"]
    assert whole["kind"] == "detector" and whole["labels"] == [("object", "mask")]
    assert "granularity 1" in whole["description"]
    one = client.get("/api/functions/unsamv2-detector-whole", headers=cvat_headers())
    assert one.get_json() == listing["unsamv2-detector-whole"]


def test_unknown_function_and_missing_header(client) -> None:
    missing = client.get("/api/functions/unsamv2-interactor-coarse")
    assert missing.status_code == 404
    assert "unsamv2-interactor-fine" in missing.get_json()["error"]
    no_header = client.post("/api/function_invocations", json={"image": "x"})
    assert (
        no_header.status_code == 400 and "x-nuclio-function-name" in no_header.get_json()["error"]
    )
    unknown = invoke(client, "pth-facebookresearch-sam-vit-h", {"image": "x"})
    assert unknown.status_code == 404 and unknown.get_json()["type"] == "UnknownFunctionError"


# ----------------------------------------------------------------- interactor


def test_interactor_mask_matches_the_model_and_reuses_the_embedding(
    client, backend, scene_image
) -> None:
    _, runtime = backend
    predictor = runtime.predictor()
    payload = interactor_payload(scene_image, pos=[(50.5, 40.0)], neg=[(5.0, 90.0)])
    answer = invoke(client, "unsamv2-interactor-fine", payload)
    assert answer.status_code == 200, answer.get_json()
    reply = answer.get_json()
    assert set(reply) <= {"mask", "bounds", "points", "message"}
    interaction_step(reply)  # CVAT's UI handles it
    got = interactor_mask(reply, 96, 128)
    expected = predictor.predict(
        predictor.embed(scene_image),
        Prompts.from_arrays([[50.5, 40.0], [5.0, 90.0]], [1, 0]),
        granularity=0.2,
    ).masks[0]
    assert np.array_equal(got, expected)
    if expected.any():
        assert "message" not in reply
        assert np.array(reply["mask"]).shape == (
            reply["bounds"][3] - reply["bounds"][1] + 1,
            reply["bounds"][2] - reply["bounds"][0] + 1,
        )
    # a follow-up click on the same frame (a box this time): no new image embedding
    before = predictor.cache.stats()
    boxed = interactor_payload(scene_image, pos=[], box=[[80, 60], [20, 15]])
    again = invoke(client, "unsamv2-interactor-whole", boxed)
    after = predictor.cache.stats()
    assert again.status_code == 200 and (after.misses, after.hits) == (
        before.misses,
        before.hits + 1,
    )
    expected_box = predictor.predict(
        predictor.embed(scene_image), Prompts.from_arrays(box=[20, 15, 80, 60]), granularity=1.0
    ).masks[0]
    assert np.array_equal(interactor_mask(again.get_json(), 96, 128), expected_box)


BAD_INTERACTOR_REQUESTS = [
    ({"image": None, "pos_points": [[1, 1]], "neg_points": []}, 400, "no 'image'"),
    ({"image": "%%%", "pos_points": [[1, 1]], "neg_points": []}, 400, "base64"),
    (
        {"image": base64.b64encode(b"GIF89a broken").decode(), "pos_points": [[1, 1]]},
        422,
        "cannot decode",
    ),
    ({"pos_points": [[500, 10]], "neg_points": []}, 400, "outside the 128x96 image"),
    ({"pos_points": [["a", 1]], "neg_points": []}, 400, "pos_points"),
    ({"pos_points": [], "neg_points": [], "obj_bbox": None}, 400, "prompts are empty"),
]


def test_bad_interactor_requests_get_clear_json_errors(client, scene_image) -> None:
    for payload, status, message in BAD_INTERACTOR_REQUESTS:
        body = {"image": frame_b64(scene_image), **payload}
        answer = invoke(client, "unsamv2-interactor-fine", body)
        assert answer.status_code == status, payload
        assert message in answer.get_json()["error"]
        assert "Traceback" not in answer.get_data(as_text=True)


def test_images_over_the_pixel_limit_are_refused(client) -> None:
    large = np.zeros((150, 150, 3), dtype=np.uint8)  # 22500 > UNSAMV2_MAX_IMAGE_PIXELS
    answer = invoke(client, "unsamv2-interactor-fine", interactor_payload(large, pos=[(5, 5)]))
    assert answer.status_code == 422 and "more than the limit 20000" in answer.get_json()["error"]


def test_no_model_yet_is_503_and_listed_as_building(tmp_path) -> None:
    settings = Settings.from_env(
        {"UNSAMV2_DATA_DIR": str(tmp_path / "data"), "UNSAMV2_MODEL": "test-tiny"}
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    client = create_app(settings, runtime=runtime, store=store, start_runtime=False).test_client()
    listing = client.get("/api/functions").get_json()
    assert {entry["status"]["state"] for entry in listing.values()} == {"building"}
    frame = np.zeros((8, 8, 3), dtype=np.uint8)  # a valid request: only the model is missing
    answer = invoke(client, "unsamv2-interactor-part", interactor_payload(frame, pos=[(1, 1)]))
    assert answer.status_code == 503 and "model unavailable" in answer.get_json()["error"]


# ----------------------------------------------------------------- detector


def test_detector_shapes_decode_to_the_segmenter_masks(client, backend, scene_image) -> None:
    from core_model.whole_image import WholeImageSegmenter

    _, runtime = backend
    predictor = runtime.predictor()
    frame = frame_b64(scene_image)
    everything = invoke(client, "unsamv2-detector-fine", {"image": frame}).get_json()
    expected = WholeImageSegmenter(predictor, TEST_DETECTOR).segment(
        scene_image, granularities=(0.2,)
    )
    assert len(everything) == len(expected) > 0
    for shape, generated in zip(everything, expected, strict=True):
        assert (shape["label"], shape["type"]) == ("object", "mask")
        assert np.array_equal(detector_mask(shape, 96, 128), generated.mask)
        assert float(shape["confidence"]) == pytest.approx(generated.score, abs=0.005)
        polygon = np.array(shape["points"]).reshape(-1, 2)
        assert len(polygon) >= 3 and (polygon >= 0).all()
    # CVAT sends the threshold only when it is set: masks below it are dropped
    cut = sorted(g.score for g in expected)[len(expected) // 2]
    kept = invoke(client, "unsamv2-detector-fine", {"image": frame, "threshold": cut}).get_json()
    assert 0 < len(kept) == sum(g.score >= cut for g in expected) < len(expected)
    assert all(float(s["confidence"]) >= round(cut, 2) for s in kept)
    bad = invoke(client, "unsamv2-detector-fine", {"image": frame, "threshold": "most"})
    assert bad.status_code == 400 and "threshold" in bad.get_json()["error"]


# ----------------------------------------------------------------- auth, over real HTTP


@pytest.fixture(scope="module")
def server(backend) -> Iterator[str]:
    app, _ = backend
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(5)


def test_basic_auth_applies_and_cvat_can_carry_it_in_its_nuclio_host(server, scene_image) -> None:
    # CVAT builds "{CVAT_NUCLIO_SCHEME}://{CVAT_NUCLIO_HOST}:{CVAT_NUCLIO_PORT}" and calls it with
    # requests, which sends URL credentials as basic auth; special characters are %-encoded
    host, port = server.rsplit(":", 1)
    anonymous = requests.get(f"http://{host}:{port}/api/functions", timeout=10)
    assert anonymous.status_code == 401
    gateway = f"http://cvat:p%40ss%20word@{host}:{port}"
    with requests.Session() as session:
        listing = session.request(
            "get", f"{gateway}/api/functions", headers=cvat_headers(), timeout=10
        )
        assert listing.status_code == 200 and "unsamv2-detector-whole" in listing.json()
        reply = session.request(
            "post",
            f"{gateway}/api/function_invocations",
            headers=cvat_headers("unsamv2-interactor-fine"),
            json=interactor_payload(scene_image, pos=[(50, 40)]),
            timeout=30,
        )
    reply.raise_for_status()
    assert interactor_mask(reply.json(), 96, 128).shape == (96, 128)

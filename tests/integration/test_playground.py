"""Playground routes with the tiny model: page, picker, sweep, whole image, CLI, Label Studio."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from playground_app import HEADERS, IMAGE_HW, build_playground_app, png_bytes, scene

from core_model.masks.coco import decode_coco_rle
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts
from ml_backend.cli import main
from ml_backend.playground.schemas import DEFAULT_SWEEP


@pytest.fixture
def client(tmp_path: Path, tiny_model):
    return build_playground_app(tmp_path, tiny_model).test_client()


def test_page_and_its_files_are_served_locked_down(client) -> None:
    page = client.get("/playground")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'id="granularity"' in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    script = client.get("/playground/static/playground.js")
    assert script.status_code == 200 and b"decodeRle" in script.data


def test_picker_lists_only_plain_images_inside_the_folder(client) -> None:
    assert client.get("/playground/files").get_json() == {"files": ["scene.png"]}


def test_sweep_is_one_decoder_call_and_matches_the_predictor(
    client, tiny_model, monkeypatch
) -> None:
    opened = client.post("/playground/open", json={"name": "scene.png"}, headers=HEADERS)
    assert opened.status_code == 200, opened.get_json()
    info = opened.get_json()
    assert (info["height"], info["width"]) == IMAGE_HW and info["name"] == "scene.png"
    pixels = client.get(f"/playground/images/{info['image']}")
    assert pixels.mimetype == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(pixels.data))), scene())

    calls: list[int] = []
    original = GranularityPredictor.decode

    def counting(self, embedding, coords, labels, granularities, **kwargs):
        calls.append(len(granularities))
        return original(self, embedding, coords, labels, granularities, **kwargs)

    monkeypatch.setattr(GranularityPredictor, "decode", counting)
    points = [{"x": 60, "y": 45, "label": 1}, {"x": 10.5, "y": 90, "label": 0}]
    answer = client.post(
        "/playground/sweep", json={"image": info["image"], "points": points}, headers=HEADERS
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert calls == [len(DEFAULT_SWEEP)]  # the whole sweep in one batched decoder call

    expected = GranularityPredictor(tiny_model).predict_many(
        GranularityPredictor(tiny_model).embed(scene()),
        Prompts.from_arrays([[60, 45], [10.5, 90]], [1, 0]),
        DEFAULT_SWEEP,
    )
    assert [m["granularity"] for m in body["masks"]] == list(DEFAULT_SWEEP)
    for mask, want, score in zip(body["masks"], expected.masks, expected.scores, strict=True):
        decoded = decode_coco_rle(mask["rle"])
        assert np.array_equal(decoded, want)
        assert mask["area"] == int(want.sum())
        assert mask["score"] == pytest.approx(float(score), abs=1e-4)


def test_upload_then_whole_image_view(client) -> None:
    upload = client.post(
        "/playground/upload",
        data={"image": (io.BytesIO(png_bytes(scene())), "../../etc/my scene.png")},
        headers=HEADERS,
    )
    assert upload.status_code == 200, upload.get_json()
    info = upload.get_json()
    assert info["name"] == "my scene.png"  # the last component only
    body = {
        "image": info["image"],
        "granularity": 0.8,
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    answer = client.post("/playground/whole", json=body, headers=HEADERS)
    assert answer.status_code == 200, answer.get_json()
    whole = answer.get_json()
    assert whole["complete"] and 1 <= len(whole["masks"]) <= 16
    for mask in whole["masks"]:
        assert decode_coco_rle(mask["rle"]).shape == IMAGE_HW
    scores = [m["score"] for m in whole["masks"]]
    assert scores == sorted(scores, reverse=True)


def test_cli_refuses_missing_images(tmp_path: Path, capsys) -> None:
    assert main(["playground", str(tmp_path / "nope.png")]) == 2
    assert "not a file" in capsys.readouterr().err


def test_label_studio_task_opens_through_the_client(
    label_studio, tmp_path: Path, tiny_model
) -> None:
    api = requests.Session()
    api.headers["Authorization"] = f"Token {label_studio['token']}"
    url = label_studio["url"]
    config = '<View><Image name="image" value="$image"/></View>'
    project = api.post(
        f"{url}/api/projects", json={"title": "playground", "label_config": config}, timeout=60
    ).json()
    imported = api.post(
        f"{url}/api/projects/{project['id']}/import?return_task_ids=true",
        files={"file": ("scene.png", png_bytes(scene()), "image/png")},
        timeout=60,
    ).json()
    client = build_playground_app(
        tmp_path, tiny_model, LABEL_STUDIO_URL=url, LABEL_STUDIO_API_KEY=label_studio["token"]
    ).test_client()
    answer = client.post(
        "/playground/task", json={"task": imported["task_ids"][0]}, headers=HEADERS
    )
    assert answer.status_code == 200, answer.get_json()
    info = answer.get_json()
    assert (info["height"], info["width"]) == IMAGE_HW
    pixels = client.get(f"/playground/images/{info['image']}")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(pixels.data))), scene())
    missing = client.post("/playground/task", json={"task": 987654}, headers=HEADERS)
    assert missing.status_code == 502 and "404" in missing.get_json()["error"]

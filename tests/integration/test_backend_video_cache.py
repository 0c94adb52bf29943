"""Video tracking through /predict downloads a task's video once for several requests.

Set up as in ``test_backend_video``: a tiny random model from a real official-format checkpoint,
a small MPEG-4 clip served by an HTTP server on 127.0.0.1 (an allowed image host).
"""

from __future__ import annotations

import pytest
from video_clips import FileServer, write_clip

from labeling_pipeline.label_studio.fetch import fetch_task_image
from ml_backend.label_studio import video_predict

from helpers import in_process_backend

VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="Car"/></Labels>
  <Video name="video" value="$video" frameRate="10"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""
SIZE_HW = (96, 128)


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_clip(folder / "clip.mp4", frames=6, size_hw=SIZE_HW, fps=10.0)
    clip = (folder / "clip.mp4").read_bytes()
    with FileServer({"/clip.mp4": clip}).running() as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _, _ = in_process_backend(
        tmp_path_factory.mktemp("backend"),
        {
            "UNSAMV2_ALLOWED_IMAGE_HOSTS": "127.0.0.1",
            "UNSAMV2_ALLOW_PRIVATE_NETWORKS": "true",
            "UNSAMV2_MAX_VIDEO_BYTES": str(64 * 1024),
            "UNSAMV2_VIDEO_MAX_FRAMES": "1",
            "UNSAMV2_VIDEO_CACHE_MB": "1",
        },
    )
    return app


def keyframe(label: str = "Car") -> dict:
    return {
        "id": "trk1",
        "type": "videorectangle",
        "from_name": "box",
        "to_name": "video",
        "origin": "manual",
        "value": {
            "framesCount": 6,
            "duration": 0.6,
            "labels": [label],
            "sequence": [
                {
                    "frame": 1,
                    "enabled": True,
                    "rotation": 0,
                    "x": 20,
                    "y": 20,
                    "width": 30,
                    "height": 40,
                    "time": 0.0,
                }
            ],
        },
    }


def predict(client, url: str):
    return client.post(
        "/predict",
        json={
            "tasks": [{"id": 5, "data": {"video": url}}],
            "project": "8.1700000000",
            "label_config": VIDEO_CONFIG,
            "params": {"context": {"result": [keyframe()]}},
        },
    )


def test_two_predictions_on_one_video_fetch_it_once(app, clip_server, monkeypatch) -> None:
    fetched: list[str] = []

    def spy(url, **kwargs):  # a spy: records the call and runs the real guarded fetch
        fetched.append(url)
        return fetch_task_image(url, **kwargs)

    monkeypatch.setattr(video_predict, "fetch_task_image", spy)
    client = app.test_client()
    url = f"{clip_server.url}/clip.mp4"
    for _ in range(2):  # e.g. two label changes of a box in the same clip
        answer = predict(client, url)
        assert answer.status_code == 200, answer.get_json()
        (entry,) = answer.get_json()["results"]
        assert entry["result"][0]["type"] == "videorectangle"
    assert fetched == [url]
    assert clip_server.hits == ["/clip.mp4"]

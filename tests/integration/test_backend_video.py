"""Video tracking through /predict in-process, with requests shaped as Label Studio sends them.

A tiny random model serves from a real official-format checkpoint file; task videos are small
MPEG-4 clips served by an HTTP server on 127.0.0.1 (an allowed image host). Random weights
track nothing in particular, so the tests check the protocol: which frames come back, in which
shape, with which limits and errors, not where the boxes are.
"""

from __future__ import annotations

import types

import pytest
from video_clips import FileServer, write_clip

from labeling_pipeline.store.models import PredictionRecord
from ml_backend.label_studio import video_tracking
from ml_backend.settings import Settings

from helpers import in_process_backend

VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video">
    <Label value="Car" level="0.7"/><Label value="Person"/>
  </Labels>
  <Video name="video" value="$video" frameRate="10"/>
  <VideoRectangle name="box" toName="video"/>
  <Number name="granularity" toName="video" perRegion="true" min="0.1" max="1.0"/>
</View>"""
SIZE_HW = (96, 128)
MAX_VIDEO_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    boxes = write_clip(folder / "clip.mp4", frames=8, size_hw=SIZE_HW, fps=10.0)
    write_clip(folder / "large.mp4", frames=2, size_hw=(160, 200))  # over the pixel limit
    clip = (folder / "clip.mp4").read_bytes()
    files = {
        "/clip.mp4": clip,
        "/truncated.mp4": clip[: len(clip) // 2],
        "/not-a-video.mp4": b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,
        "/huge.mp4": b"\x00" * (MAX_VIDEO_BYTES + 1),
        "/large.mp4": (folder / "large.mp4").read_bytes(),
    }
    with FileServer(files).running() as server:
        yield server, boxes


@pytest.fixture(scope="module")
def backend(tmp_path_factory, clips):
    return in_process_backend(
        tmp_path_factory.mktemp("backend"),
        {
            "UNSAMV2_ALLOWED_IMAGE_HOSTS": "127.0.0.1",
            "UNSAMV2_ALLOW_PRIVATE_NETWORKS": "true",
            "UNSAMV2_MAX_VIDEO_BYTES": str(MAX_VIDEO_BYTES),
            "UNSAMV2_MAX_IMAGE_PIXELS": "20000",  # 96 x 128 passes, 160 x 200 does not
            "UNSAMV2_VIDEO_MAX_FRAMES": "2",
            "UNSAMV2_DEFAULT_GRANULARITY": "0.6",
        },
    )


def keyframe_region(box_px, frame: int = 2, region_id: str = "trk1", label: str = "Car"):
    x0, y0, x1, y1 = box_px
    height, width = SIZE_HW
    return {
        "id": region_id,
        "type": "videorectangle",
        "from_name": "box",
        "to_name": "video",
        "origin": "manual",
        "value": {
            "framesCount": 8,
            "duration": 0.8,
            "labels": [label],
            "sequence": [
                {
                    "frame": frame,
                    "enabled": True,
                    "rotation": 0,
                    "x": 100 * x0 / width,
                    "y": 100 * y0 / height,
                    "width": 100 * (x1 - x0) / width,
                    "height": 100 * (y1 - y0) / height,
                    "time": frame / 10,
                }
            ],
        },
    }


def predict(client, server, results=None, *, path="/clip.mp4", tasks=None):
    params = {"login": None, "password": None, "context": None}
    if results is not None:
        params["context"] = {"result": results}
    task = {"id": 21, "data": {"video": f"{server.url}{path}"}, "drafts": [{"user": 3}]}
    return client.post(
        "/predict",
        json={
            "tasks": tasks or [task],
            "project": "31.1700000000",
            "label_config": VIDEO_CONFIG,
            "params": params,
        },
    )


def test_interactive_keyframe_is_tracked_as_a_videorectangle_sequence(backend, clips) -> None:
    app, store, runtime = backend
    server, boxes = clips
    slider = {"id": "trk1", "type": "number", "from_name": "granularity", "value": {"number": 0.4}}
    answer = predict(app.test_client(), server, [keyframe_region(boxes[1]), slider])
    assert answer.status_code == 200, answer.get_json()
    (entry,) = answer.get_json()["results"]
    assert entry["model_version"] == runtime.model_version  # not partial: the frame limit
    (result,) = entry["result"]
    assert (result["id"], result["type"]) == ("trk1", "videorectangle")
    assert (result["from_name"], result["to_name"]) == ("box", "video")
    value = result["value"]
    assert (value["framesCount"], value["duration"], value["labels"]) == (8, 0.8, ["Car"])
    frames = [k["frame"] for k in value["sequence"]]
    assert frames[0] == 2 and set(frames) <= {2, 3, 4}  # keyframe + UNSAMV2_VIDEO_MAX_FRAMES
    first = value["sequence"][0]
    assert first["x"] == pytest.approx(100 * boxes[1][0] / 128, abs=1e-3)  # the drawn box
    assert value["sequence"][-1]["enabled"] is False  # cut off before the clip's end
    for key in value["sequence"]:
        assert key["time"] == pytest.approx(key["frame"] / 10)  # frameRate="10"
        assert 0 <= key["x"] <= 100 and 0 <= key["x"] + key["width"] <= 100 + 1e-6
        assert 0 <= key["y"] <= 100 and 0 <= key["y"] + key["height"] <= 100 + 1e-6
    assert 0.0 <= result["score"] <= 1.0
    with store.session() as session:
        record = session.query(PredictionRecord).filter_by(ls_task_id=21).one()
        assert (record.result_id, record.label, record.granularity) == ("trk1", "Car", 0.4)
    # a deletion notice (nothing to track) costs nothing
    empty = predict(app.test_client(), server, [])
    assert empty.status_code == 200 and empty.get_json() == {"results": []}


def test_without_context_the_latest_annotation_is_tracked(backend, clips, monkeypatch) -> None:
    app, store, runtime = backend
    server, boxes = clips
    # no time left after the first frame: the track is partial (deterministic clock)
    monkeypatch.setattr(video_tracking, "time", types.SimpleNamespace(monotonic=lambda: 1e18))
    annotated = {
        "id": 22,
        "data": {"video": f"{server.url}/clip.mp4"},
        "annotations": [
            {"id": 1, "result": [keyframe_region(boxes[0], frame=1, label="Person")]},
            {"id": 2, "was_cancelled": True, "result": [keyframe_region(boxes[4], frame=5)]},
        ],
    }
    bare = {"id": 23, "data": {"video": f"{server.url}/clip.mp4"}, "annotations": []}
    answer = predict(app.test_client(), server, tasks=[annotated, bare])
    assert answer.status_code == 200, answer.get_json()
    tracked, nothing = answer.get_json()["results"]
    assert "partial" in tracked["model_version"] and "partial" in nothing["model_version"]
    (result,) = tracked["result"]
    assert result["value"]["labels"] == ["Person"]  # the kept annotation, not the skipped one
    assert [k["frame"] for k in result["value"]["sequence"]] == [1]
    assert result["value"]["sequence"][0]["enabled"] is False
    assert nothing["result"] == []
    # no task with keyframes: no prediction at all
    assert predict(app.test_client(), server, tasks=[bare]).get_json() == {"results": []}


@pytest.mark.parametrize(
    ("path", "region_change", "status", "message"),
    [
        ("/not-a-video.mp4", {}, 422, ""),
        ("/truncated.mp4", {}, 422, ""),
        ("/huge.mp4", {}, 422, "larger than"),
        ("/large.mp4", {}, 422, "pixel"),
        ("/missing.mp4", {}, 422, "404"),
        ("/clip.mp4", {"frame": 30}, 400, "frame 29 does not exist"),
        ("/clip.mp4", {"enabled": False}, 400, "no enabled keyframe"),
        ("/clip.mp4", {"x": 150.0}, 400, "no area"),
    ],
)
def test_bad_videos_and_keyframes_are_one_line_errors(
    backend, clips, path, region_change, status, message
) -> None:
    app, _, _ = backend
    server, boxes = clips
    region = keyframe_region(boxes[1])
    region["value"]["sequence"][0].update(region_change)
    answer = predict(app.test_client(), server, [region], path=path)
    body = answer.get_json()
    assert answer.status_code == status, body
    assert message.lower() in body["error"].lower() and "\n" not in body["error"]
    assert "Traceback" not in body["error"]


def test_keyframes_beyond_the_frame_limit_and_tasks_without_video(backend, clips) -> None:
    app, _, _ = backend
    server, boxes = clips
    region = keyframe_region(boxes[1], frame=1)
    later = dict(region["value"]["sequence"][0], frame=6)
    region["value"]["sequence"].append(later)
    answer = predict(app.test_client(), server, [region])
    assert answer.status_code == 400 and "UNSAMV2_VIDEO_MAX_FRAMES" in answer.get_json()["error"]
    no_video = [{"id": 24, "data": {"image": "x.png"}}]
    answer = predict(app.test_client(), server, [keyframe_region(boxes[1])], tasks=no_video)
    assert answer.status_code == 400 and "data.video" in answer.get_json()["error"]


def test_settings_bound_video_work() -> None:
    settings = Settings.from_env(
        {"UNSAMV2_VIDEO_MAX_FRAMES": "12", "UNSAMV2_MAX_VIDEO_BYTES": "4096"}
    )
    assert (settings.video_max_frames, settings.max_video_bytes) == (12, 4096)
    assert Settings.from_env({}).video_deadline_s == 60.0

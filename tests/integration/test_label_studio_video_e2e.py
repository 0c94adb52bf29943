"""Video tracking end to end against a real Label Studio 1.23 (its own virtual environment).

Label Studio's executable comes from UNSAMV2_TEST_LABEL_STUDIO. The backend runs as `unsamv2
serve` with a tiny random model from a real checkpoint file. Steps: a project with a video
config, a small MPEG-4 clip uploaded as its task, the backend connected (`unsamv2 ls-connect`);
then the two ways a keyframe reaches the backend: an interactive request with the drawn
``videorectangle`` region (what the editor posts when a box is finished with Auto-Annotation
on), and "Retrieve predictions" on the task once an annotation with a keyframe box is saved.
Both must come back, and be stored by Label Studio, as ``videorectangle`` sequences.
"""

from __future__ import annotations

from video_clips import write_clip

from helpers import (
    free_port,
    label_studio_caller,
    ls_connect,
    running_backend,
    tiny_backend_env,
    wait_for,
)

AUTH = ("labelstudio", "e2e-video-pass")
VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video">
    <Label value="Car" level="0.7" background="#ff0000"/>
    <Label value="Person" background="#00ff00"/>
  </Labels>
  <Video name="video" value="$video" frameRate="10"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""


def keyframe_region(frame: int, label: str) -> dict:
    return {
        "id": f"kf{frame}",
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
                    "frame": frame,
                    "enabled": True,
                    "rotation": 0,
                    "x": 10.0,
                    "y": 30.0,
                    "width": 25.0,
                    "height": 30.0,
                    "time": frame / 10,
                }
            ],
        },
    }


def test_label_studio_video_tracking(label_studio, tmp_path, make_tiny) -> None:
    ls_url, token = label_studio["url"], label_studio["token"]
    call = label_studio_caller(ls_url, token)

    port = free_port()
    env = tiny_backend_env(
        tmp_path,
        make_tiny(),
        port=port,
        auth=AUTH,
        webhook_secret="e2e-video-secret",
        label_studio=(ls_url, token),
        UNSAMV2_VIDEO_MAX_FRAMES="1",
    )
    backend_url = f"http://127.0.0.1:{port}"
    with running_backend(env, backend_url, tmp_path, auth=AUTH):
        _run(call, env, backend_url, tmp_path)


def _run(call, env, backend_url, tmp_path) -> None:
    project = call(
        "POST", "/api/projects", json={"title": "unsamv2-video", "label_config": VIDEO_CONFIG}
    )
    write_clip(tmp_path / "clip.mp4", frames=6, size_hw=(96, 128), fps=10.0)
    imported = call(
        "POST",
        f"/api/projects/{project['id']}/import?return_task_ids=true",
        files={"file": ("clip.mp4", (tmp_path / "clip.mp4").read_bytes(), "video/mp4")},
    )
    task_id = imported["task_ids"][0]
    assert call("GET", f"/api/tasks/{task_id}")["data"]["video"].startswith("/data/upload/")
    ls_connect(project["id"], backend_url, env)
    ml = call("GET", f"/api/ml?project={project['id']}")[0]
    assert ml["state"] == "CO"

    # the editor's request when a box is finished on frame 2
    answer = call(
        "POST",
        f"/api/ml/{ml['id']}/interactive-annotating",
        json={"task": task_id, "context": {"result": [keyframe_region(2, "Car")]}},
    )
    assert "errors" not in answer, answer
    (result,) = answer["data"]["result"]
    assert (result["type"], result["id"], result["value"]["labels"]) == (
        "videorectangle",
        "kf2",
        ["Car"],
    )
    frames = [key["frame"] for key in result["value"]["sequence"]]
    assert frames[0] == 2 and set(frames) <= {2, 3}

    # a saved annotation with a keyframe, then "Retrieve predictions" on the task
    call(
        "POST", f"/api/tasks/{task_id}/annotations", json={"result": [keyframe_region(1, "Person")]}
    )
    call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
        json={"selectedItems": {"all": False, "included": [task_id]}},
    )

    def stored() -> list:
        return call("GET", f"/api/predictions?task={task_id}")

    (stored_prediction,) = wait_for(stored, 60, "Label Studio to store the prediction")
    (tracked,) = stored_prediction["result"]
    assert tracked["type"] == "videorectangle" and tracked["value"]["labels"] == ["Person"]
    sequence = tracked["value"]["sequence"]
    assert sequence[0]["frame"] == 1 and {key["frame"] for key in sequence} <= {1, 2}
    assert sequence[-1]["enabled"] is False  # cut off at UNSAMV2_VIDEO_MAX_FRAMES

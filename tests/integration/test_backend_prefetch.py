"""Opening a task prefetches its embedding; clicks queue in batches, bounded, over real HTTP.

A tiny random model serves from a checkpoint file; task images are local files served the way
Label Studio's local storage does. Prefetch is checked by the embedding cache's counters (a
first click that finds the embedding is a hit, not a miss), never by timing.
"""

from __future__ import annotations

import threading

import pytest
import requests
import torch
from PIL import Image

from core_model.checkpoint import official_state_dict
from labeling_pipeline.store import Store
from ml_backend.click_batcher import serving_door
from ml_backend.http_server import create_http_server
from ml_backend.label_studio.app import create_app
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.label_studio.prefetch_tasks import next_task_urls
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

from helpers import wait_for

CONFIG = shipped_config()
TASK = {"id": 5, "data": {"image": "/data/local-files/?d=scene.png"}}


@pytest.fixture
def backend(tmp_path, make_tiny, scene_image):
    def build(**env: str):
        checkpoint = tmp_path / "tiny.pt"
        torch.save({"model": official_state_dict(make_tiny())}, checkpoint)
        files = tmp_path / "files"
        files.mkdir(exist_ok=True)
        Image.fromarray(scene_image).save(files / "scene.png")
        settings = Settings.from_env(
            {
                "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
                "UNSAMV2_MODEL": "test-tiny",
                "UNSAMV2_CHECKPOINT": str(checkpoint),
                "UNSAMV2_LOCAL_FILES_ROOT": str(files),
                **env,
            }
        )
        store = Store(settings.pipeline.resolved_database_url)
        runtime = ModelRuntime(
            settings.pipeline, store=store, poll_s=0, door=serving_door(settings)
        )
        runtime.refresh()
        app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
        return app, runtime, settings

    return build


def _open(client_post, task=TASK):
    return client_post("/predict", json={"tasks": [task], "project": "3.1", "label_config": CONFIG})


def _click(client_post, task=TASK):
    keypoint = {
        "id": "k1",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 128,
        "original_height": 96,
        "is_positive": True,
        "value": {"x": 50, "y": 45, "width": 0.5, "keypointlabels": ["Car @0.5"]},
    }
    return client_post(
        "/predict",
        json={
            "tasks": [task],
            "project": "3.1",
            "label_config": CONFIG,
            "params": {"context": {"result": [keypoint]}},
        },
    )


def test_opening_a_task_prefetches_so_the_first_click_hits_the_cache(backend) -> None:
    app, runtime, _ = backend()
    client, context = app.test_client(), app.extensions["unsamv2"]
    assert _open(client.post).get_json() == {"results": []}
    assert context.prefetcher.wait_idle(30)
    cache = runtime.predictor().cache
    before = cache.stats()
    assert (before.misses, before.entries, context.prefetcher.stats().done) == (1, 1, 1)
    answer = _click(client.post)
    assert answer.status_code == 200 and answer.get_json()["results"][0]["result"]
    after = cache.stats()
    assert after.misses == 1 and after.hits == before.hits + 1  # the click found it ready


def test_a_click_during_the_prefetch_waits_for_it_instead_of_encoding_again(backend) -> None:
    app, runtime, _ = backend()
    client, context = app.test_client(), app.extensions["unsamv2"]
    resolve, release, loading = context.images.resolve, threading.Event(), threading.Event()

    def held_resolve(url, *, client):
        key, load = resolve(url, client=client)

        def held_load():
            loading.set()
            assert release.wait(30)
            return load()

        return key, held_load

    context.images.resolve = held_resolve
    _open(client.post)
    assert loading.wait(30)  # the prefetch owns the image's embedding run now
    answers: list[int] = []
    clicker = threading.Thread(target=lambda: answers.append(_click(client.post).status_code))
    clicker.start()
    cache = runtime.predictor().cache
    wait_for(lambda: cache.stats().coalesced == 1, 30, "the click waiting for the prefetch")
    release.set()
    clicker.join(30)
    assert answers == [200]
    stats = cache.stats()
    assert stats.misses == 1 and stats.entries == 1  # the encoder ran once


def test_prefetch_can_be_turned_off(backend) -> None:
    app, runtime, _ = backend(UNSAMV2_PREFETCH_WORKERS="0")
    _open(app.test_client().post)
    assert runtime.predictor().cache.stats().misses == 0


def test_past_the_click_bound_http_answers_503_with_retry_after(backend) -> None:
    app, runtime, settings = backend(UNSAMV2_MAX_QUEUED_REQUESTS="1")
    server = create_http_server(app, settings, "127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}"
    try:
        post = lambda path, json: requests.post(url + path, json=json, timeout=60)  # noqa: E731
        assert _click(post).status_code == 200  # embeds the image
        door = runtime.door
        door.acquire(door.decode_lane)  # the test holds the decoder
        codes: list[int] = []
        first = threading.Thread(target=lambda: codes.append(_click(post).status_code))
        first.start()
        wait_for(lambda: len(door.decode_lane.waiting) == 1, 30, "a batch waiting to decode")
        second = threading.Thread(target=lambda: codes.append(_click(post).status_code))
        second.start()
        wait_for(lambda: door.clicks.pending() == 1, 30, "one click in the queue")
        refused = _click(post)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        body = refused.json()
        assert "busy" in body["error"] and "\n" not in body["error"]
        assert "Traceback" not in refused.text
        door.decode_lane.release(0.0)
        first.join(30)
        second.join(30)
        assert codes == [200, 200]
    finally:
        server.close()


class _StubLabelStudio:
    """Stands in for Label Studio's task list API (a real Label Studio is too slow to start)."""

    def __init__(self, answer) -> None:
        self.answer, self.calls = answer, []

    def get_json(self, path, **params):
        self.calls.append((path, params))
        return self.answer


def test_next_tasks_are_listed_after_the_opened_one() -> None:
    stub = _StubLabelStudio(
        {
            "tasks": [
                {"id": 6, "data": {"image": "/data/upload/1/b.png"}},
                {"id": 7, "data": {"other": "x"}},
                {"id": 4, "data": {"image": "/data/upload/1/old.png"}},
                {"id": 8, "data": {"image": "/data/upload/1/c.png"}},
            ]
        }
    )
    assert next_task_urls(stub, 3, 5, 4, "image") == [
        "/data/upload/1/b.png",
        "/data/upload/1/c.png",
    ]
    path, params = stub.calls[0]
    assert path == "/api/tasks" and params["project"] == 3 and params["page_size"] == 4
    assert '"greater"' in params["query"] and '"value": 5' in params["query"]

"""The CVAT tracker functions over the dashboard-compatible API, with a tiny real model.

Requests are shaped as CVAT's UI and lambda manager send them (``tools-control.tsx``
``checkTrackedStates``: a first call with the rectangles' points and no states, then one call
per frame with the points and the states of the last answer; the UI maps every returned shape
to its bounding box). Random weights do not track well, so the tests check the protocol and
that a step equals the core video predictor's own step, not tracking quality.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import numpy as np
import pytest
import test_cvat_dashboard as dashboard
import test_cvat_nuclio as nuclio_tests
from cvat_sdk.masks import decode_mask
from test_cvat_dashboard import cvat_headers, frame_b64, parse_like_cvat

from core_model.types import Prompts
from core_model.video.frames import FrameList
from core_model.video.predictor import VideoPredictor
from ml_backend.cvat.tracker_shapes import encode_cvat_mask
from ml_backend.video_access import video_model_access

# the dashboard tests' backend (TEST_PRESETS, basic auth) and client, built once for this module
checkpoint, backend, client = dashboard.checkpoint, dashboard.backend, dashboard.client

TRACKER = "unsamv2-tracker-fine"  # granularity 0.2 in TEST_PRESETS
H, W = 96, 128


def moving_frame(step: int) -> np.ndarray:
    """A 96x128 frame: noise background, a red 30x24 box moving right by 6 px a frame."""
    frame = np.random.default_rng(step).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    x = 10 + 6 * step
    frame[30:54, x : x + 30] = [200, 40, 40]
    return frame


def true_box(step: int) -> list[float]:
    return [10.0 + 6 * step, 30.0, 40.0 + 6 * step, 54.0]


def track(http, shapes: list[Any], states: list[Any] | None, step: int, name: str = TRACKER):
    """One call as CVAT makes it (no ``states`` key on the UI's first call)."""
    payload: dict[str, Any] = {"image": frame_b64(moving_frame(step)), "shapes": shapes}
    if states is not None:
        payload["states"] = states
    return http.post("/api/function_invocations", json=payload, headers=cvat_headers(name))


def dashboard_client(app):
    """A test client with the dashboard tests' basic auth."""
    http = app.test_client()
    auth = base64.b64encode(b"cvat:p@ss word").decode()
    http.environ_base["HTTP_AUTHORIZATION"] = f"Basic {auth}"
    return http


def ui_rectangle(points: list[float]) -> list[float]:
    """``trackedRectangleMapper``: the bounding box of a reply's points."""
    xs, ys = points[0::2], points[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


@pytest.fixture
def tracker(backend):
    app, _ = backend
    found = app.extensions["unsamv2.cvat"].tracker
    found.store.clear()
    return found


def test_trackers_are_listed_as_cvat_reads_them(client) -> None:
    listing = client.get("/api/functions", headers=cvat_headers()).get_json()
    parsed = parse_like_cvat(listing[TRACKER])
    assert parsed["kind"] == "tracker" and parsed["labels"] == []
    assert "g=0.2" in parsed["name"] and "granularity 0.2" in parsed["description"]
    assert "unsamv2-tracker-whole" in listing


def test_a_rectangle_is_tracked_frame_by_frame_as_the_ui_asks(client, tracker, backend) -> None:
    first = track(client, [true_box(0)], None, 0)
    assert first.status_code == 200, first.get_json()
    reply = first.get_json()
    assert set(reply) == {"shapes", "states"} and reply["shapes"] == [true_box(0)]
    (state,) = reply["states"]
    assert isinstance(state, str) and len(tracker.store) == 1
    shape, seen = true_box(0), {state}
    for step in range(1, 6):
        answer = track(client, [shape], [state], step)
        assert answer.status_code == 200, answer.get_json()
        (shape,), (state,) = answer.get_json()["shapes"], answer.get_json()["states"]
        assert len(shape) == 4 and ui_rectangle(shape) == shape
        assert 0 <= shape[0] < shape[2] <= W and 0 <= shape[1] < shape[3] <= H
        assert state not in seen  # a new key every frame
        seen.add(state)
        if step == 1:  # the step is the core video predictor's own step at g=0.2
            model, _ = video_model_access(backend[1].predictor())
            frames = FrameList([moving_frame(0), moving_frame(1)])
            session = VideoPredictor(model).open(frames)
            session.add_prompts(0, 1, Prompts.from_arrays(box=true_box(0)), 0.2)
            (result,) = session.propagate(start=1, max_frames=0)
            rows, cols = np.nonzero(result.masks()[0])
            expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert shape == [float(v) for v in expected]
    assert len(tracker.store) == 1  # one session the whole way


def test_stale_forged_and_foreign_states_restart_from_the_given_shape(client, tracker) -> None:
    (state0,) = track(client, [true_box(0)], None, 0).get_json()["states"]
    (state1,) = track(client, [true_box(0)], [state0], 1).get_json()["states"]
    given = [11.0, 31.0, 41.0, 55.0]
    forged = state1[:-1] + ("0" if state1[-1] != "0" else "1")
    for state in [state0, forged, "not-a-key", None, {"bbox": [1, 2, 3, 4]}]:
        before = len(tracker.store)
        answer = track(client, [given], [state], 2)
        assert answer.status_code == 200
        assert answer.get_json()["shapes"] == [given]  # started again here, shape unchanged
        assert len(tracker.store) == before + 1  # in a new session
    # another preset's tracker does not continue this one's state
    other = track(client, [given], [state1], 2, name="unsamv2-tracker-whole").get_json()
    assert other["shapes"] == [given]
    # the genuine current key still continues its session (no new one)
    before = len(tracker.store)
    assert track(client, [true_box(1)], [state1], 2).status_code == 200
    assert len(tracker.store) == before


def test_expired_states_and_another_frame_size_restart(client, tracker) -> None:
    (state,) = track(client, [true_box(0)], None, 0).get_json()["states"]
    clock = tracker.signer.clock
    tracker.signer.clock = lambda: clock() + tracker.store.ttl_s + 5
    try:
        assert track(client, [true_box(0)], [state], 1).get_json()["shapes"] == [true_box(0)]
    finally:
        tracker.signer.clock = clock
    (state,) = track(client, [true_box(0)], None, 0).get_json()["states"]
    small = np.zeros((48, 64, 3), dtype=np.uint8)
    payload = {"image": frame_b64(small), "shapes": [[1, 2, 30, 40]], "states": [state]}
    answer = client.post("/api/function_invocations", json=payload, headers=cvat_headers(TRACKER))
    assert answer.status_code == 200 and answer.get_json()["shapes"] == [[1, 2, 30, 40]]


def test_polygons_and_masks_come_back_as_polygons_and_masks(client, tracker) -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[30:54, 10:40] = True
    shapes = [
        {"type": "polygon", "points": [10, 30, 40, 30, 40, 54, 10, 54]},
        {"type": "mask", "points": encode_cvat_mask(mask)},
        [10, 30, 40, 30, 40, 54, 10, 54],  # a flat polygon
    ]
    first = track(client, shapes, None, 0).get_json()
    assert first["shapes"] == shapes and len(first["states"]) == 3
    reply = track(client, first["shapes"], first["states"], 1).get_json()
    polygon, tracked_mask, flat = reply["shapes"]
    assert polygon["type"] == "polygon" and len(polygon["points"]) % 2 == 0
    assert len(polygon["points"]) >= 6
    assert tracked_mask["type"] == "mask"
    decoded = decode_mask(tracked_mask["points"], image_width=W, image_height=H)
    assert decoded.shape == (H, W) and decoded.any()
    assert isinstance(flat, list) and len(flat) >= 6
    assert all(a != b for a, b in zip(first["states"], reply["states"], strict=True))
    assert len(tracker.store) == 3  # each continued its own session


def test_the_store_bound_evicts_the_least_recently_used_shape(client, tracker) -> None:
    tracker.store.max_sessions, bound = 2, tracker.store.max_sessions
    try:
        a, b = track(client, [true_box(0), [60, 10, 90, 30]], None, 0).get_json()["states"]
        (c,) = track(client, [[5, 60, 30, 90]], None, 0).get_json()["states"]
        assert len(tracker.store) == 2 and tracker.store.evicted >= 1
        # a was least recently used: it restarts; b and c go on
        reply = track(client, [true_box(0), [60, 10, 90, 30], [5, 60, 30, 90]], [a, b, c], 1)
        assert reply.status_code == 400 and "at most 2 shapes" in reply.get_json()["error"]
        restarted = track(client, [true_box(0)], [a], 1).get_json()
        assert restarted["shapes"] == [true_box(0)]
    finally:
        tracker.store.max_sessions = bound


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"shapes": [{"type": "ellipse", "points": [1, 2, 3, 4]}]}, 400, "'ellipse'"),
        ({"shapes": [[1, 2, 3]]}, 400, "3 numbers"),
        ({"shapes": [[200, 200, 300, 300]]}, 400, "no area on the 128x96 frame"),
        ({"shapes": [{"type": "mask", "points": [5, 0, 0, 1, 1]}]}, 400, "cover 5 pixels"),
        ({"shapes": [[1, 2, 3, 4]], "image": "%%%"}, 400, "base64"),
        (
            {"shapes": [[1, 2, 3, 4]], "image": base64.b64encode(b"GIF89a no").decode()},
            422,
            "cannot decode",
        ),
    ],
)
def test_bad_tracker_requests_get_one_line_errors(client, payload, status, message) -> None:
    body = {"image": frame_b64(moving_frame(0)), **payload}
    answer = client.post("/api/function_invocations", json=body, headers=cvat_headers(TRACKER))
    assert answer.status_code == status and message in answer.get_json()["error"]
    assert message in answer.status  # the reason CVAT passes on to its UI


def test_frames_over_the_pixel_limit_are_refused(client) -> None:
    large = np.zeros((150, 150, 3), dtype=np.uint8)  # 22500 > UNSAMV2_MAX_IMAGE_PIXELS
    payload = {"image": frame_b64(large), "shapes": [[1, 2, 30, 40]]}
    answer = client.post("/api/function_invocations", json=payload, headers=cvat_headers(TRACKER))
    assert answer.status_code == 422 and "more than the limit" in answer.get_json()["error"]


# ----------------------------------------------------------------- as a Nuclio function

nuclio_context = nuclio_tests.context  # init_context as function.yaml configures it ("part")


def test_the_nuclio_handler_tracks_and_answers_errors_as_json(nuclio_context) -> None:
    first = {"image": frame_b64(moving_frame(0)), "shapes": [true_box(0)], "states": []}
    status, reply = nuclio_tests.call(nuclio_context, first)
    assert status == 200 and reply["shapes"] == [true_box(0)] and len(reply["states"]) == 1
    service = nuclio_context.user_data.service
    assert len(service.tracker.store) == 1
    following = {"image": frame_b64(moving_frame(1)), "shapes": reply["shapes"], **reply}
    status, tracked = nuclio_tests.call(nuclio_context, following)
    assert status == 200 and len(tracked["shapes"][0]) == 4
    assert tracked["states"] != reply["states"] and len(service.tracker.store) == 1
    bad = {"image": frame_b64(moving_frame(1)), "shapes": [{"type": "points", "points": [1, 2]}]}
    status, error = nuclio_tests.call(nuclio_context, bad)
    assert (status, error["status"]) == (400, 400) and "'points'" in error["error"]


def test_two_calls_with_one_state_at_once_continue_it_once(backend, tracker) -> None:
    app, _ = backend
    clients = [dashboard_client(app) for _ in range(2)]
    (state,) = track(clients[0], [true_box(0)], None, 0).get_json()["states"]
    session_id = state.split(".")[0]
    replies: list[Any] = [None, None]

    def call(i: int) -> None:
        replies[i] = track(clients[i], [true_box(0)], [state], 1)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [r.status_code for r in replies] == [200, 200]
    ids = sorted(r.get_json()["states"][0].split(".")[0] == session_id for r in replies)
    assert ids == [False, True]  # one went on with the session, the other started afresh
    assert len(tracker.store) == 2


def test_a_bad_shape_fails_the_call_before_any_session_starts(client, tracker) -> None:
    answer = track(client, [true_box(0), [300, 300, 400, 400]], None, 0)
    assert answer.status_code == 400
    assert "no area on the 128x96 frame" in answer.get_json()["error"]
    assert len(tracker.store) == 0
    assert track(client, [], [], 0).get_json() == {"shapes": [], "states": []}

"""What CVAT's UI tripped on when driven through a real CVAT server, against the backend.

Boxes dragged past the frame edge, clicks off a new frame, per-preset detector settings and the
reason of a refusal as CVAT's server passes it on (the backend and helpers of
`test_cvat_dashboard`; replies replayed through CVAT's UI steps with `cvat_ui`).
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
import test_cvat_dashboard as dashboard
from cvat_ui import interaction_step
from test_cvat_dashboard import (
    OPEN_FILTERS,
    cvat_headers,
    detector_mask,
    frame_b64,
    interactor_mask,
    interactor_payload,
    invoke,
)

from core_model.types import Prompts
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter

# the backend fixtures of test_cvat_dashboard, used here too (a backend of this module's own)
backend, checkpoint, client, server = (
    dashboard.backend,
    dashboard.checkpoint,
    dashboard.client,
    dashboard.server,
)


def test_a_box_dragged_past_the_frame_edge_is_clipped(client, backend, scene_image) -> None:
    _, runtime = backend
    predictor = runtime.predictor()
    # CVAT's UI does not clip the box: a drag past a 1024 x 768 frame's corner, scaled to 128 x 96
    payload = interactor_payload(scene_image, pos=[], box=[[102.4, 76.8], [133.0, 99.75]])
    answer = invoke(client, "unsamv2-interactor-whole", payload)
    assert answer.status_code == 200, answer.get_json()
    expected = predictor.predict(
        predictor.embed(scene_image),
        Prompts.from_arrays(box=[102.4, 76.8, 128, 96]),
        granularity=1.0,
    ).masks[0]
    assert np.array_equal(interactor_mask(answer.get_json(), 96, 128), expected)
    interaction_step(answer.get_json())
    # nothing of the box left on the frame: the click alone
    off = interactor_payload(scene_image, pos=[(60, 40)], box=[[130, 10], [160, 50]])
    alone = interactor_payload(scene_image, pos=[(60, 40)])
    assert (
        invoke(client, "unsamv2-interactor-whole", off).get_json()
        == invoke(client, "unsamv2-interactor-whole", alone).get_json()
    )


def test_an_invalid_click_on_a_new_frame_computes_no_embedding(
    client, backend, scene_image
) -> None:
    _, runtime = backend
    predictor = runtime.predictor()
    new_frame = np.ascontiguousarray(scene_image[::-1])  # not seen by any other test
    before = predictor.cache.stats()
    for pos, box in [([(500, 10)], None), ([(10, -3)], None), ([], [[200, 10], [300, 50]])]:
        answer = invoke(
            client, "unsamv2-interactor-fine", interactor_payload(new_frame, pos, box=box)
        )
        assert answer.status_code == 400, answer.get_json()
    assert predictor.cache.stats() == before  # no look-up, no embedding
    valid = invoke(client, "unsamv2-interactor-fine", interactor_payload(new_frame, [(10, 10)]))
    assert valid.status_code == 200 and predictor.cache.stats().misses == before.misses + 1


def test_detector_presets_run_their_own_grid_thresholds_and_granularities(
    client, backend, scene_image
) -> None:
    _, runtime = backend
    predictor = runtime.predictor()
    frame = frame_b64(scene_image)
    shapes = invoke(client, "unsamv2-detector-whole", {"image": frame}).get_json()
    config = WholeImageConfig(points_per_side=3, **OPEN_FILTERS)
    expected = WholeImageSegmenter(predictor, config).segment(scene_image, granularities=(0.5, 1.0))
    assert {g.granularity for g in expected} == {0.5, 1.0}
    assert len(shapes) == len(expected) > 0
    for shape, generated in zip(shapes, expected, strict=True):
        assert np.array_equal(detector_mask(shape, 96, 128), generated.mask)
    fine = invoke(client, "unsamv2-detector-fine", {"image": frame}).get_json()
    assert len(fine) != len(shapes)  # 4 x 4 grid at one granularity vs 3 x 3 at two


def test_a_refusal_reason_reaches_cvat_in_the_status_line(server, scene_image) -> None:
    # CVAT's LambdaGateway calls raise_for_status() and hands the HTTPError's text to the UI
    gateway = f"http://cvat:p%40ss%20word@{server}"
    with requests.Session() as session:
        refused = session.post(
            f"{gateway}/api/function_invocations",
            headers=cvat_headers("unsamv2-interactor-fine"),
            json=interactor_payload(scene_image, pos=[(500, 10)]),
            timeout=30,
        )
        unknown = session.post(
            f"{gateway}/api/function_invocations",
            headers=cvat_headers("unsamv2-interactor-coarse"),
            json={"image": "aGk="},
            timeout=30,
        )
    with pytest.raises(requests.HTTPError) as error:
        refused.raise_for_status()
    shown = str(error.value)
    assert shown.startswith("400 Client Error: UnSAMv2: point (500.0, 10.0) lies outside the ")
    assert "128x96 image" in shown
    assert "lies outside the 128x96 image" in refused.json()["error"]  # the body is unchanged
    with pytest.raises(requests.HTTPError, match="404 Client Error: UnSAMv2: no function"):
        unknown.raise_for_status()

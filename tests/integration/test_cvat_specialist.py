"""CVAT (dashboard mode): a detector per current task specialist, listed and invoked as CVAT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import test_cvat_dashboard as dash
import test_specialist_serving as serving

from labeling_pipeline.store import Store
from ml_backend.cvat.specialist_functions import MAX_NAME_CHARS, function_name
from ml_backend.settings import Settings

backend = serving.backend


def test_names_follow_cvat_rules_and_stay_distinct() -> None:
    assert function_name(3, ("Big Ship", "car!"), "specialist:3:Big Ship+car!") == (
        "unsamv2-specialist-3-big-ship-car"
    )
    long_a = function_name(3, ("x" * 80,), "specialist:3:" + "x" * 80)
    long_b = function_name(3, ("x" * 81,), "specialist:3:" + "x" * 81)
    assert len(long_a) <= MAX_NAME_CHARS and long_a != long_b
    assert all(c.isdigit() or c == "-" or "a" <= c <= "z" for c in long_a + long_b)


def test_published_specialist_is_listed_and_detects_as_cvat_reads_it(
    backend: tuple[Any, Store, Settings], tmp_path: Path
) -> None:
    client, store, settings = backend
    listing = client.get("/api/functions", headers=dash.cvat_headers()).get_json()
    assert not any(name.startswith("unsamv2-specialist-") for name in listing)

    serving.train_uniform_specialist(store, settings, tmp_path / "run", bias=2.0)
    listing = client.get("/api/functions", headers=dash.cvat_headers()).get_json()
    [name] = [name for name in listing if name.startswith("unsamv2-specialist-")]
    assert name.endswith("-car")
    parsed = dash.parse_like_cvat(listing[name])
    assert parsed["kind"] == "detector" and parsed["labels"] == [("Car", "mask")]
    assert parsed["state"] == "ready" and parsed["id"] == name
    one = client.get(f"/api/functions/{name}", headers=dash.cvat_headers())
    assert one.status_code == 200 and one.get_json() == listing[name]

    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    answer = client.post(
        "/api/function_invocations",
        json={"image": dash.frame_b64(image)},
        headers=dash.cvat_headers(name),
    )
    assert answer.status_code == 200, answer.get_json()
    [shape] = answer.get_json()
    assert shape["label"] == "Car" and shape["type"] == "mask"
    assert float(shape["confidence"]) == float(f"{1 / (1 + np.exp(-2.0)):.2f}")
    assert np.count_nonzero(dash.detector_mask(shape, 48, 64)) == 48 * 64
    assert len(shape["points"]) >= 6  # the outline polygon

    # a request's threshold is the minimum confidence of a shape
    strict = client.post(
        "/api/function_invocations",
        json={"image": dash.frame_b64(image), "threshold": 0.95},
        headers=dash.cvat_headers(name),
    )
    assert strict.status_code == 200 and strict.get_json() == []


def test_unknown_specialist_is_404(backend: tuple[Any, Store, Settings]) -> None:
    client, _, _ = backend
    one = client.get("/api/functions/unsamv2-specialist-12-ship", headers=dash.cvat_headers())
    assert one.status_code == 404 and "current specialists: none" in one.get_json()["error"]
    call = client.post(
        "/api/function_invocations",
        json={"image": "x"},
        headers=dash.cvat_headers("unsamv2-specialist-12-ship"),
    )
    assert call.status_code == 404 and call.get_json()["type"] == "UnknownFunctionError"

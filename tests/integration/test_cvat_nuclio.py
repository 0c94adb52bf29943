"""The Nuclio function: `init_context`/`handler` with stub Nuclio objects, and its YAML files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from test_cvat_dashboard import (
    OPEN_FILTERS,
    TEST_DETECTOR,
    detector_mask,
    frame_b64,
    interactor_mask,
    interactor_payload,
    parse_like_cvat,
)

from core_model.checkpoint import official_state_dict
from core_model.types import Prompts
from core_model.whole_image import WholeImageSegmenter
from ml_backend.cvat.nuclio import main
from ml_backend.cvat.presets import CvatFunction, function_annotations, parse_presets
from ml_backend.cvat.service import CvatOptions

NUCLIO = Path(main.__file__).parent
YAMLS = sorted(NUCLIO.glob("*/function*.yaml"))


class StubContext:
    """The parts of Nuclio's context a handler uses."""

    def __init__(self) -> None:
        self.user_data = SimpleNamespace()

    @staticmethod
    def Response(**kwargs: Any) -> SimpleNamespace:  # noqa: N802 - Nuclio's name
        return SimpleNamespace(**kwargs)


def call(context: StubContext, body: Any) -> tuple[int, Any]:
    """Invoke the handler as Nuclio does (body parsed from JSON, or raw bytes)."""
    answer = main.handler(context, SimpleNamespace(body=body, headers={}))
    assert answer.content_type == "application/json" and answer.headers == {}
    return answer.status_code, json.loads(answer.body)


@pytest.fixture(scope="module")
def context(tiny_model, tmp_path_factory) -> StubContext:
    """A context after `init_context`, configured as function.yaml would (environment)."""
    folder = tmp_path_factory.mktemp("nuclio")
    torch.save({"model": official_state_dict(tiny_model)}, folder / "tiny.pt")
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "UNSAMV2_DATA_DIR": str(folder / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(folder / "tiny.pt"),
            # JSON presets: "part" detects as TEST_DETECTOR
            "UNSAMV2_CVAT_PRESETS": json.dumps(
                [
                    {"name": "part", "granularity": 0.5, "points_per_side": 4, **OPEN_FILTERS},
                    {"name": "whole", "granularity": 1.0},
                ]
            ),
            "UNSAMV2_MAX_IMAGE_PIXELS": "20000",
        }.items():
            env.setenv(name, value)
        env.delenv("UNSAMV2_DATABASE_URL", raising=False)
        context = StubContext()
        main.init_context(context)
    service = context.user_data.service
    service.options = CvatOptions(max_image_pixels=20000, whole_image=TEST_DETECTOR)
    return context


def test_interactor_call_answers_the_models_mask(context, scene_image) -> None:
    assert context.user_data.preset.name == "part"  # the first preset
    predictor, _ = context.user_data.service.serving()
    payload = interactor_payload(
        scene_image, pos=[(64, 48)], neg=[(2, 2)], box=[[10, 10], [90, 70]]
    )
    status, reply = call(context, payload)
    assert status == 200, reply
    expected = predictor.predict(
        predictor.embed(scene_image),
        Prompts.from_arrays([[64, 48], [2, 2]], [1, 0], [10, 10, 90, 70]),
        granularity=0.5,
    ).masks[0]
    assert np.array_equal(interactor_mask(reply, 96, 128), expected)


def test_detector_call_with_a_raw_json_body(context, scene_image) -> None:
    predictor, _ = context.user_data.service.serving()
    status, shapes = call(context, json.dumps({"image": frame_b64(scene_image)}).encode())
    assert status == 200 and isinstance(shapes, list) and shapes
    expected = WholeImageSegmenter(predictor, TEST_DETECTOR).segment(
        scene_image, granularities=(0.5,)
    )
    assert len(shapes) == len(expected)
    for shape, generated in zip(shapes, expected, strict=True):
        assert np.array_equal(detector_mask(shape, 96, 128), generated.mask)


def test_handler_errors_are_json(context) -> None:
    for body, status, message in [
        (b"{not json", 400, "not JSON"),
        ([1, 2], 400, "JSON object"),
        ({"pos_points": [[1, 1]], "neg_points": []}, 400, "no 'image'"),
        ({"image": "???"}, 400, "base64"),
    ]:
        code, reply = call(context, body)
        assert (code, reply["status"]) == (status, status) and message in reply["error"]


def test_missing_weights_answer_503(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("UNSAMV2_MODEL", "test-tiny")
    monkeypatch.delenv("UNSAMV2_CHECKPOINT", raising=False)
    monkeypatch.delenv("UNSAMV2_DATABASE_URL", raising=False)
    context = StubContext()
    main.init_context(context)
    code, reply = call(context, {"image": "aGk="})
    assert code == 503 and "no checkpoint" in reply["error"]


# ----------------------------------------------------------------- function.yaml files


def test_there_is_a_cpu_and_a_gpu_file_for_every_kind() -> None:
    assert [str(p.relative_to(NUCLIO)) for p in YAMLS] == [
        "detector/function-gpu.yaml",
        "detector/function.yaml",
        "interactor/function-gpu.yaml",
        "interactor/function.yaml",
        "tracker/function-gpu.yaml",
        "tracker/function.yaml",
    ]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_function_yaml_is_what_cvat_and_nuclio_expect(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    metadata, spec = config["metadata"], config["spec"]
    annotations = metadata["annotations"]
    assert all(isinstance(v, str) for v in annotations.values()), "Nuclio stores strings"
    assert "false" not in {v.strip().lower() for v in annotations.values()}
    env = {item["name"]: item["value"] for item in spec["env"]}
    (preset,) = parse_presets(env["UNSAMV2_CVAT_PRESETS"])
    function = CvatFunction(path.parent.name, preset)  # type: ignore[arg-type]
    # the same metadata the dashboard-compatible API lists for this function
    expected, found = function_annotations(function), dict(annotations)
    if "spec" in expected:
        assert json.loads(found.pop("spec")) == json.loads(expected.pop("spec"))
    assert found == expected
    assert (metadata["name"], spec["description"]) == (function.name, function.description)
    parsed = parse_like_cvat({**config, "status": {"state": "ready"}})
    if function.kind == "interactor":
        assert parsed["version"] >= 2 and parsed["min_pos_points"] == 0
        assert parsed["startswith_box_optional"] and not parsed["startswith_box"]
    elif function.kind == "detector":
        assert parsed["labels"] == [("object", "mask")]
    else:
        assert parsed["kind"] == "tracker" and parsed["labels"] == []
    module, _, entry = spec["handler"].partition(":")
    assert getattr(importlib.import_module(module), entry) is main.handler
    trigger = spec["triggers"]["myHttpTrigger"]
    assert trigger["kind"] == "http" and trigger["maxWorkers"] == 1
    assert trigger["attributes"]["maxRequestBodySize"] >= 32 * 1024 * 1024
    gpu = path.name == "function-gpu.yaml"
    assert env["UNSAMV2_DEVICE"] == ("cuda" if gpu else "cpu")
    assert spec.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == (1 if gpu else None)
    assert spec["build"]["baseImage"].endswith(":cuda" if gpu else ":cpu")


def test_a_busy_model_answers_503_with_retry_after(context: StubContext, monkeypatch) -> None:
    """The door's queue is full: CVAT gets 503 and when to retry, as from the dashboard API."""
    from ml_backend.model_door import ModelBusyError

    def busy(function: Any, body: Any) -> Any:
        raise ModelBusyError("the model is busy (32 requests waiting); retry shortly", 7)

    monkeypatch.setattr(context.user_data.service, "invoke", busy)
    answer = main.handler(context, SimpleNamespace(body={"pos_points": [[1, 1]]}, headers={}))
    assert answer.status_code == 503 and answer.headers == {"Retry-After": "7"}
    assert "busy" in json.loads(answer.body)["error"]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_event_timeouts_cover_a_call_and_stay_below_cvats(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())["spec"]
    timeout_s = float(spec["eventTimeout"].removesuffix("s"))
    env = {item["name"]: item["value"] for item in spec["env"]}
    if path.parent.name == "detector":
        # decoding stops at the deadline; embedding, the batch in flight and encoding fit in
        # the rest (about 15 s on 2 CPU cores, see the comment in the file)
        deadline_s = float(env["UNSAMV2_PREANNOTATE_DEADLINE_S"])
        assert deadline_s + 30 <= timeout_s < 120  # 120 s: CVAT_NUCLIO_DEFAULT_TIMEOUT
    else:
        assert 10 <= timeout_s <= 60  # an embedding (~2 s) plus a decode, with margin

"""A task specialist as a Nuclio function: `unsamv2 specialist nuclio` and the handler."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_cvat_dashboard import detector_mask, frame_b64, parse_like_cvat
from test_cvat_nuclio import StubContext, call
from test_specialist_serving import train_uniform_specialist

from labeling_pipeline.specialist.synthetic import store_task_project, template_task
from labeling_pipeline.store import Store
from labeling_pipeline.store.versions import rollback
from ml_backend.cli import main as cli
from ml_backend.cvat.nuclio import main
from ml_backend.cvat.nuclio.specialist_yaml import (
    CVAT_TIMEOUT_S,
    event_timeout_s,
    function_yaml,
    plan_deployment,
)
from ml_backend.cvat.specialist_functions import specialist_functions
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.settings import Settings, SettingsError

SCOPE = "specialist:1:Car"


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Settings, str]:
    """A store with project ls:12 (labels Car, Person) and a Car specialist of p = sigmoid(2)."""
    root = tmp_path_factory.mktemp("specialist-nuclio")
    settings = Settings.from_env({"UNSAMV2_DATA_DIR": str(root / "data")})
    store = Store(settings.pipeline.resolved_database_url)
    scenes = template_task(6, seed=7, height=96, width=128, template="any")
    store_task_project(
        store,
        settings.pipeline.images_dir,
        "cars",
        scenes,
        label="Car",
        other_label="Person",
        label_config=shipped_config(),
        ls_project_id=12,
    )
    version = train_uniform_specialist(store, settings, root / "run", bias=2.0)
    return store, settings, version


@pytest.fixture
def env(trained: tuple[Store, Settings, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The process environment of the CLI: only the data folder of `trained`."""
    for key in [k for k in os.environ if k.startswith("UNSAMV2_")]:
        monkeypatch.delenv(key)
    _, settings, _ = trained
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(settings.pipeline.data_dir))
    return settings


def generate(out: Path, *extra: str) -> int:
    return cli(["specialist", "nuclio", "--project", "ls:12", "--out", str(out), *extra])


def test_generated_yaml_is_what_cvat_and_nuclio_expect(
    env: Settings, trained: tuple[Store, Settings, str], tmp_path: Path, capsys: Any
) -> None:
    store, _, version = trained
    assert generate(tmp_path / "fn", "--labels", " Car ", "--gpu") == 0
    assert capsys.readouterr().out.count(version) == 2
    [function] = specialist_functions(store).values()
    data_dir = str(env.pipeline.data_dir.resolve())
    for name, gpu in [("function.yaml", False), ("function-gpu.yaml", True)]:
        config = yaml.safe_load((tmp_path / "fn" / name).read_text())
        metadata, spec = config["metadata"], config["spec"]
        # the entry dashboard mode lists for this specialist, as CVAT parses it
        assert metadata["name"] == function.name == "unsamv2-specialist-1-car"
        assert all(isinstance(v, str) for v in metadata["annotations"].values())
        assert metadata["annotations"] == function.entry()["metadata"]["annotations"]
        parsed = parse_like_cvat({**config, "status": {"state": "ready"}})
        assert parsed["kind"] == "detector" and parsed["labels"] == [("Car", "mask")]
        assert json.loads(metadata["annotations"]["spec"]) == [
            {"id": 0, "name": "Car", "type": "mask"}
        ]
        assert spec["description"] == function.description
        module, _, entry = spec["handler"].partition(":")
        assert getattr(importlib.import_module(module), entry) is main.handler
        env_vars = {item["name"]: item["value"] for item in spec["env"]}
        assert env_vars == {
            "UNSAMV2_CVAT_SPECIALIST": function.name,
            "UNSAMV2_DEVICE": "cuda" if gpu else "cpu",
            "UNSAMV2_DATA_DIR": data_dir,
        }
        # the store names version folders by absolute path: the data folder keeps its path
        [volume] = spec["volumes"]
        assert volume["volume"]["hostPath"]["path"] == volume["volumeMount"]["mountPath"]
        assert volume["volumeMount"]["mountPath"] == data_dir
        # test-tiny is cheaper than the timed CPU variant (1.23 s per 1024x768 frame)
        timeout_s = float(spec["eventTimeout"].removesuffix("s"))
        assert 20 * 1.23 <= timeout_s < CVAT_TIMEOUT_S
        trigger = spec["triggers"]["myHttpTrigger"]
        assert trigger["kind"] == "http" and trigger["maxWorkers"] == 1
        assert spec["build"]["baseImage"].endswith(":cuda" if gpu else ":cpu")
        assert spec.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == (
            1 if gpu else None
        )
    # base weights outside the data folder are mounted read-only where the store names them;
    # a database URL is passed on
    deployment = plan_deployment(store, function, env.pipeline.data_dir)
    assert deployment.extra_mounts == ()  # random bases, models in the data folder
    other = replace(
        deployment,
        host_data_dir=Path("/opt/unsamv2/data"),
        extra_mounts=(Path("/weights/sam2"),),
        database_url="postgresql://u:p@db/unsamv2",
    )
    spec = yaml.safe_load(function_yaml(other))["spec"]
    assert [(v["volume"]["hostPath"]["path"], v["volumeMount"]) for v in spec["volumes"]] == [
        ("/opt/unsamv2/data", {"name": "unsamv2-data", "mountPath": data_dir}),
        (
            "/weights/sam2",
            {"name": "unsamv2-weights-1", "mountPath": "/weights/sam2", "readOnly": True},
        ),
    ]
    assert {"name": "UNSAMV2_DATABASE_URL", "value": "postgresql://u:p@db/unsamv2"} in spec["env"]
    # a variant never timed on a CPU gets as long as CVAT waits, a GPU less
    assert event_timeout_s("default", gpu=True) < event_timeout_s("default", gpu=False) < 120


def test_bad_input_is_one_line_and_writes_nothing(
    env: Settings, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "fn"
    for extra, message in [
        (["--labels", "Boat"], "unknown label 'Boat': the current specialists of project 1"),
        (["--labels", "Car,Person"], "unknown label 'Person'"),
        (["--labels", ","], "name the specialist's labels"),
    ]:
        assert generate(out, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    other = ["--project", "ls:99", "--labels", "Car", "--out", str(out)]
    assert cli(["specialist", "nuclio", *other]) == 2
    assert "ls:99" in capsys.readouterr().err
    assert not out.exists()


def test_handler_serves_the_lineage_and_answers_errors_as_json(
    env: Settings,
    trained: tuple[Store, Settings, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, settings, _ = trained
    assert generate(tmp_path / "fn", "--labels", "Car") == 0
    # the environment the generated function.yaml gives the function
    spec = yaml.safe_load((tmp_path / "fn" / "function.yaml").read_text())["spec"]
    for item in spec["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    context = StubContext()
    main.init_context(context)

    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    status, shapes = call(context, json.dumps({"image": frame_b64(image)}).encode())
    assert status == 200, shapes
    [shape] = shapes
    assert shape["label"] == "Car" and shape["type"] == "mask"
    assert float(shape["confidence"]) == float(f"{sigmoid(2.0):.2f}")
    assert np.count_nonzero(detector_mask(shape, 48, 64)) == 48 * 64
    assert len(shape["points"]) >= 6  # the outline polygon
    assert call(context, {"image": frame_b64(image), "threshold": 0.95}) == (200, [])

    for body, code, message in [
        (b"{not json", 400, "not JSON"),
        ([1, 2], 400, "JSON object"),
        ({"threshold": 0.5}, 400, "'image'"),
        ({"image": "???"}, 400, "base64"),
    ]:
        status, reply = call(context, body)
        assert status == reply["status"] == code and message in reply["error"]
        assert "\n" not in reply["error"] and "Traceback" not in reply["error"]

    # a newer version of the lineage is served by the running function, under the same name
    newer = train_uniform_specialist(store, settings, tmp_path / "run2", bias=1.0)
    assert specialist_functions(store)["unsamv2-specialist-1-car"].version == newer
    [shape] = call(context, {"image": frame_b64(image)})[1]
    assert float(shape["confidence"]) == float(f"{sigmoid(1.0):.2f}")

    # rolled back to the first version, then past it: no current version, 404
    with store.session() as session:
        rollback(session, SCOPE)
    [shape] = call(context, {"image": frame_b64(image)})[1]
    assert float(shape["confidence"]) == float(f"{sigmoid(2.0):.2f}")
    with store.session() as session:
        rollback(session, SCOPE)
    status, reply = call(context, {"image": frame_b64(image)})
    assert status == 404 and reply["type"] == "UnknownFunctionError"
    assert "unsamv2-specialist-1-car" in reply["error"] and "no current version" in reply["error"]


def test_unknown_or_misnamed_specialist(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNSAMV2_CVAT_SPECIALIST", "unsamv2-specialist-12-boat")
    context = StubContext()
    main.init_context(context)  # Nuclio starts it; each call names what is missing
    png = tmp_image_b64()
    status, reply = call(context, {"image": png})
    assert status == 404 and "unsamv2-specialist-12-boat" in reply["error"]
    assert "current specialists:" in reply["error"]
    monkeypatch.setenv("UNSAMV2_CVAT_SPECIALIST", "part:0.5")
    with pytest.raises(SettingsError, match="UNSAMV2_CVAT_SPECIALIST must name"):
        main.init_context(StubContext())


def tmp_image_b64() -> str:
    return frame_b64(np.zeros((8, 8, 3), dtype=np.uint8))

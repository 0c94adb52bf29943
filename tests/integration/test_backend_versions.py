"""/setup and /versions per Label Studio project; report files of a version.

The model loader is a fake (`FakePredictor` per file): the point is which version each project
is answered, not the network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_predictor import FakePredictor

from labeling_pipeline.model_files.lineage import commit_version
from labeling_pipeline.model_files.registry import ModelRegistry
from labeling_pipeline.store import Store
from ml_backend.label_studio.app import create_app
from ml_backend.runtime import ModelRuntime, WeightsChoice
from ml_backend.settings import Settings


@pytest.fixture
def backend(tmp_path: Path):
    base = tmp_path / "base" / "model.pt"
    base.parent.mkdir()
    base.write_text("weights")
    settings = Settings.from_env(
        {"UNSAMV2_DATA_DIR": str(tmp_path / "data"), "UNSAMV2_CHECKPOINT": str(base)}
    )
    store = Store(settings.pipeline.resolved_database_url)

    def load(choice: WeightsChoice) -> FakePredictor:
        return FakePredictor(f"{choice.checkpoint.parent.name}-file")

    runtime = ModelRuntime(settings.pipeline, store=store, make_predictor=load, poll_s=0)
    runtime.refresh()
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    return app.test_client(), ModelRegistry(store, settings.pipeline.models_dir)


def commit(registry: ModelRegistry, scope: str, *, publish: bool) -> str:
    with registry.staging() as staging:
        (staging / "model.pt").write_text("weights")
        (staging / "report.md").write_text(f"# {scope}\n")
        return commit_version(
            registry,
            staging,
            model="test-tiny",
            scope=scope,
            publish=publish,
            metadata={},
            gate={"verdict": {"decision": "publish" if publish else "reject", "reason": "r"}},
        ).name


def setup_version(client, project: str) -> str:
    return client.post("/setup", json={"project": project}).get_json()["model_version"]


def test_each_project_gets_its_own_version_in_setup_and_versions(backend) -> None:
    client, registry = backend
    assert setup_version(client, "1.17") == setup_version(client, "2.5") == "base-file"
    own = commit(registry, "ls:1", publish=True)
    rejected = commit(registry, "ls:1", publish=False)
    assert setup_version(client, "1.17") == own
    assert setup_version(client, "2.5") == "base-file"  # project 2 untouched
    assert setup_version(client, "") == "base-file"  # no project id: global

    first = client.get("/versions?project=1").get_json()
    assert first["scope"] == "ls:1" and first["current"] == own
    assert first["versions"] == [own]  # the dropdown: published versions of the project only
    statuses = {d["name"]: (d["status"], d["gate"]["decision"]) for d in first["details"]}
    assert statuses == {own: ("current", "publish"), rejected: ("rejected", "reject")}
    link = next(d for d in first["details"] if d["name"] == rejected)["report"]["report.md"]
    assert client.get(link).get_data(as_text=True) == "# ls:1\n"

    second = client.get("/versions?project=2").get_json()
    assert second == {
        "scope": "ls:2",
        "current": "base-file",
        "versions": ["base-file"],
        "details": [],
    }


def test_bad_project_and_report_requests_get_one_line_errors(backend) -> None:
    client, registry = backend
    name = commit(registry, "ls:1", publish=True)
    assert client.get("/versions?project=abc").status_code == 400
    assert client.get(f"/versions/{name}/model.pt").status_code == 404  # not a report file
    assert client.get(f"/versions/{name}/report.json").status_code == 404  # not written
    answer = client.get("/versions/nope/report.md")
    assert answer.status_code == 404 and "no model version" in answer.get_json()["error"]

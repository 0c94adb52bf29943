"""`unsamv2 models`: list per scope with gate metrics, show, promote, rollback, prune, cleanup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labeling_pipeline.model_files.lineage import commit_version
from labeling_pipeline.model_files.registry import ModelRegistry
from labeling_pipeline.store import Store
from labeling_pipeline.store.repository import get_or_create_project
from labeling_pipeline.store.versions import current_version, list_versions
from ml_backend.cli import main
from ml_backend.settings import Settings


@pytest.fixture
def registry(tmp_path: Path, monkeypatch) -> ModelRegistry:
    for key in [k for k in os.environ if k.startswith("UNSAMV2_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(tmp_path / "data"))
    settings = Settings.from_env().pipeline
    store = Store(settings.resolved_database_url)
    with store.session() as s:
        get_or_create_project(s, "cars", ls_project_id=3)
    return ModelRegistry(store, settings.models_dir)


def add(registry: ModelRegistry, scope: str, *, publish: bool, iou: float) -> str:
    with registry.staging() as staging:
        (staging / "model.pt").write_bytes(b"weights")
        (staging / "report.md").write_text(f"# run of {scope}\n")
        gate = {
            "verdict": {"decision": "publish" if publish else "reject"},
            "candidate": {"metrics": {"annotator_iou": iou, "NoC90": 4.5}},
            "current": {"metrics": {"annotator_iou": 0.5}},
        }
        return commit_version(
            registry,
            staging,
            model="test-tiny",
            scope=scope,
            publish=publish,
            metadata={},
            gate=gate,
        ).name


def test_list_show_promote_rollback_prune(registry: ModelRegistry, capsys) -> None:
    assert main(["models", "list"]) == 0
    assert "no model versions" in capsys.readouterr().out
    a1 = add(registry, "ls:3", publish=True, iou=0.61)
    a2 = add(registry, "ls:3", publish=False, iou=0.31)
    g1 = add(registry, "global", publish=True, iou=0.55)
    assert main(["models", "list", "--project", "cars"]) == 0  # a project name: its lineage
    out = capsys.readouterr().out
    assert a1 in out and a2 in out and g1 not in out
    row = next(line for line in out.splitlines() if a2 in line)
    assert "rejected" in row and "0.310" in row and "0.500" in row and a1 in row  # parent
    assert any(line.startswith(f"* {a1}") for line in out.splitlines())
    assert main(["models", "show", a2]) == 0
    assert "# run of ls:3" in capsys.readouterr().out

    assert main(["models", "promote", a2]) == 0
    with registry.store.session() as s:
        assert current_version(s, "ls:3").name == a2
    assert main(["models", "rollback", "--project", "ls:3"]) == 0
    assert f"{a2} retired; now serving {a1}" in capsys.readouterr().out
    assert main(["models", "rollback", "--project", "ls:3"]) == 0
    assert "global's version or the base model" in capsys.readouterr().out
    assert main(["models", "rollback", "--project", "ls:3"]) == 2
    assert "nothing to roll back" in capsys.readouterr().err

    assert main(["models", "prune", "--keep", "0"]) == 0
    with registry.store.session() as s:
        assert [v.name for v in list_versions(s)] == [g1]  # global's current stays
    assert not Path(registry.models_dir / a1).exists()


def test_cleanup_and_bad_arguments(registry: ModelRegistry, capsys) -> None:
    (registry.models_dir / ".staging-killed").mkdir(parents=True)
    assert main(["models", "cleanup", "--older-than", "0"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert main(["models", "promote", "nope"]) == 2
    assert "no model version 'nope'" in capsys.readouterr().err
    assert main(["models", "list", "--project", "ls:x"]) == 2
    assert "bad scope" in capsys.readouterr().err

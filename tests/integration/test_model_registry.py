"""Publishing model versions: complete folders only, pointer last, failures leave nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from labeling_pipeline.model_files.lineage import commit_version
from labeling_pipeline.model_files.registry import ModelRegistry, PublishError
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.versions import current_version


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(Store(f"sqlite:///{tmp_path / 'db.sqlite3'}"), tmp_path / "models")


def publish(registry: ModelRegistry, staging: Path, metadata: dict | None = None) -> ModelVersion:
    return commit_version(
        registry,
        staging,
        model="test-tiny",
        scope="global",
        publish=True,
        metadata=metadata or {},
    )


def current(registry: ModelRegistry) -> ModelVersion | None:
    with registry.store.session() as session:
        return current_version(session, "global")


def visible_versions(registry: ModelRegistry) -> list[str]:
    return sorted(p.name for p in registry.models_dir.iterdir() if not p.name.startswith("."))


def test_publish_renames_a_complete_folder_then_moves_the_pointer(registry) -> None:
    with registry.staging() as staging:
        (staging / "model.pt").write_bytes(b"weights")
        version = publish(registry, staging, metadata={"steps": 3})
    folder = Path(version.path)
    assert folder.parent == registry.models_dir and not staging.exists()
    meta = json.loads((folder / "metadata.json").read_text())
    assert (
        meta["steps"] == 3 and meta["model"] == "test-tiny" and len(meta["checkpoint_sha256"]) == 64
    )
    assert current(registry).name == version.name == folder.name
    with registry.staging() as staging:
        (staging / "model.pt").write_bytes(b"better")
        second = publish(registry, staging)
    assert current(registry).name == second.name
    assert visible_versions(registry) == sorted([version.name, second.name])


def test_a_failing_run_publishes_nothing(registry) -> None:
    def crashing_run() -> None:
        with registry.staging() as staging:
            (staging / "model.pt").write_bytes(b"half")
            raise RuntimeError("training crashed")

    with pytest.raises(RuntimeError, match="training crashed"):
        crashing_run()
    assert list(registry.models_dir.iterdir()) == []
    assert current(registry) is None


def test_publish_without_a_checkpoint_is_refused(registry) -> None:
    with registry.staging() as staging, pytest.raises(PublishError, match="model.pt"):
        publish(registry, staging)
    assert current(registry) is None and visible_versions(registry) == []


def test_stale_staging_folders_are_cleaned(registry) -> None:
    registry.models_dir.mkdir(parents=True)
    stale = registry.models_dir / ".staging-dead"
    stale.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = registry.models_dir / ".staging-running"
    fresh.mkdir()
    assert registry.cleanup_staging(older_than_s=3600) == 1
    assert not stale.exists() and fresh.exists()


def test_starting_a_publication_removes_folders_left_by_killed_runs(registry) -> None:
    registry.models_dir.mkdir(parents=True)
    dead = registry.models_dir / ".staging-killed"
    dead.mkdir()
    (dead / "model.pt").write_bytes(b"half written")
    old = time.time() - 7 * 3600
    for path in (dead / "model.pt", dead):
        os.utime(path, (old, old))
    writing = registry.models_dir / ".staging-writing"
    writing.mkdir()
    os.utime(writing, (old, old))
    (writing / "model.pt").write_bytes(b"still being written")  # changed just now: kept
    with registry.staging() as staging:
        (staging / "model.pt").write_bytes(b"weights")
        publish(registry, staging)
    assert not dead.exists() and writing.exists()

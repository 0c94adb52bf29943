"""Per-project serving: each Label Studio project its own version, global fallback, LRU, faults.

The loader is a fake `make_predictor` (a `FakePredictor` per file, or an error for files marked
broken), as in `test_runtime`: these tests are about which version each scope is served and what
is loaded when, not about the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_predictor import FakePredictor

from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.versions import add_version, rollback
from ml_backend.runtime import ModelRuntime, WeightsChoice
from ml_backend.settings import Settings


class Loader:
    """Fake `make_predictor`: counts loads; files whose text starts with "broken" fail."""

    def __init__(self) -> None:
        self.loads: list[str] = []

    def __call__(self, choice: WeightsChoice) -> FakePredictor:
        self.loads.append(choice.checkpoint.parent.name)
        if choice.checkpoint.read_text().startswith("broken"):
            raise RuntimeError("truncated checkpoint")
        return FakePredictor(f"{choice.checkpoint.parent.name}-file")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    configured = tmp_path / "base" / "model.pt"
    configured.parent.mkdir()
    configured.write_text("weights")
    return Settings.from_env(
        {"UNSAMV2_DATA_DIR": str(tmp_path / "data"), "UNSAMV2_CHECKPOINT": str(configured)}
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings.pipeline.resolved_database_url)


def publish(store: Store, root: Path, name: str, scope: str, text: str = "weights") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_FILE).write_text(text)
    with store.session() as session:
        add_version(
            session,
            ModelVersion(
                name=name,
                path=str(folder),
                model="test-tiny",
                checkpoint_sha256="0" * 64,
                scope=scope,
            ),
            publish=True,
        )
    return folder / CHECKPOINT_FILE


def runtime(settings: Settings, store: Store, loader: Loader, **kwargs) -> ModelRuntime:
    rt = ModelRuntime(settings.pipeline, store=store, make_predictor=loader, poll_s=0, **kwargs)
    rt.refresh()
    return rt


def test_each_project_is_served_its_own_version_and_falls_back_to_global(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    loader = Loader()
    rt = runtime(settings, store, loader)
    assert rt.serving("ls:1")[1] == rt.serving("ls:2")[1] == "base-file"
    publish(store, tmp_path / "models", "a1", "ls:1")
    a, version_a = rt.serving("ls:1")
    b, version_b = rt.serving("ls:2")
    assert (version_a, version_b) == ("a1", "base-file")
    assert a.model_version == "a1-file" and b.model_version == "base-file"
    assert rt.version_for("ls:1") == "a1" and rt.version_for("ls:2") == "base-file"
    publish(store, tmp_path / "models", "g1", "global")
    rt.refresh()
    assert rt.serving("ls:2")[1] == "g1" and rt.serving("ls:1")[1] == "a1"
    assert rt.serving()[1] == "g1"
    with store.session() as session:
        rollback(session, "ls:1")
    assert rt.serving("ls:1")[1] == "g1"  # no earlier version of ls:1: global's


def test_models_are_loaded_lazily_once_and_bounded(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    loader = Loader()
    rt = runtime(settings, store, loader, max_models=2)
    for i in (1, 2, 3):
        publish(store, tmp_path / "models", f"p{i}", f"ls:{i}")
    assert loader.loads == ["base"]  # nothing built before a request needs it
    rt.serving("ls:1")
    rt.serving("ls:1")
    assert loader.loads == ["base", "p1"]
    rt.serving("ls:2")  # 2 models at most: global + one scoped model
    rt.serving("ls:1")
    assert loader.loads == ["base", "p1", "p2", "p1"]
    assert rt.status()["scoped"]["loaded"] == ["p1"]


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    loader = Loader()
    rt = runtime(settings, store, loader)
    publish(store, tmp_path / "models", "a1", "ls:1")
    assert rt.serving("ls:1")[1] == "a1"
    broken = publish(store, tmp_path / "models", "a2", "ls:1", text="broken")
    for _ in range(3):
        predictor, version = rt.serving("ls:1")
        assert version == "a1" and predictor.model_version == "a1-file"
    assert loader.loads.count("a2") == 1  # not retried until the file changes
    assert rt.version_for("ls:1") == "a1"
    broken.write_text("fixed weights")
    os.utime(broken, ns=(1, 1))
    assert rt.serving("ls:1")[1] == "a2"

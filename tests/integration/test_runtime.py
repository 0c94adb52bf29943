"""`ModelRuntime.refresh` and `choose_weights` with a real store and files, and a fake loader.

The loader is the runtime's `make_predictor` argument: it returns a `FakePredictor` per file (or
raises for files the test marks broken), so these tests are about which weights are chosen,
when they are (re)loaded and what keeps serving, not about the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_predictor import FakePredictor, image

from core_model.types import Prompts
from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.versions import add_version
from ml_backend.model_door import GatedPredictor, ModelDoor
from ml_backend.runtime import ModelRuntime, ModelUnavailableError, WeightsChoice, choose_weights
from ml_backend.settings import Settings


class Loader:
    """Fake `make_predictor`: counts loads; files whose text starts with "broken" fail."""

    def __init__(self) -> None:
        self.loads: list[Path] = []

    def __call__(self, choice: WeightsChoice) -> FakePredictor:
        self.loads.append(choice.checkpoint)
        if choice.checkpoint.read_text().startswith("broken"):
            raise RuntimeError("truncated checkpoint")
        return FakePredictor(f"{choice.checkpoint.parent.name}-{choice.checkpoint.stat().st_size}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    configured = tmp_path / "configured" / "model.pt"
    configured.parent.mkdir()
    configured.write_text("weights")
    return Settings.from_env(
        {"UNSAMV2_DATA_DIR": str(tmp_path / "data"), "UNSAMV2_CHECKPOINT": str(configured)}
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings.pipeline.resolved_database_url)


def publish(store: Store, root: Path, name: str, text: str = "weights") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_FILE).write_text(text)
    with store.session() as session:
        add_version(
            session,
            ModelVersion(
                name=name, path=str(folder), model="test-tiny", checkpoint_sha256="0" * 64
            ),
            publish=True,
        )
    return folder / CHECKPOINT_FILE


def runtime_for(settings: Settings, store: Store | None, loader: Loader) -> ModelRuntime:
    return ModelRuntime(settings.pipeline, store=store, make_predictor=loader, poll_s=0)


def test_published_version_wins_over_the_configured_checkpoint(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    assert choose_weights(settings.pipeline, store).source == "configured"
    path = publish(store, tmp_path / "versions", "v1")
    choice = choose_weights(settings.pipeline, store)
    assert (choice.source, choice.checkpoint, choice.version_name) == ("published", path, "v1")
    assert choose_weights(settings.pipeline, None).source == "configured"


def test_missing_configured_file_and_no_weights_say_what_to_do(tmp_path: Path) -> None:
    missing = Settings.from_env(
        {"UNSAMV2_DATA_DIR": str(tmp_path), "UNSAMV2_CHECKPOINT": str(tmp_path / "no.pt")}
    )
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        choose_weights(missing.pipeline, None)
    nothing = Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path)})
    with pytest.raises(ModelUnavailableError, match="unsamv2 weights download"):
        choose_weights(nothing.pipeline, None)
    runtime = runtime_for(nothing, None, Loader())
    runtime.refresh()
    assert runtime.status()["state"] == "unavailable"
    with pytest.raises(ModelUnavailableError, match="no checkpoint"):
        runtime.predictor()


def test_new_version_is_swapped_in_without_a_restart(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    loader = Loader()
    runtime = runtime_for(settings, store, loader)
    runtime.refresh()
    before, version = runtime.serving()
    assert version == "configured-7" and runtime.status()["source"] == "configured"
    embedding = before.embed_keyed("img", image)
    runtime.refresh()  # nothing changed: nothing is loaded again
    assert len(loader.loads) == 1
    publish(store, tmp_path / "versions", "v1")
    runtime.refresh()
    after, version = runtime.serving()
    assert version == "v1" and runtime.status()["source"] == "published"
    assert after.model_version != before.model_version and len(loader.loads) == 2
    # a request that already held the old predictor finishes with it
    assert (
        before.predict(
            embedding, Prompts.from_arrays([[1.0, 1.0]], [1]), granularity=0.5
        ).model_version
        == "configured-7"
    )


def test_failed_load_keeps_serving_and_is_not_retried_until_the_file_changes(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    loader = Loader()
    runtime = runtime_for(settings, store, loader)
    runtime.refresh()
    broken = publish(store, tmp_path / "versions", "v2", text="broken file")
    for _ in range(3):
        runtime.refresh()
    assert loader.loads.count(broken) == 1  # tried once, not at every poll
    _, version = runtime.serving()
    status = runtime.status()
    assert version == "configured-7" and status["state"] == "ready"
    assert status["source"] == "configured" and status["model_version"] == "configured-7"
    broken.write_text("fixed weights")  # replaced in place: size and mtime change
    os.utime(broken, ns=(1, 1))
    runtime.refresh()
    assert loader.loads.count(broken) == 2 and runtime.model_version == "v2"


def test_failed_first_load_reports_the_reason_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_text("broken")
    settings = Settings.from_env(
        {"UNSAMV2_DATA_DIR": str(tmp_path / "data"), "UNSAMV2_CHECKPOINT": str(path)}
    )
    loader = Loader()
    runtime = runtime_for(settings, None, loader)
    runtime.refresh()
    runtime.refresh()
    status = runtime.status()
    assert status["state"] == "failed" and "truncated checkpoint" in status["reason"]
    assert len(loader.loads) == 1
    with pytest.raises(ModelUnavailableError, match="failed"):
        runtime.serving()
    path.write_text("good weights")
    runtime.refresh()
    assert runtime.status()["state"] == "ready" and len(loader.loads) == 2


def test_runtime_serves_through_its_one_door(settings: Settings) -> None:
    door = ModelDoor(max_concurrent_encodes=1, max_queued=5)
    runtime = ModelRuntime(settings.pipeline, make_predictor=Loader(), poll_s=0, door=door)
    runtime.refresh()
    predictor = runtime.predictor()
    assert isinstance(predictor, GatedPredictor) and predictor.door is door
    assert runtime.serving()[0] is predictor  # one gated predictor per loaded model
    assert runtime.status()["queue"]["max_queued"] == 5

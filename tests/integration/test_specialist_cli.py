"""`unsamv2 specialist` train, list, evaluate, predict on a stored project; its worker job."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeling_pipeline.specialist.jobs import create_specialist_job, run_specialist_job
from labeling_pipeline.specialist.synthetic import store_task_project, template_task
from labeling_pipeline.specialist.trainer import SpecialistConfigError
from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import get_job
from ml_backend.cli import main
from ml_backend.settings import Settings


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, Settings, list]:
    for key in [k for k in os.environ if k.startswith("UNSAMV2_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(tmp_path / "data"))
    settings = Settings.from_env()
    store = Store(settings.pipeline.resolved_database_url)
    scenes = template_task(10, seed=3, height=96, width=128)
    store_task_project(store, settings.pipeline.images_dir, "ships", scenes, label="Ring")
    return store, settings, scenes


def test_cli_trains_lists_evaluates_and_predicts(
    data: tuple[Store, Settings, list], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, settings, scenes = data
    args = ["--project", "ships", "--label", "Ring", "--variant", "test-tiny", "--epochs", "1"]
    gate = ["--min-miou", "0", "--min-dice", "0", "--min-images", "3"]
    assert main(["specialist", "train", *args, *gate]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["published"] and result["scope"] == "specialist:1:Ring"

    assert main(["specialist", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("* " + result["version"]) and "specialist:test-tiny" in listing

    assert main(["specialist", "evaluate", result["version"]]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["images"] == result["held_out_images"] and 0.0 <= scores["miou"] <= 1.0

    image = tmp_path / "scene.png"
    Image.fromarray(scenes[0].image).save(image)
    out = tmp_path / "masks"
    assert main(["specialist", "predict", result["version"], str(image), "--out", str(out)]) == 0
    assert "region(s)" in capsys.readouterr().out
    mask = np.asarray(Image.open(out / "scene.png"))
    assert mask.shape == (96, 128) and set(np.unique(mask)) <= {0, 255}


def test_cli_names_the_count_needed(
    data: tuple[Store, Settings, list], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--project", "ships", "--label", "Ring", "--variant", "test-tiny", "--min-images", "30"]
    assert main(["specialist", "train", *args]) == 2
    assert "needs at least 30" in capsys.readouterr().err
    assert main(["specialist", "list"]) == 0
    assert "no specialists" in capsys.readouterr().out


def test_job_records_the_outcome_and_a_redelivery_returns_it(
    data: tuple[Store, Settings, list],
) -> None:
    store, settings, _ = data
    with pytest.raises(SpecialistConfigError, match="unknown"):
        create_specialist_job(store, "ships", ["Ring"], config={"epoch": 1})
    job_id = create_specialist_job(
        store,
        "ships",
        ["Ring"],
        config={"variant": "test-tiny", "epochs": 1},
        gate={"min_miou": 0.0, "min_dice": 0.0},
        min_images=3,
    )
    result = run_specialist_job(settings.pipeline, store, job_id)
    with store.session() as session:
        job = get_job(session, job_id)
        assert job.status == "done" and job.progress_done == job.progress_total > 0
    assert run_specialist_job(settings.pipeline, store, job_id) == result


def test_bench_specialist_reports_the_specialist_and_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    args = ["--variant", "test-tiny", "--train", "3", "--test", "2", "--epochs", "1"]
    assert main(["bench", "specialist", *args, "--size", "128x96", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"].split()[0] for r in rows] == ["specialist", "plain"]
    assert all(r["images"] == 2 and 0.0 <= r["miou"] <= 1.0 for r in rows)
    assert "plain U-Net" in capsys.readouterr().out

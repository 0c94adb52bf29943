"""What a new user trips on: one-line errors, quiet logs, empty listings, refused hopeless jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import create_job, start_job, start_subtask
from labeling_pipeline.store.models import Job, PseudoLabelRun, TrainingRun
from labeling_pipeline.store.repository import find_project
from labeling_pipeline.training.data import TrainingDataError
from labeling_pipeline.training.project import train_project
from ml_backend import cli
from ml_backend.cli import label_studio
from ml_backend.settings import Settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    """A fresh data directory for in-process `unsamv2` calls; no other settings."""
    for key in list(os.environ):
        if key.startswith(("UNSAMV2_", "LABEL_STUDIO_")):
            monkeypatch.delenv(key)
    folder = tmp_path / "data"
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def project_with_image(data_dir: Path, tmp_path: Path, scene_image) -> str:
    path = tmp_path / "scene.png"
    Image.fromarray(scene_image).save(path)
    assert cli.main(["images", "add", "--project", "P", str(path)]) == 0
    return "P"


def store_of(data_dir: Path) -> Store:
    return Store(
        Settings.from_env({"UNSAMV2_DATA_DIR": str(data_dir)}).pipeline.resolved_database_url
    )


def one_line_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("unsamv2"), err
    assert "Traceback" not in err and ": error: " in err
    for word in words:
        assert word in err, err


def test_non_numeric_levels_are_a_usage_error_in_one_line(data_dir, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["ls-config", "--levels", "a,b"])
    assert info.value.code == 2
    one_line_error(capsys.readouterr().err, "--levels", "'a,b'")


def test_levels_out_of_range_are_one_line(data_dir, capsys) -> None:
    assert cli.main(["ls-config", "--levels", "0.05,2"]) == 2
    one_line_error(capsys.readouterr().err, "[0.1, 1.0]")


def test_any_usage_error_is_one_line(data_dir, capsys) -> None:
    for argv in (["jobs", "--limit", "many"], ["no-such-command"], ["train"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        one_line_error(capsys.readouterr().err, "--help")


def test_value_and_os_errors_of_a_command_are_one_line(data_dir, capsys, monkeypatch) -> None:
    """Errors a command lets through (a helper's ValueError, a missing file) are not tracebacks."""

    def broken(args) -> int:
        raise ValueError("bad value\nwith a second line")

    monkeypatch.setattr(label_studio, "run_config", broken)
    assert cli.main(["ls-config"]) == 2
    one_line_error(capsys.readouterr().err, "ls-config: error: bad value with a second line")
    assert cli.main(["weights", "import", "unsamv2", str(data_dir / "missing.pt")]) == 2
    one_line_error(capsys.readouterr().err, "does not exist")
    data_dir.mkdir(parents=True, exist_ok=True)
    assert cli.main(["weights", "import", "unsamv2", str(data_dir)]) == 2
    one_line_error(capsys.readouterr().err, "is a folder, not a file")


def test_adding_images_that_do_not_exist_is_an_error(data_dir, capsys) -> None:
    assert cli.main(["images", "add", "--project", "P", str(data_dir / "nope.png")]) == 2
    one_line_error(capsys.readouterr().err, "nope.png", "nothing added")


def test_train_without_weights_fails_before_any_work(data_dir, project_with_image, capsys):
    assert cli.main(["train", "--project", project_with_image]) == 2
    one_line_error(capsys.readouterr().err, "no base checkpoint", "unsamv2 weights")
    with store_of(data_dir).session() as session:
        assert session.query(Job).filter(Job.status.in_(["queued", "running"])).count() == 0
        assert session.query(TrainingRun).count() == 0
        assert session.query(PseudoLabelRun).count() == 0
    assert not (data_dir / "training").exists()


def test_a_training_job_without_weights_is_failed_without_pseudo_labelling(
    data_dir, project_with_image
) -> None:
    """The worker path: the job is marked failed and no extractor is ever built."""
    settings = Settings.from_env().pipeline
    store = store_of(data_dir)
    with store.session() as session:
        project_id = find_project(session, project_with_image).id
        job_id = create_job(session, "train", project_id=project_id).id
    built: list[str] = []
    with pytest.raises(TrainingDataError, match="no base checkpoint"):
        train_project(settings, store, job_id, extractor_for=lambda spec: built.append(spec))
    assert built == []
    with store.session() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and "no base checkpoint" in job.message
    assert not (data_dir / "training").exists()  # no run folder, no pseudo-labels


def test_models_list_says_when_nothing_is_published(data_dir, capsys) -> None:
    assert cli.main(["models", "list"]) == 0
    assert capsys.readouterr().out.startswith("no model versions published yet (")


def test_tries_count_executions_of_the_job_task_not_its_image_tasks(data_dir, capsys) -> None:
    store = store_of(data_dir)
    with store.session() as session:
        job_id = create_job(session, "pseudo_label", total=3).id
    with store.session() as session:
        start_job(session, job_id, worker_pid=11)  # the project task
    for _ in range(3):
        with store.session() as session:
            start_subtask(session, job_id, worker_pid=12)  # one per image
    assert cli.main(["jobs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "running" and row["attempts"] == 1
    with store.session() as session:
        start_job(session, job_id, worker_pid=13)  # the project task redelivered
    assert cli.main(["jobs"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert line.split()[header.split().index("tries")] == "2"


def test_sync_without_label_studio_is_refused_before_a_job_exists(data_dir, capsys) -> None:
    assert cli.main(["jobs", "submit", "sync", "--ls-project", "3"]) == 2
    one_line_error(capsys.readouterr().err, "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")
    with store_of(data_dir).session() as session:
        assert session.query(Job).count() == 0


def _unsamv2(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_STUDIO_"))}
    env["UNSAMV2_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "ml_backend.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_database_and_broker_commands_are_quiet_unless_verbose(
    data_dir, project_with_image
) -> None:
    """No Alembic narration or kombu's "No hostname was supplied" by default; -v shows them."""
    quiet = _unsamv2(["jobs", "submit", "pseudo-label", "--project", project_with_image], data_dir)
    assert quiet.returncode == 0 and "queued job" in quiet.stdout
    assert quiet.stderr == ""
    listing = _unsamv2(["jobs"], data_dir)
    assert listing.returncode == 0 and listing.stderr == ""
    fresh = data_dir.parent / "fresh"
    verbose = _unsamv2(["-v", "jobs"], fresh)  # a new database: migrations run and are shown
    assert verbose.returncode == 0
    assert "alembic" in verbose.stderr and "Running upgrade" in verbose.stderr
    broker = _unsamv2(["-v", "jobs", "submit", "pseudo-label", "--project", "P"], data_dir)
    assert broker.returncode == 0 and "kombu" in broker.stderr

"""The weight-free fallback of the pseudo-label features shows in /health and in the job report.

`UNSAMV2_FEATURES` defaults to ``auto:<data>/weights``; with no DINO model there the pipeline
uses the ``color`` extractor, and both the backend's /health and the pseudo-label job (its
params, listed by `unsamv2 jobs` and the jobs endpoint) say so.
"""

from __future__ import annotations

from pathlib import Path

from labeling_pipeline.pseudo_labels.extractors import features_status
from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import get_job, job_as_dict
from labeling_pipeline.store.repository import get_or_create_project
from labeling_pipeline.worker.app import create_celery_app
from labeling_pipeline.worker.jobs import submit_pseudo_label_run
from ml_backend.label_studio.app import create_app
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path / "data"), **extra})


def test_health_reports_the_weight_free_fallback(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    features = app.test_client().get("/health").get_json()["features"]
    assert features["extractor"] == "color"
    assert "color" in features["warning"]
    assert features["spec"] == settings.pipeline.features


def test_an_explicit_extractor_has_no_warning() -> None:
    assert features_status("color") == {"spec": "color", "extractor": "color", "warning": ""}


def test_the_pseudo_label_job_report_carries_the_warning(tmp_path: Path) -> None:
    settings = _settings(tmp_path).pipeline  # embedded broker: the message waits in a folder
    store = Store(settings.resolved_database_url)
    with store.session() as session:
        project_id = get_or_create_project(session, "fallback").id
    job_id = submit_pseudo_label_run(create_celery_app(settings), store, project_id)
    with store.session() as session:
        report = job_as_dict(get_job(session, job_id))
    assert "color" in report["params"]["features_warning"]
    explicit = submit_pseudo_label_run(
        create_celery_app(settings), store, project_id, features="color"
    )
    with store.session() as session:
        assert job_as_dict(get_job(session, explicit))["params"]["features_warning"] == ""

"""Backend routes that need no model: health, setup, versions, jobs, auth, error bodies."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeling_pipeline.store import Store
from labeling_pipeline.store.jobs import create_job
from ml_backend.label_studio.app import create_app
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"UNSAMV2_DATA_DIR": str(tmp_path)})


def make_client(settings: Settings):
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()  # synchronously, for the test
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    return app.test_client(), store


def test_unavailable_model_is_reported_with_its_reason(settings: Settings) -> None:
    client, _ = make_client(settings.with_pipeline(checkpoint=Path("/nowhere/x.pt")))
    body = client.get("/health").get_json()
    assert body["status"] == "UP"
    assert body["model"]["state"] == "unavailable"
    assert "/nowhere/x.pt does not exist" in body["model"]["reason"]
    assert client.post("/setup", json={"project": "1.1"}).get_json() == {
        "model_version": "unavailable"
    }


def test_jobs_endpoint_lists_progress(settings: Settings) -> None:
    client, store = make_client(settings)
    with store.session() as s:
        job_id = create_job(s, "sync", params={"ls_project_id": 3}, total=4).id
    listing = client.get("/jobs").get_json()["jobs"]
    assert listing[0]["id"] == job_id and listing[0]["progress"] == {"done": 0, "total": 4}
    assert client.get(f"/jobs/{job_id}").get_json()["kind"] == "sync"
    missing = client.get("/jobs/999")
    assert missing.status_code == 404 and "no job 999" in missing.get_json()["error"]
    assert client.get("/jobs?limit=0").status_code == 400


def test_malformed_requests_get_json_errors(settings: Settings) -> None:
    client, _ = make_client(settings)
    answer = client.post("/setup", data="{not json", content_type="application/json")
    assert answer.status_code == 400 and "JSON object" in answer.get_json()["error"]
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").get_json()["status"] == 404


def test_basic_auth_protects_everything_but_the_webhook(settings: Settings) -> None:
    protected = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(settings.pipeline.data_dir),
            "UNSAMV2_BASIC_AUTH_USER": "ls",
            "UNSAMV2_BASIC_AUTH_PASS": "pw",
        }
    )
    client, _ = make_client(protected)
    assert client.get("/health").status_code == 401
    ok = client.get("/health", headers={"Authorization": "Basic bHM6cHc="})  # ls:pw
    assert ok.status_code == 200
    assert client.get("/health", headers={"Authorization": "Basic bHM6eHg="}).status_code == 401

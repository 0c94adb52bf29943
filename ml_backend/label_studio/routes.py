"""HTTP routes of the backend."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from labeling_pipeline.store.repository import get_job, job_as_dict, list_jobs, list_model_versions
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import backend

blueprint = Blueprint("label_studio", __name__)


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


@blueprint.get("/health")
def health() -> Any:
    """Liveness for Label Studio (always 200 while the process serves) with the model state."""
    status = backend().runtime.status()
    return jsonify({"status": "UP", "model_class": "UnSAMv2", "model": status})


@blueprint.post("/setup")
def setup() -> Any:
    """Answer Label Studio's setup call with the serving model version (never loads a model)."""
    _json_body()
    return jsonify({"model_version": backend().runtime.model_version})


@blueprint.get("/versions")
def versions() -> Any:
    """Published model versions, newest first, plus the serving one."""
    context = backend()
    with context.store.session() as session:
        names = [v.name for v in list_model_versions(session)]
    serving = context.runtime.model_version
    if serving != "unavailable" and serving not in names:
        names.insert(0, serving)
    return jsonify({"versions": names, "current": serving})


@blueprint.get("/jobs")
def jobs() -> Any:
    """Recent jobs with their progress (newest first; ``?limit=`` up to 500)."""
    raw = request.args.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise BadRequestError("limit must be an integer from 1 to 500")
    with backend().store.session() as session:
        return jsonify({"jobs": [job_as_dict(job) for job in list_jobs(session, limit=int(raw))]})


@blueprint.get("/jobs/<int:job_id>")
def job(job_id: int) -> Any:
    """One job."""
    with backend().store.session() as session:
        return jsonify(job_as_dict(get_job(session, job_id)))

"""HTTP routes of the backend."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, jsonify, request

from labeling_pipeline.store import NotFoundError
from labeling_pipeline.store.jobs import get_job, job_as_dict, list_jobs
from labeling_pipeline.worker.watchdog import fail_lost
from ml_backend.errors import BadRequestError
from ml_backend.label_studio import predict as predict_service
from ml_backend.label_studio.context import backend
from ml_backend.label_studio.schemas import MAX_ID
from ml_backend.label_studio.versions import project_versions, report_file
from ml_backend.label_studio.webhook import handle_event

blueprint = Blueprint("label_studio", __name__)


def same_secret(given: str, expected: str) -> bool:
    """Compare two secrets in constant time (any characters: compared as UTF-8 bytes)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


@blueprint.get("/health")
def health() -> Any:
    """Liveness for Label Studio (always 200 while the process serves) with the model state."""
    from labeling_pipeline.pseudo_labels.extractors import features_status

    status = backend().runtime.status()
    features = features_status(backend().settings.pipeline.features)  # pseudo-label extractor
    return jsonify(
        {"status": "UP", "model_class": "UnSAMv2", "model": status, "features": features}
    )


@blueprint.post("/setup")
def setup() -> Any:
    """Store the project's config and options; answer with the serving model version."""
    return jsonify(predict_service.setup(backend(), _json_body()))


@blueprint.post("/predict")
def predict() -> Any:
    """Interactive masks (with a context) or whole-image pre-annotation (without)."""
    return jsonify(predict_service.predict(backend(), _json_body()))


def _webhook_authorized() -> bool:
    """The secret header (project webhooks) or basic auth (START_TRAINING from the ML API)."""
    settings = backend().settings
    if settings.webhook_secret is None:
        return True
    given = request.headers.get("X-UnSAMv2-Secret") or request.args.get("secret") or ""
    if same_secret(given, settings.webhook_secret):
        return True
    auth = request.authorization
    return (
        settings.basic_auth is not None
        and auth is not None
        and same_secret(auth.username or "", settings.basic_auth[0])
        and same_secret(auth.password or "", settings.basic_auth[1])
    )


@blueprint.post("/webhook")
def webhook() -> Any:
    """Label Studio events, authenticated by the webhook secret or the backend's basic auth."""
    if not _webhook_authorized():
        message = (
            "missing or wrong webhook secret (Label Studio's Start training call carries "
            "the backend's basic auth instead: configure basic auth for it)"
        )
        return jsonify({"error": message, "status": 401}), 401
    return jsonify(handle_event(backend(), _json_body())), 200


@blueprint.get("/metrics")
def metrics() -> Any:
    """Prometheus text format."""
    return Response(backend().metrics.render(), mimetype="text/plain; version=0.0.4")


@blueprint.get("/versions")
def versions() -> Any:
    """A project's published versions (``?project=<Label Studio id>``; none: global's).

    ``versions`` (Label Studio's model-version dropdown) lists only published versions of that
    project's lineage, plus the one it is served; ``details`` gives each version's status, gate
    verdict and report links.
    """
    return jsonify(project_versions(backend(), request.args.get("project")))


@blueprint.get("/versions/<name>/<filename>")
def version_report(name: str, filename: str) -> Any:
    """A file of a version's training report (report.md, report.json or a chart)."""
    return report_file(backend(), name, filename)


@blueprint.get("/jobs")
def jobs() -> Any:
    """Recent jobs with their progress (newest first; ``?limit=`` up to 500)."""
    raw = request.args.get("limit", "50")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 500:
        raise BadRequestError("limit must be an integer from 1 to 500")
    context = backend()
    fail_lost(context.settings.pipeline, context.store)  # a lost job shows failed, not running
    with context.store.session() as session:
        return jsonify({"jobs": [job_as_dict(job) for job in list_jobs(session, limit=int(raw))]})


@blueprint.get("/jobs/<int:job_id>")
def job(job_id: int) -> Any:
    """One job."""
    if job_id > MAX_ID:
        raise NotFoundError(f"no job {job_id}")
    context = backend()
    fail_lost(context.settings.pipeline, context.store)
    with context.store.session() as session:
        return jsonify(job_as_dict(get_job(session, job_id)))

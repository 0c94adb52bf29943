"""The ``/versions`` answers: a project's lineage, its gate verdicts and its report files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Response, send_file

from labeling_pipeline.store import NotFoundError
from labeling_pipeline.store.models import ModelVersion
from labeling_pipeline.store.versions import (
    LineageError,
    current_by_scope,
    get_version,
    list_versions,
    serving_scope,
)
from labeling_pipeline.training.report import REPORT_FILES
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import BackendContext
from ml_backend.label_studio.schemas import ls_project_id

_MIMETYPES = {".md": "text/markdown", ".json": "application/json", ".png": "image/png"}


def _detail(version: ModelVersion, current: dict[int, str]) -> dict[str, Any]:
    gate = version.gate or {}
    verdict = gate.get("verdict") or {}
    folder = Path(version.path)
    return {
        "name": version.name,
        "scope": version.scope,
        "status": "current" if version.id in current else version.status,
        "parent_id": version.parent_id,
        "created_at": version.created_at.isoformat() if version.created_at else None,
        "gate": {
            "decision": verdict.get("decision"),
            "reason": verdict.get("reason"),
            "metric": verdict.get("metric"),
            "candidate": verdict.get("candidate"),
            "current": verdict.get("current"),
        },
        "report": {
            name: f"/versions/{version.name}/{name}"
            for name in REPORT_FILES
            if (folder / name).is_file()
        },
    }


def project_versions(ctx: BackendContext, project: str | None) -> dict[str, Any]:
    """Return the versions of a Label Studio project's lineage (None: global's).

    Raises:
        BadRequestError: `project` is not a Label Studio project id.
    """
    ls_id = ls_project_id(project) if project else None
    if project and ls_id is None:
        raise BadRequestError("project must be a Label Studio project id")
    scope = serving_scope(ls_id)
    with ctx.store.session() as session:
        current = current_by_scope(session)
        rows = list_versions(session, scope=scope)
        details = [_detail(v, current) for v in rows]
        names = [v.name for v in rows if v.status == "published"]
    serving = ctx.runtime.version_for(scope)
    if serving != "unavailable" and serving not in names:
        names.insert(0, serving)  # global's version, or the base checkpoint
    return {"scope": scope, "current": serving, "versions": names, "details": details}


def report_file(ctx: BackendContext, name: str, filename: str) -> Response:
    """Send one report file of a version.

    Raises:
        NotFoundError: no such version, or not one of its report files.
    """
    if filename not in REPORT_FILES:
        raise NotFoundError(f"no report file {filename[:100]!r} (one of {', '.join(REPORT_FILES)})")
    with ctx.store.session() as session:
        try:
            folder = Path(get_version(session, name).path)
        except LineageError:
            raise NotFoundError(f"no model version {name[:100]!r}") from None
    path = folder / filename
    if not path.is_file():
        raise NotFoundError(f"version {name} has no {filename}")
    return send_file(path, mimetype=_MIMETYPES[path.suffix])

"""The small part of Nuclio's dashboard API that CVAT calls, served by the backend itself.

Point Community CVAT at this server (``CVAT_NUCLIO_HOST``/``CVAT_NUCLIO_PORT``, invoke method
``dashboard``) and it lists and calls one interactor, one detector and one tracker per
granularity preset,
all served by the backend's one model process, with no Nuclio installed, plus one detector per
current task specialist (`ml_backend.cvat.specialist_functions`):

- ``GET /api/functions``: ``{name: entry}`` for every function (CVAT iterates the values);
- ``GET /api/functions/<name>``: one entry;
- ``POST /api/function_invocations``: run the function named by the ``x-nuclio-function-name``
  header on the JSON body CVAT would send to a Nuclio function.

Errors are JSON (`ml_backend.errors`). CVAT drops the body of a failed call: its server
raises ``requests``' ``HTTPError`` and passes on only that error's text, ``"400 Client Error:
<reason phrase> for url: ..."``, which the UI shows. So a refusal's reason goes into the HTTP
reason phrase (`reason_phrase`), and every failure is also logged here with its message.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from core_model.whole_image import WholeImageConfig
from labeling_pipeline.store import Store
from ml_backend.cvat.presets import CvatFunction, function_annotations
from ml_backend.cvat.service import CvatOptions, CvatService
from ml_backend.cvat.specialist_functions import (
    invoke_specialist,
    is_specialist_name,
    specialist_function,
    specialist_functions,
)
from ml_backend.errors import BadRequestError, error_body, error_headers
from ml_backend.label_studio.context import BackendContext

logger = logging.getLogger(__name__)

blueprint = Blueprint("cvat_dashboard", __name__, url_prefix="/api")

_EXTENSION = "unsamv2.cvat"
FUNCTION_HEADER = "x-nuclio-function-name"
_STATE = {"ready": "ready", "loading": "building"}  # runtime state -> Nuclio function state


@blueprint.record_once
def _create_service(state: BlueprintSetupState) -> None:
    context: BackendContext = state.app.extensions["unsamv2"]
    settings = context.settings
    state.app.extensions[_EXTENSION] = CvatService(
        context.runtime.serving,
        settings.cvat_presets,
        CvatOptions(
            max_image_pixels=settings.max_image_pixels,
            # at most 100 masks, decoded for at most the deadline; grid and thresholds per preset
            whole_image=WholeImageConfig(max_masks=100, deadline_s=settings.preannotate_deadline_s),
            tracker_sessions=settings.cvat_tracker_sessions,
            tracker_ttl_s=settings.cvat_tracker_ttl_s,
            state_secret=settings.cvat_state_secret,
        ),
    )


def service() -> CvatService:
    """The CVAT service of the current app."""
    found: CvatService = current_app.extensions[_EXTENSION]
    return found


def function_entry(function: CvatFunction, state: str) -> dict[str, Any]:
    """Return a function as Nuclio's dashboard lists it (the fields CVAT reads)."""
    return {
        "metadata": {"name": function.name, "annotations": function_annotations(function)},
        "spec": {"description": function.description},
        "status": {"state": state},
    }


def _store() -> Store:
    context: BackendContext = current_app.extensions["unsamv2"]
    return context.store


def _state() -> str:
    context: BackendContext = current_app.extensions["unsamv2"]
    return _STATE.get(context.runtime.status()["state"], "error")


@blueprint.get("/functions")
def list_functions() -> Any:
    """Every function, keyed by name."""
    state = _state()
    listing = {f.name: function_entry(f, state) for f in service().functions.values()}
    listing.update({n: f.entry() for n, f in specialist_functions(_store()).items()})
    return jsonify(listing)


@blueprint.get("/functions/<name>")
def get_function(name: str) -> Any:
    """One function (404 if unknown)."""
    if is_specialist_name(name):
        return jsonify(specialist_function(_store(), name).entry())
    return jsonify(function_entry(service().function(name), _state()))


@blueprint.post("/function_invocations")
def invoke() -> Any:
    """Run the function named by the ``x-nuclio-function-name`` header."""
    name = request.headers.get(FUNCTION_HEADER, "").strip()
    if not name:
        raise BadRequestError(f"the {FUNCTION_HEADER} header is missing (the function to run)")
    body = request.get_json(silent=True)
    if is_specialist_name(name):
        specialist = specialist_function(_store(), name)
        return jsonify(invoke_specialist(specialist, body, service().options))
    function = service().function(name)
    return jsonify(service().invoke(function, body))


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
MAX_REASON_CHARS = 120


def reason_phrase(message: object) -> str:
    """Return an error message as an HTTP reason phrase: ``UnSAMv2: <message>``.

    Printable ASCII only (a status line is Latin-1 and has no line breaks), at most
    `MAX_REASON_CHARS` characters, cut with ``...``.
    """
    text = " ".join(_UNPRINTABLE.sub(" ", f"UnSAMv2: {message}").split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


@blueprint.errorhandler(Exception)
def _log_failure(exc: Exception) -> Any:
    body, status = error_body(exc)
    if status < 500:  # 500s are logged with their traceback by error_body
        logger.warning(
            "CVAT call %s %s failed (%d): %s",
            request.method,
            request.path,
            status,
            body.get("error"),
        )
    response = jsonify(body)
    response.headers.update(error_headers(exc))
    response.status = f"{status} {reason_phrase(body.get('error'))}"
    return response

"""HTTP routes of the playground (``/playground``), behind the backend's basic auth.

Every POST must carry the ``X-UnSAMv2-Playground`` header (the page sends it): a browser that
holds the backend's basic-auth credentials cannot be made to send it from another site's page
without a CORS preflight, which the backend never grants. Bodies are checked by the pydantic
models of `ml_backend.playground.schemas`; errors are one-line JSON through `ml_backend.errors`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_file
from PIL import Image

from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import backend
from ml_backend.label_studio.schemas import validate
from ml_backend.playground import service
from ml_backend.playground.schemas import (
    OpenFileRequest,
    OpenTaskRequest,
    SweepRequest,
    WholeImageRequest,
)
from ml_backend.playground.sources import PlaygroundImages

STATIC = Path(__file__).parent / "static"
CSRF_HEADER = "X-UnSAMv2-Playground"
_EXTENSION = "unsamv2.playground"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

blueprint = Blueprint(
    "playground", __name__, static_folder="static", static_url_path="/playground/static"
)


def offer_files(app: Flask, files: Iterable[Path]) -> None:
    """Offer single image files in the playground's picker (besides the configured folder)."""
    app.extensions[_EXTENSION] = PlaygroundImages(app.extensions["unsamv2"], files)


def images() -> PlaygroundImages:
    """The playground images of the current app (created on first use)."""
    found: PlaygroundImages | None = current_app.extensions.get(_EXTENSION)
    if found is None:
        found = current_app.extensions.setdefault(_EXTENSION, PlaygroundImages(backend()))
    return found


@blueprint.before_request
def require_page_header() -> None:
    """Refuse POSTs that do not come from the playground page (see the module docstring)."""
    if request.method == "POST" and request.headers.get(CSRF_HEADER) != "1":
        raise BadRequestError(f"playground requests must carry the header {CSRF_HEADER}: 1")


@blueprint.after_request
def security_headers(answer: Response) -> Response:
    """Lock the page down: its own scripts only, no framing, no sniffing."""
    for name, value in _SECURITY_HEADERS.items():
        answer.headers.setdefault(name, value)
    return answer


def _json_body() -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


@blueprint.get("/playground")
def page() -> Any:
    """The playground page."""
    return send_file(STATIC / "index.html", mimetype="text/html", max_age=0)


@blueprint.get("/playground/files")
def files() -> Any:
    """Names of the images offered from the folder and the command line."""
    return jsonify({"files": sorted(images().listing())})


@blueprint.post("/playground/upload")
def upload() -> Any:
    """Open an uploaded image (multipart field ``image``); limits as for /predict."""
    uploaded = request.files.get("image")
    if uploaded is None:
        raise BadRequestError("send the image as the multipart form field 'image'")
    opened = images().upload(uploaded.read(), uploaded.filename or "upload")
    return jsonify(service.describe(backend(), images(), opened))


@blueprint.post("/playground/open")
def open_file() -> Any:
    """Open a file of the listing by name."""
    name = validate(OpenFileRequest, _json_body()).name
    return jsonify(service.describe(backend(), images(), images().open_file(name)))


@blueprint.post("/playground/task")
def open_task() -> Any:
    """Open the first image of a Label Studio task."""
    task_id = validate(OpenTaskRequest, _json_body()).task
    return jsonify(service.describe(backend(), images(), images().open_task(task_id)))


@blueprint.get("/playground/images/<image_id>")
def image_pixels(image_id: str) -> Any:
    """The pixels of an opened image as PNG, in the frame the model sees (EXIF applied)."""
    playground = images()
    opened = playground.get(image_id)
    buffer = io.BytesIO()
    Image.fromarray(playground.pixels(opened)).save(buffer, format="PNG", compress_level=1)
    buffer.seek(0)
    return send_file(buffer, mimetype="image/png", max_age=0)


@blueprint.post("/playground/sweep")
def sweep() -> Any:
    """Masks of the clicks at every granularity of the slider, from one decoder call."""
    body = validate(SweepRequest, _json_body())
    return jsonify(service.sweep(backend(), images(), body))


@blueprint.post("/playground/whole")
def whole() -> Any:
    """Automatic masks of a small grid of clicks at one granularity."""
    body = validate(WholeImageRequest, _json_body())
    return jsonify(service.whole_image(backend(), images(), body))

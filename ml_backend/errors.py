"""The one place where exceptions become HTTP answers: JSON, clear message, no traceback."""

from __future__ import annotations

import logging

from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core_model.errors import (
    CheckpointError,
    FrameIndexError,
    GranularityError,
    InvalidImageError,
    InvalidMaskError,
    InvalidPromptError,
    UnSAMv2Error,
    VideoReadError,
)
from labeling_pipeline.label_studio.client import LabelStudioError
from labeling_pipeline.label_studio.fetch import ImageFetchError
from labeling_pipeline.store import NotFoundError, StoreError
from labeling_pipeline.worker.jobs import JobSubmitError
from ml_backend.model_door import ModelBusyError

logger = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (GranularityError, 400),
    (InvalidPromptError, 400),
    (InvalidImageError, 422),
    (InvalidMaskError, 400),
    (VideoReadError, 422),
    (FrameIndexError, 400),
    (NotFoundError, 404),
    (ImageFetchError, 422),
    (LabelStudioError, 502),
    (JobSubmitError, 503),
    (StoreError, 503),
    (CheckpointError, 503),
    (ModelBusyError, 503),
)


class BadRequestError(UnSAMv2Error, ValueError):
    """The request body or parameters are malformed."""


_MAX_MESSAGE_CHARS = 500


def validation_message(exc: ValidationError) -> str:
    """One line for a failed request check: the first error's location and message.

    The offending value is left out: it may be large or hold secrets.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return "the request does not have the expected shape"
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"])
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return one_line(f"{location}: {message}{more}" if location else f"{message}{more}")


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) and cut to a readable length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 3] + "..."


def status_for(exc: BaseException) -> int:
    """HTTP status for an exception of this project (500 for anything unexpected)."""
    from ml_backend.runtime import ModelUnavailableError

    if isinstance(exc, (BadRequestError, ValidationError)):
        return 400
    if isinstance(exc, ModelUnavailableError):
        return 503
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400 if isinstance(exc, UnSAMv2Error) else 500


def error_headers(exc: BaseException) -> dict[str, str]:
    """Extra headers of an error answer: ``Retry-After`` when the model is busy or on its way."""
    from ml_backend.runtime import ModelUnavailableError

    if isinstance(exc, ModelBusyError):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, ModelUnavailableError) and exc.retry_after_s is not None:
        return {"Retry-After": str(exc.retry_after_s)}
    return {}


def error_body(exc: BaseException) -> tuple[dict[str, object], int]:
    """Return the JSON body and status for an exception; log unexpected ones with traceback."""
    if isinstance(exc, RequestEntityTooLarge):
        message = "the request body is larger than the limit (UNSAMV2_MAX_REQUEST_BYTES)"
        return {"error": message, "status": 413}, 413
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        return {"error": one_line(exc.description or exc.name), "status": code}, code
    status = status_for(exc)
    if status == 500:
        logger.exception("unexpected error while handling a request")
        return {"error": "internal error (see the backend log)", "status": 500}, 500
    if isinstance(exc, ValidationError):
        return {"error": validation_message(exc), "type": "BadRequestError", "status": 400}, 400
    return {"error": one_line(str(exc)), "type": type(exc).__name__, "status": status}, status

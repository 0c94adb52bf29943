"""Nuclio entry points (``handler: ml_backend.cvat.nuclio.main:handler``).

One deployment serves one granularity: the first preset of ``UNSAMV2_CVAT_PRESETS`` (set in
``function.yaml``). The request decides the kind: a body with ``shapes`` or ``states`` is a
tracker call, one with ``pos_points``, ``neg_points`` or ``obj_bbox`` an interactor call, any
other a detector call, so the interactor, detector and tracker ``function.yaml`` files share
this handler. The model comes from the same settings as the
backend (``UNSAMV2_MODEL``, ``UNSAMV2_CHECKPOINT``, ``UNSAMV2_DEVICE``, or the weights folder
of ``UNSAMV2_DATA_DIR``); ``UNSAMV2_DATABASE_URL``, when set, also lets the function pick up
newly published model versions. With ``UNSAMV2_CVAT_SPECIALIST`` set, a deployment serves that
task specialist as a detector instead (`ml_backend.cvat.nuclio.specialist`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core_model.whole_image import WholeImageConfig
from ml_backend.cvat.presets import CvatFunction, FunctionKind, Preset
from ml_backend.cvat.service import CvatOptions, CvatService
from ml_backend.errors import BadRequestError, error_body, error_headers

logger = logging.getLogger(__name__)

INTERACTOR_KEYS = ("pos_points", "neg_points", "obj_bbox")
TRACKER_KEYS = ("shapes", "states")


def init_context(context: Any) -> None:
    """Load the model once per worker into ``context.user_data``.

    Sets ``context.user_data.service`` (a `CvatService`) and ``context.user_data.preset``, or,
    when ``UNSAMV2_CVAT_SPECIALIST`` is set, ``context.user_data.specialist`` (a
    `SpecialistDetector`, see `ml_backend.cvat.nuclio.specialist`).
    """
    from labeling_pipeline.store import Store
    from ml_backend.runtime import ModelRuntime
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    if settings.cvat_specialist:  # a task specialist's detector instead of a preset
        from ml_backend.cvat.nuclio.specialist import SpecialistDetector

        context.user_data.specialist = SpecialistDetector.open(settings)
        return
    database_url = settings.pipeline.database_url
    store = Store(database_url) if database_url else None
    runtime = ModelRuntime(
        settings.pipeline,
        store=store,
        poll_s=settings.model_poll_s if store is not None else 0,
        cache_bytes=settings.cache_mb * 1024 * 1024,
        max_image_pixels=settings.max_image_pixels,
    )
    runtime.refresh()  # load now: Nuclio marks the function ready only after init_context
    if store is not None:
        runtime.start()  # poll for published versions
    preset = settings.cvat_presets[0]
    if len(settings.cvat_presets) > 1:
        logger.warning(
            "UNSAMV2_CVAT_PRESETS lists %d presets; a Nuclio function serves one, using %s",
            len(settings.cvat_presets),
            preset,
        )
    options = CvatOptions(
        max_image_pixels=settings.max_image_pixels,
        # as in direct mode: at most 100 masks, decoded for at most the deadline
        whole_image=WholeImageConfig(max_masks=100, deadline_s=settings.preannotate_deadline_s),
        tracker_sessions=settings.cvat_tracker_sessions,
        tracker_ttl_s=settings.cvat_tracker_ttl_s,
        state_secret=settings.cvat_state_secret,
    )
    setup(context, CvatService(runtime.serving, [preset], options), preset)


def setup(context: Any, service: CvatService, preset: Preset) -> None:
    """Store a ready service in ``context.user_data`` (what `init_context` does; for tests)."""
    context.user_data.service = service
    context.user_data.preset = preset


def _body(event: Any) -> Any:
    body = event.body
    if isinstance(body, (bytes, bytearray, str)):
        try:
            return json.loads(body or b"null")
        except (UnicodeDecodeError, ValueError):
            raise BadRequestError("the request body is not JSON") from None
    return body


def request_kind(body: dict[str, Any]) -> FunctionKind:
    """Which function a request body calls: tracker, interactor or detector."""
    if any(key in body for key in TRACKER_KEYS):
        return "tracker"
    return "interactor" if any(key in body for key in INTERACTOR_KEYS) else "detector"


def handler(context: Any, event: Any) -> Any:
    """Answer one CVAT call with a JSON ``context.Response``; errors are JSON too.

    Returns:
        ``context.Response`` with the interactor's ``{"mask", "bounds"}``, the detector's
        list of shapes or the tracker's ``{"shapes", "states"}`` (status 200), or
        ``{"error", "status"}`` with a 4xx/5xx status.
    """
    specialist = getattr(context.user_data, "specialist", None)
    headers: dict[str, str] = {}
    try:
        body = _body(event)
        if not isinstance(body, dict):
            raise BadRequestError("the request body must be a JSON object")
        if specialist is None:
            service: CvatService = context.user_data.service
            function = CvatFunction(request_kind(body), context.user_data.preset)
            result, status = service.invoke(function, body), 200
        else:
            result, status = specialist.invoke(body), 200
    except Exception as exc:  # every failure becomes a JSON answer, never a traceback
        (result, status), headers = error_body(exc), error_headers(exc)
        if status < 500:
            logger.warning("CVAT call failed (%d): %s", status, result.get("error"))
    return context.Response(
        body=json.dumps(result),
        headers=headers,
        content_type="application/json",
        status_code=status,
    )

"""The backend's Flask application factory (WSGI: ``ml_backend.label_studio.app:create_app()``).

Routes are thin: decode the request, call the library, encode the answer. Errors of every kind
become JSON through `ml_backend.errors` (one handler). Basic auth, when configured, protects
every route except ``/webhook``, which Label Studio calls without it (it has its own secret).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request

from labeling_pipeline.store import Store
from ml_backend.click_batcher import serving_door
from ml_backend.cvat.dashboard import blueprint as cvat_blueprint
from ml_backend.errors import error_body, error_headers
from ml_backend.first_start import first_start_fetcher
from ml_backend.json_provider import FastJSONProvider
from ml_backend.label_studio.context import BackendContext
from ml_backend.label_studio.routes import blueprint, same_secret
from ml_backend.playground.routes import blueprint as playground_blueprint
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

logger = logging.getLogger(__name__)

_OPEN_ROUTES = ("/webhook",)


def _check_basic_auth(settings: Settings) -> Response | None:
    if settings.basic_auth is None or request.path in _OPEN_ROUTES:
        return None
    auth = request.authorization
    user, password = settings.basic_auth
    if (
        auth is not None
        and same_secret(auth.username or "", user)
        and same_secret(auth.password or "", password)
    ):
        return None
    answer = jsonify({"error": "authentication required", "status": 401})
    answer.status_code = 401
    answer.headers["WWW-Authenticate"] = 'Basic realm="unsamv2"'
    return answer


def create_app(
    settings: Settings | None = None,
    *,
    runtime: ModelRuntime | None = None,
    store: Store | None = None,
    celery: Any = None,
    start_runtime: bool = True,
) -> Flask:
    """Build the app; read settings from the environment when none are given.

    Args:
        settings: Process settings (default `Settings.from_env()`).
        runtime: Model runtime (default: built from the settings and started in the background).
        store: Store (default: opened and migrated from the settings).
        celery: Celery app for queuing jobs (default: created on first use).
        start_runtime: Start loading the model in the background now.
    """
    settings = settings or Settings.from_env()
    store = store or Store(settings.pipeline.resolved_database_url)
    runtime = runtime or ModelRuntime(
        settings.pipeline,
        store=store,
        poll_s=settings.model_poll_s,
        cache_bytes=settings.cache_mb * 1024 * 1024,
        max_image_pixels=settings.max_image_pixels,
        door=serving_door(settings),
        max_models=settings.max_loaded_models,
        max_model_bytes=settings.max_loaded_model_mb * 1024 * 1024,
        fetch_default=first_start_fetcher(settings),
    )
    if start_runtime:
        runtime.start()
    if settings.webhook_secret is None:
        logger.warning("UNSAMV2_WEBHOOK_SECRET is not set: /webhook accepts unauthenticated events")
    app = Flask("unsamv2")
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes  # 413 above it
    app.json.sort_keys = False
    context = BackendContext(settings, runtime, store, celery)
    app.extensions["unsamv2"] = context
    app.before_request(lambda: _check_basic_auth(settings))

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(answer: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        context.metrics.observe(
            rule, request.method, answer.status_code, g.get("started", time.perf_counter())
        )
        return answer

    @app.errorhandler(Exception)
    def handle(exc: Exception) -> tuple[Response, int, dict[str, str]]:
        body, status = error_body(exc)
        return jsonify(body), status, error_headers(exc)

    app.register_blueprint(blueprint)
    app.register_blueprint(cvat_blueprint)  # CVAT's Nuclio-dashboard calls, same model process
    app.register_blueprint(playground_blueprint)  # GET /playground: try clicks and granularity
    return app

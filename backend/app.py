"""The application factory: settings in, a Flask app with its models loaded out."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.budget import PixelBudget
from backend.errors import ApiError, Busy
from backend.fetch_policy import FetchPolicy
from backend.imaging import ImagePolicy
from backend.logs import request_context, trace_fields
from backend.process import configure_process
from backend.registry import ModelRegistry
from backend.routes import api
from backend.services import Services
from backend.settings import Settings
from backend.stopping import StopSignal

log = logging.getLogger("backend")


def create_app(settings: Settings | None = None, models: ModelRegistry | None = None) -> Flask:
    """Build the app. Models load here (or in the background if configured), unless `models`
    were made, and started loading, before (`python -m backend` starts them first)."""
    settings = settings or Settings.from_env()
    configure_process(settings.log_level)
    app = Flask(__name__, static_folder=None)  # an API: no static files, no such route
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False  # no HTML OPTIONS answers: a JSON 405
    app.json.sort_keys = False

    if models is None:
        models = ModelRegistry(settings)  # raises BundleError: the process refuses to start
    stop_signal = StopSignal()
    Services(
        settings=settings,
        models=models,
        fetch_policy=FetchPolicy(
            allowed_ports=settings.url_allowed_ports,
            allow_loopback=settings.url_allow_loopback,
            connect_timeout_s=settings.url_connect_timeout_s,
            total_timeout_s=settings.url_total_timeout_s,
            max_bytes=settings.max_image_bytes,
            stop_signal=stop_signal,
        ),
        image_policy=ImagePolicy(max_pixels=settings.max_image_pixels),
        pixel_budget=PixelBudget(
            settings.decode_budget_pixels, settings.decode_wait_s, stop_signal=stop_signal
        ),
        stop_signal=stop_signal,
    ).install(app)
    models.start()

    app.register_blueprint(api)
    _register_error_handlers(app, settings)
    _register_request_logging(app, settings)
    return app


def _register_error_handlers(app: Flask, settings: Settings) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        response = jsonify(exc.to_body())
        if isinstance(exc, Busy):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response, exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Werkzeug's own errors (404 route, 405 method, 413 body...) as JSON, never HTML.
        code = {413: "payload_too_large"}.get(exc.code or 500) or (
            (exc.name or "error").lower().replace(" ", "_")
        )
        message = exc.description or exc.name
        limit = app.config["MAX_CONTENT_LENGTH"]
        if exc.code == 413 and (request.content_length or 0) > limit:
            image_mb = settings.max_image_bytes // (1024 * 1024)
            message = (
                f"the request body is over the {limit:,}-byte limit: images may be at most "
                f"{image_mb} MB ({settings.max_image_bytes:,} bytes); send a smaller one"
            )
        response = jsonify({"error": {"code": code, "message": message}})
        response.status_code = exc.code or 500
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error", extra={"event": "unhandled_error"})
        body = {"error": {"code": "internal_error", "message": "the server failed; try again"}}
        return jsonify(body), 500


def _register_request_logging(app: Flask, settings: Settings) -> None:
    @app.before_request
    def start_request() -> None:
        g.start = time.perf_counter()
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
        request_context.set(
            {
                "request_id": g.request_id,
                **trace_fields(
                    request.headers.get("X-Cloud-Trace-Context"), settings.google_cloud_project
                ),
            }
        )

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        latency_s = time.perf_counter() - g.get("start", time.perf_counter())
        if request.path not in ("/health", "/ready"):
            log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "event": "request",
                    "httpRequest": {
                        "requestMethod": request.method,
                        "requestUrl": request.path,
                        "status": response.status_code,
                        "latency": f"{latency_s:.4f}s",
                    },
                    "timings_ms": g.get("timings_ms"),
                    "model": g.get("model"),
                },
            )
        request_context.set(None)
        return response

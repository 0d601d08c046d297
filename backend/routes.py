"""Routes of the HTTP contract: parse input, call inference, serialise output. No state."""

from __future__ import annotations

import time
from dataclasses import replace

from flask import Blueprint, g, jsonify, request

from backend.errors import NotReady
from backend.imaging import decode_image
from backend.inference import ms_since as _ms
from backend.inference import predict, prepare
from backend.intake import parse_predict_request
from backend.openapi import openapi_spec
from backend.services import services
from runtime.timing import TIMING

api = Blueprint("api", __name__)


@api.get("/health")
def health():
    """Liveness: the process serves HTTP. No inference, no outbound call."""
    return jsonify({"status": "ok"})


# While the models load, GET /ready holds the request up to TIMING.ready_hold_s for them (a
# long poll): Cloud Run's startup probe asks once a second and waits up to a second for each
# answer (deployment/ops.py), so held, the probe that comes during the load answers the moment
# the instance is ready instead of the next probe, up to a second later (benchmarks/RESULTS.md,
# "Cold start", has the figures). A prediction that comes during the load (a client calling
# the instance itself, not through Cloud Run's proxy) is held the same way, and answered (in
# at most half the request threads: ModelRegistry.get).
@api.get("/ready")
def ready():
    models = services().models
    if not models.wait_ready(TIMING.ready_hold_s):
        raise NotReady(models.status_message())
    return jsonify({"status": "ready", "models": models.ordered_ids()})


@api.get("/hello")
def hello():
    return jsonify("Hello!")


@api.get("/models")
def models():
    return jsonify(services().models.listed_ids)


@api.get("/models/<model_id>")
def model_metadata(model_id: str):
    return jsonify(services().models.describe(model_id))


@api.get("/openapi.json")
def openapi():
    """This API's OpenAPI description (backend/openapi.py)."""
    return jsonify(openapi_spec(services().settings))


@api.post("/predict")
def predict_default():
    return _predict(path_model=None)


@api.post("/model/<model_id>/predict")
def predict_by_path(model_id: str):
    """The v3 gateway shape: the model comes from the path."""
    return _predict(path_model=model_id)


def _predict(path_model: str | None):
    serving = services()
    held_ms = 0.0  # waiting for the models to load, if it came during the load
    if path_model is not None:
        start = time.perf_counter()
        # an unknown model in the path is a 404 before any parsing
        serving.models.get(path_model, wait=TIMING.ready_hold_s)
        held_ms = _ms(start)
    start = time.perf_counter()
    parsed = parse_predict_request(
        request,
        max_top_k=serving.settings.max_top_k,
        max_image_bytes=serving.settings.max_image_bytes,
    )
    timings: dict[str, float] = {"parse": _ms(start)}
    start = time.perf_counter()
    # 404, or 503 after the hold, before any download
    session = serving.models.get(path_model or parsed.model, wait=TIMING.ready_hold_s)
    held_ms += _ms(start)
    g.model = session.id
    if held_ms >= 1:
        timings["ready_wait"] = round(held_ms, 2)

    start = time.perf_counter()
    if parsed.url is not None:
        from backend.urlfetch import fetch_url  # loaded after the start (backend/launch.py)

        data = fetch_url(parsed.url, serving.fetch_policy).data
        timings["fetch"] = _ms(start)
    else:
        data = parsed.image

    # The decoded pixels are held, within the process's budget of pixels in flight, only until
    # the model input is made: the forward pass and its queue run without them.
    start = time.perf_counter()
    with serving.pixel_budget.claim() as claim:
        image = decode_image(data, serving.image_policy, reserve=claim.reserve)
        timings["decode"] = round(_ms(start) - claim.waited_ms, 2)
        batch, timings["preprocess"] = prepare(image, session)
        del image
    if claim.waited_ms >= 1:  # it had to wait for room: say so in the timings
        timings["budget_wait"] = claim.waited_ms

    answer = predict(batch, session, parsed.top_k, serving.models.runner)
    timings.update(answer.timings_ms)
    timings["total"] = _ms(g.start)  # since the request arrived (backend.app)
    g.timings_ms = timings
    return jsonify(replace(answer, timings_ms=timings).to_json())

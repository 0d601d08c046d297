"""The backend's OpenAPI 3.1 description, served at GET /openapi.json.

Written by hand beside the routes (backend/routes.py) and checked against them: the tests
compare its paths and methods with the app's URL map, validate it, and fuzz the API from it
(schemathesis: no answer may be a 5xx the server did not mean).
"""

from __future__ import annotations

from typing import Any

from backend.settings import Settings
from runtime.timing import TIMING

_ERROR_STATUSES = {
    "400": "a client mistake: malformed body, both or neither of url/image, bad top_k or URL",
    "404": "unknown model (the message lists the valid ids)",
    "413": "the body or the image is over its limit, or the image has too many pixels",
    "415": "not JSON or multipart, or not an image in a supported format",
    "422": "the image cannot be decoded, has an unusable shape, or costs too much to decode",
    "502": "the image URL's server failed or sent something malformed",
    "503": "not ready yet, busy (Retry-After), or shutting down (Retry-After)",
    "504": "the image URL's server did not answer in time",
}


def openapi_spec(settings: Settings) -> dict[str, Any]:
    """The description of every route, with this instance's limits."""
    error = {"$ref": "#/components/schemas/Error"}
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    options = {
        "model": {"type": "string", "description": "a model id of GET /models"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": settings.max_top_k, "default": 5},
    }
    predict = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["url"],
                        "properties": {"url": {"type": "string", "format": "uri"}, **options},
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            **options,
                        },
                    }
                },
            },
        },
        "responses": {
            "200": _json("the top-k classes", {"$ref": "#/components/schemas/Prediction"}),
            **{status: _json(text, error) for status, text in _ERROR_STATUSES.items()},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Baked Vision backend", "version": "1"},
        "paths": {
            "/health": {"get": _get("liveness: the process serves HTTP", {"type": "object"})},
            "/ready": {
                "get": _get(
                    "every model opened and its weights verified; while they load, the request "
                    f"is held up to {TIMING.ready_hold_s:g} s and answered the moment they are "
                    "ready",
                    {"type": "object"},
                    {"503": _json("still loading", error)},
                )
            },
            "/hello": {"get": _get("a greeting (kept from the assignment)", {"type": "string"})},
            "/models": {
                "get": _get(
                    "model ids, the default first",
                    {"type": "array", "items": {"type": "string"}},
                )
            },
            "/models/{model_id}": {
                "get": {
                    **_get("one model's metadata", {"type": "object"}),
                    "parameters": [model_id],
                    "responses": {
                        "200": _json(
                            "one model's metadata", {"$ref": "#/components/schemas/ModelInfo"}
                        ),
                        "404": _json("unknown model", error),
                    },
                }
            },
            "/predict": {"post": predict},
            "/model/{model_id}/predict": {"post": {**predict, "parameters": [model_id]}},
            "/openapi.json": {"get": _get("this description", {"type": "object"})},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "ModelInfo": {
                    "type": "object",
                    "required": ["id", "precision"],
                    "properties": {
                        "id": {"type": "string"},
                        "reference_checked": {
                            "type": "boolean",
                            "description": "the model answered its bundle's reference image "
                            "here as the build did (fp32: checked once the instance is ready and "
                            "its forward passes pause; int8: before ready; a model that fails "
                            "it ends the instance)",
                        },
                        "precision": {
                            "enum": ["fp32", "int8"],
                            "description": "int8: served by an int8 graph the build's gate "
                            "accepted (accuracy and speed measured on the model's own "
                            "validation set and build machine)",
                        },
                        "quantization": {
                            "type": ["object", "null"],
                            "description": "int8 only: what the gate measured",
                            "properties": {
                                "fp32_top1": {"type": "number", "description": "percent"},
                                "int8_top1": {"type": "number", "description": "percent"},
                                "top1_drop": {"type": "number", "description": "points"},
                                "max_top1_drop": {"type": "number", "description": "points"},
                                "validation_images": {"type": "integer"},
                                "calibration_images": {"type": "integer"},
                                "fp32_forward_ms": {"type": "number"},
                                "int8_forward_ms": {"type": "number"},
                                "speedup": {"type": "number"},
                            },
                        },
                    },
                },
                "Prediction": {
                    "type": "object",
                    "required": ["model", "category", "predictions", "timings_ms"],
                    "properties": {
                        "model": {"type": "string"},
                        "category": {"type": "string"},
                        "predictions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["label", "index", "probability"],
                                "properties": {
                                    "label": {"type": "string"},
                                    "index": {"type": "integer"},
                                    "probability": {"type": "number"},
                                },
                            },
                        },
                        "timings_ms": {"type": "object"},
                        "untrained": {"type": "boolean"},
                    },
                },
            }
        },
    }


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(description: str, schema: dict, more: dict | None = None) -> dict:
    return {
        "summary": description,
        "responses": {"200": _json(description, schema), **(more or {})},
    }

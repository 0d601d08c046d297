"""v3's gateway configuration, generated from the catalog and the backends' addresses.

Two renderings of the same routing table, so what runs locally is what runs on Google Cloud:

    openapi  an OpenAPI 2.0 spec for Google API Gateway: one `x-google-backend` per path,
             APPEND_PATH_TO_ADDRESS, an explicit deadline; the gateway's service account
             (given when the API config is created) signs an ID token for each Cloud Run call.
    nginx    an nginx configuration with the same paths, the local stand-in for API Gateway.

Routes, for each model id of the set, to that model's own backend service:
    POST /model/<id>/predict     GET /models/<id>
and GET /models to the default model's service (which lists every model: LISTED_MODELS).
`python3 -m deployment deploy v3` uploads the first; deployment/local_v3.py runs the second.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for runtime/
from runtime.limits import MAX_IMAGE_MB, MAX_REQUEST_BYTES
from runtime.timing import TIMING

# As long as Cloud Run's request timeout: a request to a starting backend waits for its
# startup budget, then for its own work (runtime/timing.py).
DEADLINE_S = TIMING.gateway_deadline_s
_ID = re.compile(r"^[a-z0-9_]+$")


def _check(routes: dict[str, str], default: str) -> None:
    if not routes:
        raise ValueError("no routes: give at least one --route ID=URL")
    for model_id, url in routes.items():
        if not _ID.match(model_id):
            raise ValueError(f"model id {model_id!r} must be lowercase letters, digits and _")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"backend address for {model_id!r} must be a bare http(s) URL: {url}")
    if default not in routes:
        raise ValueError(f"the default model {default!r} has no route")


def openapi_spec(
    routes: dict[str, str], default: str, *, title: str = "baked-vision", deadline_s=DEADLINE_S
) -> dict:
    """A Swagger 2.0 document for Google API Gateway routing each model to its service."""
    _check(routes, default)

    def backend(url: str) -> dict:
        return {
            "address": url.rstrip("/"),
            "path_translation": "APPEND_PATH_TO_ADDRESS",
            "deadline": deadline_s,
        }

    error = {"description": "error", "schema": {"$ref": "#/definitions/Error"}}
    paths: dict = {
        "/models": {
            "get": {
                "operationId": "listModels",
                "summary": "Model ids, the default first",
                "x-google-backend": backend(routes[default]),
                "responses": {"200": {"description": "model ids"}},
            }
        }
    }
    for model_id, url in routes.items():
        paths[f"/models/{model_id}"] = {
            "get": {
                "operationId": f"describe_{model_id}",
                "summary": f"Metadata of {model_id}",
                "x-google-backend": backend(url),
                "responses": {"200": {"description": "metadata"}, "404": error},
            }
        }
        paths[f"/model/{model_id}/predict"] = {
            "post": {
                "operationId": f"predict_{model_id}",
                "summary": f"Classify an image with {model_id}",
                "consumes": ["application/json", "multipart/form-data"],
                "x-google-backend": backend(url),
                "responses": {
                    "200": {"description": "prediction"},
                    "400": error,
                    "413": error,
                    "415": error,
                    "422": error,
                    "502": error,
                    "504": error,
                },
            }
        }
    return {
        "swagger": "2.0",
        "info": {
            "title": title,
            "description": "Baked Vision v3: one Cloud Run service per model",
            "version": "1.0.0",
        },
        "schemes": ["https"],
        "produces": ["application/json"],
        "paths": paths,
        "definitions": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            }
        },
    }


def nginx_config(
    routes: dict[str, str], default: str, *, listen: int, prefix: str, deadline_s=DEADLINE_S
) -> str:
    """An nginx.conf (run with `nginx -p PREFIX -c FILE`) with the gateway's routes."""
    _check(routes, default)

    def body(code: str, message: str) -> str:
        return json.dumps({"error": {"code": code, "message": message}})

    # nginx's own error pages are HTML: every error it makes itself answers in the
    # backend's JSON shape. (Errors a backend sends pass through untouched.)
    own_errors = {
        400: body("bad_request", "the gateway could not read the request"),
        408: body("request_timeout", "the request was not sent in time"),
        413: body(
            "payload_too_large", f"the request body is over the limit (images: {MAX_IMAGE_MB} MB)"
        ),
        502: body("upstream_error", "the model service is not answering"),
        503: body("upstream_error", "the model service is not answering"),
        504: body("upstream_timeout", "the model service did not answer in time"),
    }
    error_pages = "\n".join(
        f"        error_page {status} = @error_{status};\n"
        f"        location @error_{status} {{ return {status} '{text}'; }}"
        for status, text in own_errors.items()
    )
    not_found = json.dumps(
        {
            "error": {
                "code": "not_found",
                "message": f"no such route; models: {', '.join(routes)} "
                "(POST /model/<id>/predict, GET /models, GET /models/<id>)",
            }
        }
    )
    proxy = (
        f"proxy_connect_timeout 5s; proxy_read_timeout {deadline_s:g}s; "
        f"proxy_send_timeout {deadline_s:g}s; proxy_set_header Host $proxy_host;"
    )
    locations = [
        f"        location = /models {{ proxy_pass {routes[default].rstrip('/')}; {proxy} }}"
    ]
    for model_id, url in routes.items():
        url = url.rstrip("/")
        locations.append(f"        location = /models/{model_id} {{ proxy_pass {url}; {proxy} }}")
        locations.append(
            f"        location = /model/{model_id}/predict {{ proxy_pass {url}; {proxy} }}"
        )
    return f"""# Generated by deployment/gateway.py: the local stand-in for API Gateway.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size {MAX_REQUEST_BYTES};
    default_type application/json;
    server {{
        listen 127.0.0.1:{listen};
{chr(10).join(locations)}
        location / {{ return 404 '{not_found}'; }}
{error_pages}
    }}
}}
"""

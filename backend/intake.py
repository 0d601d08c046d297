"""Parse a prediction request: JSON `{"url": ...}` or a multipart `image`, plus options.

Everything a client can get wrong is answered here with a typed 4xx error, before any
download or inference starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from flask import Request

from backend.errors import BadRequest, PayloadTooLarge, UnsupportedMedia

DEFAULT_TOP_K = 5
_SMALL_INT = re.compile(r"[0-9]{1,3}")  # ASCII digits only: str.isdigit() accepts "²"


@dataclass(frozen=True)
class PredictRequest:
    url: str | None
    image: bytes | None
    model: str | None
    top_k: int


def parse_predict_request(
    request: Request, *, max_top_k: int, max_image_bytes: int
) -> PredictRequest:
    """The request's image source and options, validated."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        fields, image = _json_fields(request), None
    elif mimetype == "multipart/form-data":
        # An HTML form sends its empty fields too: an empty field is an absent one.
        fields = {k: v for k, v in request.form.to_dict().items() if v != ""}
        upload = request.files.get("image")
        image = upload.read(max_image_bytes + 1) if upload is not None else None
        if "image" in fields:  # sent as a text field, not a file
            raise BadRequest("'image' must be a file upload (multipart file field)")
        if image is not None and len(image) > max_image_bytes:
            raise PayloadTooLarge(
                f"the image is over the {max_image_bytes // (1024 * 1024)} MB limit "
                f"({max_image_bytes:,} bytes); send a smaller one"
            )
    else:
        raise UnsupportedMedia(
            "send JSON (Content-Type: application/json) with a 'url', "
            "or multipart/form-data with an 'image' file"
        )
    url = fields.get("url")
    if url is not None and image is not None:
        raise BadRequest("send either 'url' or 'image', not both")
    if url is None and image is None:
        raise BadRequest("send an image: a JSON 'url' or a multipart 'image' file")
    if image is not None and len(image) == 0:
        raise BadRequest("the uploaded image is empty")
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise BadRequest("'url' must be a non-empty string")
    return PredictRequest(
        url=url,
        image=image,
        model=_model(fields.get("model")),
        top_k=_top_k(fields.get("top_k"), max_top_k),
    )


def _json_fields(request: Request) -> dict:
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested JSON must be a 400, not a crash.
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest('the JSON body must be an object, e.g. {"url": "https://..."}')
    return body


def _model(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest("'model' must be a model id string (see GET /models)")
    return value


def _top_k(value: object, max_top_k: int) -> int:
    if value is None or value == "":
        return DEFAULT_TOP_K
    if isinstance(value, bool):
        raise BadRequest(f"'top_k' must be an integer from 1 to {max_top_k}")
    if isinstance(value, str) and _SMALL_INT.fullmatch(value.strip()):
        value = int(value.strip())  # str.strip takes characters int() does not, such as \x1f
    if not isinstance(value, int) or not 1 <= value <= max_top_k:
        raise BadRequest(f"'top_k' must be an integer from 1 to {max_top_k}")
    return value

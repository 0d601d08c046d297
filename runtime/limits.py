"""The image-size limit, defined once for every part that enforces it.

Standard library only, imported by the backend (`backend.settings`), the page
(`frontend.inputs`, `frontend.__main__`) and the v3 gateway (`deployment/gateway.py`, which
runs on the standard library alone). The backend image has the `runtime` package; the frontend
code image copies this one module (docker/frontend.Dockerfile).

An upload is an image inside a multipart body: the boundary lines, the part's headers and the
small form fields (`model`, `top_k`) come on top of the image's bytes. The request limit
leaves room for them, so an image of exactly the limit still fits in one request, and an image
one byte over is refused naming the image limit.
"""

from __future__ import annotations

MAX_IMAGE_MB = 10
MAX_IMAGE_BYTES = MAX_IMAGE_MB * 1024 * 1024
# Pixels of one image: 6000x6000 (36 MP), one decoded RGB image of 108 MB (~147 MiB at its peak).
# The backend refuses more (MAX_IMAGE_PIXELS); the page makes no preview of more.
MAX_IMAGE_PIXELS = 36_000_000
# Multipart framing (boundaries of up to 70 characters, Content-Disposition with a file name of
# up to 255 bytes, Content-Type) and the form's small fields: a few hundred bytes in practice.
MULTIPART_ALLOWANCE_BYTES = 64 * 1024


def max_request_bytes(max_image_bytes: int = MAX_IMAGE_BYTES) -> int:
    """The largest request body that carries an image of `max_image_bytes`."""
    return max_image_bytes + MULTIPART_ALLOWANCE_BYTES


MAX_REQUEST_BYTES = max_request_bytes()

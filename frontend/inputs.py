"""Checks on what the user typed or uploaded, before anything is sent to the backend."""

from __future__ import annotations

from urllib.parse import urlsplit

from runtime.limits import MAX_IMAGE_BYTES

MAX_URL_LENGTH = 2048  # what browsers and most servers reliably accept
MAX_UPLOAD_BYTES = MAX_IMAGE_BYTES  # the backend's image limit, defined once
UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "gif", "bmp")


class InvalidInput(ValueError):
    """The input cannot be sent; the text tells the user what to fix."""


def check_image_url(text: str | None) -> str:
    """The URL to send, stripped; raises InvalidInput saying what is wrong with it."""
    url = (text or "").strip()
    if not url:
        raise InvalidInput("Enter the URL of an image, or upload one.")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(
            f"That URL is too long ({len(url)} characters; at most {MAX_URL_LENGTH})."
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidInput("A URL cannot contain spaces or line breaks.")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced "[" in the host
        raise InvalidInput("That is not a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput("The URL must start with http:// or https://.")
    if not host:
        raise InvalidInput("The URL has no host name, e.g. https://example.com/cat.jpg.")
    return url


def check_upload(data: bytes) -> bytes:
    """The uploaded bytes, if they can be sent; raises InvalidInput otherwise."""
    if not data:
        raise InvalidInput("The uploaded file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidInput(
            f"The image is {len(data) / 2**20:.1f} MB; at most {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    return data

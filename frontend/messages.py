"""Every way a call to the backend can fail, said as a user would want to hear it.

The page's surface shows a sentence and what to do (try another image, a smaller one, later);
the backend's own words, its error code and HTTP status go behind a "Details" expander, for
whoever has to look into it. No Streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass

from frontend.client import (
    BackendAuthError,
    BackendError,
    BackendNotReady,
    BackendTimeout,
    BackendUnavailable,
)
from runtime.limits import MAX_IMAGE_MB, MAX_IMAGE_PIXELS

FORMATS = "JPEG, PNG, WebP, GIF or BMP"
UPLOAD_INSTEAD = "save the image and upload it instead"


@dataclass(frozen=True)
class Plain:
    """What went wrong (a sentence), what to do about it, and the technical detail."""

    sentence: str
    action: str
    detail: str = ""

    @property
    def text(self) -> str:
        return f"{self.sentence} {self.action}".strip()


# The backend's error codes (backend/errors.py and Werkzeug's own, as snake_case) -> words.
BY_CODE = {
    "bad_request": ("The classifier could not use this request.", "Check the image and try again."),
    "url_not_allowed": (
        "That address cannot be used: the classifier only downloads from public web sites.",
        f"Use another link, or {UPLOAD_INSTEAD}.",
    ),
    "unknown_model": ("That model is not available any more.", "Reload the page and pick another."),
    "not_found": ("That model is not available any more.", "Reload the page and pick another."),
    "payload_too_large": (
        "The image is too large.",
        f"Try a smaller one: at most {MAX_IMAGE_MB} MB and {MAX_IMAGE_PIXELS // 10**6} megapixels.",
    ),
    "request_entity_too_large": (
        "The image is too large.",
        f"Try a smaller one: at most {MAX_IMAGE_MB} MB.",
    ),
    "unsupported_media_type": (
        "That file is not a picture the models can read.",
        f"Try a {FORMATS} image.",
    ),
    "undecodable_image": (
        "The image could not be read.",
        f"Try another image, or save this one again as a plain {FORMATS}.",
    ),
    "not_ready": ("The models are still loading.", "Try again in a moment."),
    "busy": (
        "The classifier is busy with other large images.",
        "Try again in a few seconds, or use a smaller image.",
    ),
    "shutting_down": (
        "The classifier was restarting as your image arrived.",
        "Try again: another instance will answer.",
    ),
    "upstream_error": (
        "The image could not be downloaded from that link.",
        f"Check that the link opens the picture itself, or {UPLOAD_INSTEAD}.",
    ),
    "upstream_timeout": (
        "The site holding the image took too long to send it.",
        f"Try again, or {UPLOAD_INSTEAD}.",
    ),
    "internal_error": ("Something went wrong on the classifier's side.", "Try again in a moment."),
}
UNREACHABLE = ("The classifier cannot be reached right now.", "Try again in a moment.")
NOT_READY = ("The classifier is starting up.", "Try again in a moment.")
TIMEOUT = (
    "The classifier took too long to answer.",
    "It may be starting up or busy: try again in a moment.",
)
AUTH = ("This page is not allowed to use the classifier.", "Try again later.")
REFUSED = ("The classifier could not handle this image.", "Try another image.")
BROKEN = ("Something went wrong on the classifier's side.", "Try again in a moment.")


def explain(error: BackendError) -> Plain:
    """The user's version of `error`; its own text becomes the detail."""
    code, status = getattr(error, "code", None), getattr(error, "status", None)
    if code in BY_CODE:
        words = BY_CODE[code]
    elif isinstance(error, BackendAuthError):
        words = AUTH
    elif isinstance(error, BackendTimeout):
        words = TIMEOUT
    elif isinstance(error, BackendNotReady):
        words = NOT_READY
    elif isinstance(error, BackendUnavailable):
        words = UNREACHABLE
    elif status in (404, 405):  # no such route: the page's address or the backend is wrong
        words = BROKEN
    elif status is not None and 400 <= status < 500:
        words = REFUSED
    else:
        words = BROKEN
    return Plain(*words, detail=_detail(error, code, status))


def _detail(error: BackendError, code: str | None, status: int | None) -> str:
    facts = [f"HTTP {status}" if status else None, f"code {code}" if code else None]
    prefix = ", ".join(f for f in facts if f)
    return f"{prefix}: {error}" if prefix else str(error)

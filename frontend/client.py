"""The page's only way to the backend: bounded HTTP calls and typed errors.

Every failure becomes a `BackendError` whose text is a sentence for the page's user: the
backend's own message when it rejected the request (a 4xx, or a 502/504 about the image
URL), a plain "down" / "slow" / "not allowed" otherwise. Pure Python, no Streamlit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from urllib3.exceptions import HTTPError, ReadTimeoutError

from frontend.auth import AUTH_ERRORS

# A new HTTP session per call: plain requests, or one that sends an ID token (frontend/auth.py).
SessionFactory = Callable[[], requests.Session]

MAX_RESPONSE_BYTES = 1024 * 1024  # a prediction or a model list is a few KB
_CHUNK = 64 * 1024
# The backend answers 502/504 with its own message when the *image* URL failed; that message
# is about the user's input, so it is shown like a 4xx.
_IMAGE_SOURCE_CODES = frozenset({"upstream_error", "upstream_timeout"})


class BackendError(Exception):
    """The backend gave no usable answer; `str(error)` says why, for whoever looks into it
    (frontend/messages.py puts it in the user's words)."""

    code: str | None = None  # the backend's error code, when it sent one
    status: int | None = None  # the HTTP status, when there was an answer


class BackendUnavailable(BackendError):
    """Nothing (or only a proxy's error page) answered: the backend is down or unreachable."""


class BackendNotReady(BackendUnavailable):
    """The backend is up but still loading its models."""


class BackendTimeout(BackendError):
    """The backend did not finish answering within the deadline."""


class BackendRejected(BackendError):
    """The backend refused the request and said why (its message is the error's text)."""

    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BackendAuthError(BackendError):
    """The private backend refused this frontend, or no ID token could be had."""


class BackendFailed(BackendError):
    """The backend broke (a 5xx of its own) or answered something that is not the contract."""


@dataclass(frozen=True)
class Label:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One answer of POST /predict, as the page shows it."""

    model: str
    category: str
    labels: tuple[Label, ...]  # best first
    total_ms: float | None
    untrained: bool  # the backend served untrained demo weights

    @property
    def top(self) -> Label:
        return self.labels[0]


class BackendClient:
    """Calls one backend or API gateway (SERVING_URL); both route by path."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        sessions: SessionFactory | None = None,  # None: plain requests sessions
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.sessions = sessions or requests.Session
        self.max_response_bytes = max_response_bytes

    # --- the backend's routes -------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The served model ids, default first (GET /models)."""
        body = self._call("GET", "/models")
        if not (isinstance(body, list) and body and all(isinstance(m, str) for m in body)):
            raise BackendFailed("The backend's model list is not a list of model ids.")
        return body

    def model_info(self, model_id: str) -> dict[str, Any]:
        """Metadata of one model (GET /models/<id>): architecture, accuracy, untrained..."""
        body = self._call("GET", f"/models/{quote(model_id, safe='')}")
        if not isinstance(body, dict):
            raise BackendFailed("The backend's model metadata is not a JSON object.")
        return body

    def predict_url(self, url: str, *, model: str, top_k: int = 5) -> Prediction:
        """Classify the image at `url` (the backend downloads it) with `model`."""
        payload: dict[str, Any] = {"url": url, "top_k": top_k}
        return _prediction(self._call("POST", _predict_path(model), json=payload))

    def predict_image(
        self,
        data: bytes,
        *,
        model: str,
        filename: str = "image",
        content_type: str = "application/octet-stream",
        top_k: int = 5,
    ) -> Prediction:
        """Classify uploaded image bytes (multipart field `image`) with `model`."""
        form = {"top_k": str(top_k)}
        files = {"image": (filename, data, content_type)}
        return _prediction(self._call("POST", _predict_path(model), data=form, files=files))

    # --- one bounded call -------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a 2xx answer; every other outcome raises a BackendError."""
        deadline = time.monotonic() + self.timeout_s
        headers = {"Accept": "application/json"}
        try:
            # requests' read timeout bounds each wait for bytes, not the whole answer; the
            # deadline checked while reading the body bounds the total.
            with (
                self.sessions() as session,
                session.request(
                    method,
                    self.base_url + path,
                    headers=headers,
                    timeout=(self.connect_timeout_s, self.timeout_s),
                    allow_redirects=False,
                    stream=True,
                    **kwargs,
                ) as response,
            ):
                raw = self._read_body(response, deadline)
        except requests.exceptions.ConnectTimeout:
            raise self._unreachable() from None
        # urllib3's own errors: the body is read from the raw stream, below requests' wrapping.
        except (requests.exceptions.ReadTimeout, ReadTimeoutError, _DeadlineExceeded):
            raise BackendTimeout(
                f"The backend did not answer within {self.timeout_s:g} s. It may be starting "
                "up (loading its models) or busy; try again in a moment."
            ) from None
        except (requests.exceptions.RequestException, HTTPError):
            raise self._unreachable() from None
        except AUTH_ERRORS as exc:  # no credentials, or google-auth could not refresh the token
            raise BackendAuthError(
                f"This page could not get a Google ID token to call the private backend: {exc}"
            ) from None

        if not 200 <= response.status_code < 300:
            raise _error_for(response.status_code, raw, path)
        try:
            return json.loads(raw)
        except ValueError:
            raise BackendFailed("The backend's answer is not JSON.") from None

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        chunks, size = [], 0
        # read1 returns what has arrived; iter_content would wait for a full chunk, so a
        # trickling answer would only be noticed after the whole of it.
        while chunk := response.raw.read1(_CHUNK, decode_content=True):
            size += len(chunk)
            if size > self.max_response_bytes:
                raise BackendFailed("The backend's answer is larger than any real answer.")
            if time.monotonic() > deadline:
                raise _DeadlineExceeded
            chunks.append(chunk)
        return b"".join(chunks)

    def _unreachable(self) -> BackendUnavailable:
        return BackendUnavailable(
            f"Cannot reach the backend at {self.base_url}: it is down or the address is wrong."
        )


def _predict_path(model: str) -> str:
    # Every backend serves /model/<id>/predict, and the v3 gateway serves nothing else.
    if not model:
        raise ValueError("a prediction needs a model id (the first of GET /models by default)")
    return f"/model/{quote(model, safe='')}/predict"


class _DeadlineExceeded(Exception):
    """The total deadline passed while the answer was still arriving."""


def _error_for(status: int, raw: bytes, path: str) -> BackendError:
    """The error a non-2xx answer means, with the backend's code and status attached."""
    error = _error_text(status, raw, path)
    error.status = status
    error.code = _contract_error(raw)[0]
    return error


def _error_text(status: int, raw: bytes, path: str) -> BackendError:
    """The error a non-2xx answer means, with the backend's own message when it sent one."""
    code, message = _contract_error(raw)
    if message is not None:
        if status == 503 and code == "busy":
            return BackendNotReady(f"The backend is busy with other large images: {message}")
        if status == 503:
            return BackendNotReady(f"The backend is not ready yet: {message}")
        if 400 <= status < 500 or code in _IMAGE_SOURCE_CODES:
            return BackendRejected(message, status=status, code=code)
        return BackendFailed(f"The backend failed (HTTP {status}): {message}")
    # No contract body: a proxy, Cloud Run's front end or a gateway answered instead.
    if status in (401, 403):
        return BackendAuthError(
            f"The backend refused this page (HTTP {status}): it is private, and this frontend "
            "is not allowed to call it (see BACKEND_AUTH=id_token)."
        )
    if status == 404:
        return BackendFailed(f"The backend has no {path} (HTTP 404): is SERVING_URL right?")
    if status == 429 or status >= 500:
        return BackendUnavailable(
            f"The backend is unavailable right now (HTTP {status}); try again in a moment."
        )
    return BackendFailed(f"The backend answered HTTP {status}, which this page did not expect.")


def _contract_error(raw: bytes) -> tuple[str | None, str | None]:
    """(code, message) of a `{"error": {"code", "message"}}` body, else (None, None)."""
    try:
        error = json.loads(raw)["error"]
        message = error["message"]
    except (ValueError, KeyError, TypeError):
        return None, None
    if not isinstance(message, str) or not message.strip():
        return None, None
    code = error.get("code")
    return (code if isinstance(code, str) else None), message


def _prediction(body: Any) -> Prediction:
    try:
        labels = tuple(
            Label(str(p["label"]), int(p["index"]), float(p["probability"]))
            for p in body["predictions"]
        )
        if not labels:
            raise ValueError("no predictions")
        total = body.get("timings_ms", {}).get("total")
        return Prediction(
            model=str(body["model"]),
            category=str(body.get("category") or labels[0].label),
            labels=labels,
            total_ms=float(total) if total is not None else None,
            untrained=body.get("untrained") is True,
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise BackendFailed("The backend's answer is not a prediction.") from None

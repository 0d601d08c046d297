"""Google ID tokens for calling a private Cloud Run backend (BACKEND_AUTH=id_token).

On Cloud Run, google-auth gets the token from the metadata server as the service's own
account; elsewhere from GOOGLE_APPLICATION_CREDENTIALS (a service account key).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

# Google's ID tokens live an hour; one is reused until this close to its expiry.
_REFRESH_MARGIN_S = 300
_UNKNOWN_EXPIRY_REUSE_S = 300


class TokenError(Exception):
    """No ID token could be had; the text says why."""


def fetch_google_id_token(audience: str) -> str:
    """A fresh ID token for `audience` from google-auth."""
    import google.auth.exceptions
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    try:
        return id_token.fetch_id_token(Request(), audience)
    except google.auth.exceptions.GoogleAuthError as exc:
        raise TokenError(str(exc) or type(exc).__name__) from None


class CachedIdTokens:
    """A token source (audience -> token) that reuses each token until near its expiry.

    Fetching costs a call to the metadata server; a page makes a few backend calls per
    interaction, so tokens are kept. Thread-safe: Streamlit runs sessions on threads.
    """

    def __init__(
        self,
        fetch: Callable[[str], str] = fetch_google_id_token,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # audience -> (token, refresh at)

    def __call__(self, audience: str) -> str:
        with self._lock:
            cached = self._tokens.get(audience)
            now = self._clock()
            if cached is not None and now < cached[1]:
                return cached[0]
            token = self._fetch(audience)
            expiry = _expiry(token)
            refresh_at = expiry - _REFRESH_MARGIN_S if expiry else now + _UNKNOWN_EXPIRY_REUSE_S
            self._tokens[audience] = (token, refresh_at)
            return token


def _expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (the backend's side verifies)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None

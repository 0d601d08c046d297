"""Google ID tokens for calling a private Cloud Run backend (BACKEND_AUTH=id_token).

google-auth does all of it: `fetch_id_token_credentials` finds the credentials (on Cloud Run
the metadata server, as the service's own account; elsewhere GOOGLE_APPLICATION_CREDENTIALS,
a service account key), and `AuthorizedSession` puts the token on each request, fetching a
new one shortly before the current one expires (google-auth's refresh threshold) and once
more if the backend answers 401.
"""

from __future__ import annotations

import threading

import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import id_token


class TokenError(Exception):
    """No ID token could be had; the text says why."""


class IdTokenSessions:
    """HTTP sessions that send a Google ID token for one audience.

    One per process and audience: the credentials, and so the token they hold, are shared by
    every browser session and thread (Streamlit runs sessions on threads), so a token is
    fetched once an hour, not once per request.
    """

    def __init__(self, audience: str) -> None:
        self.audience = audience
        self._lock = threading.Lock()
        self._credentials: google.auth.credentials.Credentials | None = None

    def __call__(self) -> requests.Session:
        """A new session carrying the shared credentials; raises TokenError if none exist."""
        return AuthorizedSession(self._shared_credentials())

    def _shared_credentials(self) -> google.auth.credentials.Credentials:
        with self._lock:
            if self._credentials is None:
                try:
                    self._credentials = id_token.fetch_id_token_credentials(
                        self.audience, request=Request()
                    )
                except google.auth.exceptions.GoogleAuthError as exc:
                    # Not kept: once credentials are provided, the next call finds them.
                    raise TokenError(_reason(exc)) from None
            return self._credentials


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


# What a call through an IdTokenSessions session may raise about the token itself: no
# credentials, or a refresh that failed (google-auth's RefreshError, TransportError).
AUTH_ERRORS = (TokenError, google.auth.exceptions.GoogleAuthError)

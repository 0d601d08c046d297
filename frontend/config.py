"""The frontend's one settings object, read from the environment and validated at start.

Modes:
- ``v1``: one model, the backend's default; no picker.
- ``v2``: a model picker; the choice lives in the browser session and goes with each request.
- ``v3``: an API gateway; models are listed by its ``GET /models`` and each prediction goes
  to ``/model/<id>/predict``.
- ``auto`` (the default with SERVING_URL): the picker appears when the backend serves more
  than one model, so the same image works as frontend_v1 and frontend_v2 with only
  SERVING_URL set, as the deployment scripts do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MODES = ("auto", "v1", "v2", "v3")
AUTH_MODES = ("none", "id_token")


class ConfigError(ValueError):
    """The page is not configured (or configured wrongly); the message names the variable."""


@dataclass(frozen=True)
class FrontendConfig:
    """Where the backend is, how to talk to it, and which page to show."""

    mode: str
    base_url: str  # SERVING_URL (v1, v2, auto) or API_GATEWAY (v3), without a trailing "/"
    auth: str = "none"
    audience: str | None = None  # ID token audience; None: the base URL (a Cloud Run service)
    timeout_s: float = 60.0  # long enough for a backend cold start, when Cloud Run holds requests
    connect_timeout_s: float = 5.0

    @property
    def path_routing(self) -> bool:
        """Whether predictions go to /model/<id>/predict (the gateway) rather than /predict."""
        return self.mode == "v3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FrontendConfig:
        env = os.environ if env is None else env
        serving_url = env.get("SERVING_URL", "").strip()
        gateway = env.get("API_GATEWAY", "").strip()
        mode = env.get("FRONTEND_MODE", "").strip().lower()
        if not mode:
            mode = "v3" if gateway and not serving_url else "auto"
        if mode not in MODES:
            raise ConfigError(f"FRONTEND_MODE={mode!r} is not one of {', '.join(MODES)}")

        name, url = ("API_GATEWAY", gateway) if mode == "v3" else ("SERVING_URL", serving_url)
        if not url:
            hint = "the API gateway's URL" if mode == "v3" else "the backend's URL"
            raise ConfigError(f"{name} is not set: set it to {hint}, e.g. https://....run.app")
        _check_base_url(name, url)

        auth = env.get("BACKEND_AUTH", "none").strip().lower() or "none"
        if auth not in AUTH_MODES:
            raise ConfigError(f"BACKEND_AUTH={auth!r} is not one of {', '.join(AUTH_MODES)}")
        return cls(
            mode=mode,
            base_url=url.rstrip("/"),
            auth=auth,
            audience=env.get("BACKEND_AUDIENCE", "").strip() or None,
            timeout_s=_positive(env, "BACKEND_TIMEOUT_S", cls.timeout_s),
            connect_timeout_s=_positive(env, "BACKEND_CONNECT_TIMEOUT_S", cls.connect_timeout_s),
        )


def _check_base_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={url!r} is not an http(s) URL, e.g. https://....run.app")


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value

"""The frontend's one settings object, read from the environment and validated at start.

The page needs to know where the backend is and whether to offer a model picker; everything
else it learns from the backend's model list (`GET /models`, the default first):
- ``MODEL_PICKER=auto`` (the default): a picker, and the compare view, when the backend lists
  more than one model; one backend image and one page serve v1, v2 and v3 alike.
- ``on``: always a picker (and the compare view with more than one model).
- ``off``: no picker: every request goes to the backend's default model.

Every prediction goes to ``/model/<id>/predict``, which a v1 or v2 backend and the v3 gateway
all serve, so nothing depends on which of them answers.

``FRONTEND_MODE`` is the older setting the deployment scripts still pass: ``v1`` means
``MODEL_PICKER=off``, ``v2`` ``on``, ``v3`` ``on`` with the URL from ``API_GATEWAY``,
``auto`` ``auto``. ``MODEL_PICKER``, when set, wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from runtime.timing import TIMING

PICKER_MODES = ("auto", "on", "off")
# FRONTEND_MODE (older) -> MODEL_PICKER
LEGACY_MODES = {"v1": "off", "v2": "on", "v3": "on", "auto": "auto"}
AUTH_MODES = ("none", "id_token")


class ConfigError(ValueError):
    """The page is not configured (or configured wrongly); the message names the variable."""


@dataclass(frozen=True)
class FrontendConfig:
    """Where the backend is, how to talk to it, and whether to offer a model picker."""

    base_url: str  # SERVING_URL or API_GATEWAY, without a trailing "/"
    picker: str = "auto"
    auth: str = "none"
    audience: str | None = None  # ID token audience; None: the base URL (a Cloud Run service)
    # As long as Cloud Run's request timeout: a backend cold start, then the longest request.
    timeout_s: float = TIMING.page_timeout_s
    connect_timeout_s: float = 5.0

    def shows_picker(self, models: list[str]) -> bool:
        """Whether the page offers a choice among `models` (the backend's list)."""
        return self.picker == "on" or (self.picker == "auto" and len(models) > 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FrontendConfig:
        env = os.environ if env is None else env
        mode = env.get("FRONTEND_MODE", "").strip().lower()
        if mode and mode not in LEGACY_MODES:
            raise ConfigError(
                f"FRONTEND_MODE={mode!r} is not one of {', '.join(LEGACY_MODES)} "
                "(an older setting; MODEL_PICKER=auto|on|off replaces it)"
            )
        picker = env.get("MODEL_PICKER", "").strip().lower() or LEGACY_MODES.get(mode, "auto")
        if picker not in PICKER_MODES:
            raise ConfigError(f"MODEL_PICKER={picker!r} is not one of {', '.join(PICKER_MODES)}")

        name, url = _base_url(env, gateway_only=mode == "v3")
        _check_base_url(name, url)

        auth = env.get("BACKEND_AUTH", "none").strip().lower() or "none"
        if auth not in AUTH_MODES:
            raise ConfigError(f"BACKEND_AUTH={auth!r} is not one of {', '.join(AUTH_MODES)}")
        return cls(
            base_url=url.rstrip("/"),
            picker=picker,
            auth=auth,
            audience=env.get("BACKEND_AUDIENCE", "").strip() or None,
            timeout_s=_positive(env, "BACKEND_TIMEOUT_S", cls.timeout_s),
            connect_timeout_s=_positive(env, "BACKEND_CONNECT_TIMEOUT_S", cls.connect_timeout_s),
        )


def _base_url(env: Mapping[str, str], *, gateway_only: bool) -> tuple[str, str]:
    """(variable, URL): SERVING_URL, else API_GATEWAY (what the v3 deployment sets)."""
    serving_url = env.get("SERVING_URL", "").strip()
    gateway = env.get("API_GATEWAY", "").strip()
    if gateway_only:  # FRONTEND_MODE=v3 always meant the gateway
        if not gateway:
            raise ConfigError(
                "API_GATEWAY is not set: FRONTEND_MODE=v3 calls the API gateway; set it to "
                "the gateway's URL, e.g. https://....gateway.dev"
            )
        return "API_GATEWAY", gateway
    if serving_url:
        return "SERVING_URL", serving_url
    if gateway:
        return "API_GATEWAY", gateway
    raise ConfigError(
        "SERVING_URL is not set: set it to the backend's (or the API gateway's) URL, "
        "e.g. https://....run.app"
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

"""The frontend's one settings object, read from the environment and validated at start.

The page needs to know where the backend is and whether to offer a model picker; everything
else it learns from the backend's model list (`GET /models`, the default first):
- ``MODEL_PICKER=auto`` (the default): a picker, and the compare view, when the backend lists
  more than one model; one backend image and one page serve v1, v2 and v3 alike.
- ``on``: always a picker (and the compare view with more than one model).
- ``off``: no picker: every request goes to the backend's default model.

Every prediction goes to ``/model/<id>/predict``, which a v1 or v2 backend and the v3 gateway
all serve, so nothing depends on which of them answers: ``SERVING_URL`` is the backend's or the
gateway's URL, one frontend image serves every variant.

Each setting has one name. The retired ones (``FRONTEND_MODE``, ``API_GATEWAY``) are refused
when set, with the name that replaced them: silently ignored, they would leave a deployment
that still sets them serving something else than it asks for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from runtime.timing import TIMING

PICKER_MODES = ("auto", "on", "off")
# A retired name -> what replaced it.
RETIRED = {
    "FRONTEND_MODE": "MODEL_PICKER=auto|on|off (v1 was off, v2 and v3 on)",
    "API_GATEWAY": "SERVING_URL (the gateway's URL, as any backend's)",
}
AUTH_MODES = ("none", "id_token")


class ConfigError(ValueError):
    """The page is not configured (or configured wrongly); the message names the variable."""


class RetiredSetting(ConfigError):
    """A retired setting name is set; the message names the one that replaced it."""


@dataclass(frozen=True)
class FrontendConfig:
    """Where the backend is, how to talk to it, and whether to offer a model picker."""

    base_url: str  # SERVING_URL, without a trailing "/"
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
        check_retired(env)
        picker = env.get("MODEL_PICKER", "").strip().lower() or "auto"
        if picker not in PICKER_MODES:
            raise ConfigError(f"MODEL_PICKER={picker!r} is not one of {', '.join(PICKER_MODES)}")

        url = env.get("SERVING_URL", "").strip()
        if not url:
            raise ConfigError(
                "SERVING_URL is not set: set it to the backend's (or the API gateway's) URL, "
                "e.g. https://....run.app"
            )
        _check_base_url("SERVING_URL", url)

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


def check_retired(env: Mapping[str, str]) -> None:
    """Raises RetiredSetting if a retired name is set (even empty: someone still sets it)."""
    found = [name for name in RETIRED if name in env]
    if found:
        raise RetiredSetting(
            "; ".join(f"{name} is retired: set {RETIRED[name]} instead" for name in found)
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

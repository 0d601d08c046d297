"""The backend's one settings object, read from the environment and validated at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.limits import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_MB,
    MAX_IMAGE_PIXELS,
    MAX_REQUEST_BYTES,
    max_request_bytes,
)
from runtime.settings import OPTIMIZATION_LEVELS, SessionSettings, available_cpus
from runtime.timing import TIMING


class SettingsError(ValueError):
    """An environment variable is missing or wrong; the message names it."""


def _default_session() -> SessionSettings:
    return SessionSettings(threads=available_cpus())


@dataclass(frozen=True)
class Settings:
    """Everything the backend can be told; `from_env` reads it, `validate` checks it."""

    bundles_dir: Path = Path("/opt/bundles")  # written by `python -m bake`
    models: str | None = None  # a set (v1, v2) or comma-separated ids; None: every bundle
    default_model: str | None = None  # None: the catalog's default if served, else the first
    # v3: what GET /models lists when this service is one of several behind the gateway
    # (a set or ids); None: the models this service serves.
    listed_models: str | None = None
    allow_untrained: bool = False  # only the local run command serves demo weights
    # Not read from the environment: `python -m backend` sets both, tests choose.
    background_load: bool = False  # load after the server is up; /ready tells when done
    exit_on_load_failure: bool = False  # a failed load ends the process (LOAD_FAILED_EXIT)
    # How ONNX Runtime runs each model: threads from the CPUs this process may use (cgroup
    # quota included); the rest as measured in benchmarks/RESULTS.md.
    session: SessionSettings = field(default_factory=_default_session)
    inference_concurrency: int = 1  # forward passes at once; more oversubscribes the cores
    # The image-size limit is runtime.limits' (shared with the page and the gateway); the
    # request's leaves room for the multipart framing around an upload of that size.
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    # Decoded pixels all requests of the process hold at once (backend/budget.py): two of the
    # largest images at a time, each ~145 MiB while decoded (benchmarks/RESULTS.md, memory under
    # load). How long a request waits for room, like every deadline, is runtime/timing.py's.
    decode_budget_pixels: int = 2 * MAX_IMAGE_PIXELS
    decode_wait_s: float = TIMING.decode_wait_s
    url_allowed_ports: frozenset[int] = frozenset({80, 443})
    url_allow_loopback: bool = False  # tests and local development only
    url_connect_timeout_s: float = 3.0
    url_total_timeout_s: float = TIMING.fetch_s  # the whole download, redirects included
    graceful_timeout_s: int = TIMING.graceful_stop_s  # whole seconds, as GRACEFUL_TIMEOUT_S
    port: int = 8080
    request_threads: int = 8  # request threads (backend/server.py), one request each
    # What a client may take to send its request (backend/server.py). The event loop reads it,
    # not a thread, so a slow client costs a socket and its bytes, never a request thread.
    header_timeout_s: float = 10.0  # request line and headers, from their first byte
    body_timeout_s: float = 60.0  # the body: a 10 MB upload at ~1.4 Mbit/s
    max_header_bytes: int = 32 * 1024
    # Bodies being received at once, all connections together: every request thread's next
    # request at the request limit. Past it a request is answered 503 with Retry-After.
    buffered_bytes_max: int = 8 * MAX_REQUEST_BYTES
    max_top_k: int = 20
    log_level: str = "INFO"
    google_cloud_project: str | None = None  # for Cloud Logging's trace field

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        session = SessionSettings()  # the defaults, read below
        image_mb = reader.integer("MAX_IMAGE_MB", MAX_IMAGE_MB, minimum=1)
        threads = reader.integer("REQUEST_THREADS", cls.request_threads, minimum=1)
        if image_mb > MAX_IMAGE_MB:
            raise SettingsError(
                f"MAX_IMAGE_MB={image_mb} is over the shared limit of {MAX_IMAGE_MB} MB "
                "(runtime/limits.py), which the page and the v3 gateway enforce too: "
                "raise it there, for all of them"
            )
        settings = cls(
            bundles_dir=Path(reader.text("BUNDLES_DIR", str(cls.bundles_dir))),
            models=reader.text("MODELS", "") or None,
            default_model=reader.text("DEFAULT_MODEL", "") or None,
            listed_models=reader.text("LISTED_MODELS", "") or None,
            allow_untrained=reader.flag("ALLOW_UNTRAINED_WEIGHTS", False),
            session=SessionSettings(
                threads=reader.integer("INFERENCE_THREADS", available_cpus(), minimum=1),
                optimization=reader.choice(
                    "ORT_OPTIMIZATION", session.optimization, OPTIMIZATION_LEVELS
                ),
                memory_arena=reader.flag("ORT_MEMORY_ARENA", session.memory_arena),
                prepacking=reader.flag("ORT_PREPACKING", session.prepacking),
                spinning=reader.flag("ORT_SPINNING", session.spinning),
            ),
            inference_concurrency=reader.integer("INFERENCE_CONCURRENCY", 1, minimum=1),
            max_request_bytes=max_request_bytes(image_mb * 1024 * 1024),
            max_image_bytes=image_mb * 1024 * 1024,
            max_image_pixels=reader.integer("MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, minimum=1),
            decode_budget_pixels=reader.integer(
                "DECODE_BUDGET_PIXELS", cls.decode_budget_pixels, minimum=1
            ),
            decode_wait_s=reader.number("DECODE_WAIT_S", cls.decode_wait_s),
            url_allowed_ports=frozenset(reader.integers("URL_ALLOWED_PORTS", [80, 443])),
            url_allow_loopback=reader.flag("URL_ALLOW_LOOPBACK", False),
            url_connect_timeout_s=reader.number("URL_CONNECT_TIMEOUT_S", 3.0),
            url_total_timeout_s=reader.number("URL_TOTAL_TIMEOUT_S", cls.url_total_timeout_s),
            graceful_timeout_s=reader.integer(
                "GRACEFUL_TIMEOUT_S", cls.graceful_timeout_s, minimum=1
            ),
            port=reader.integer("PORT", cls.port, minimum=1),
            request_threads=threads,
            header_timeout_s=reader.number("HEADER_TIMEOUT_S", cls.header_timeout_s),
            body_timeout_s=reader.number("BODY_TIMEOUT_S", cls.body_timeout_s),
            buffered_bytes_max=reader.integer(
                "BUFFERED_BYTES_MAX",
                threads * max_request_bytes(image_mb * 1024 * 1024),
                minimum=max_request_bytes(image_mb * 1024 * 1024),
            ),
            log_level=reader.text("LOG_LEVEL", "INFO").upper(),
            google_cloud_project=reader.text("GOOGLE_CLOUD_PROJECT", "") or None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError(f"LOG_LEVEL={self.log_level!r} is not a logging level")
        if not self.url_allowed_ports or not all(0 < p < 65536 for p in self.url_allowed_ports):
            raise SettingsError("URL_ALLOWED_PORTS must be a comma-separated list of TCP ports")
        if self.url_total_timeout_s + 1 > self.graceful_timeout_s:
            raise SettingsError(
                f"URL_TOTAL_TIMEOUT_S={self.url_total_timeout_s:g} must end at least 1 s before "
                f"GRACEFUL_TIMEOUT_S={self.graceful_timeout_s:g}, or a request in flight at "
                "shutdown is cut off"
            )


class _Reader:
    """Typed access to environment variables, with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        return self.env.get(name, default).strip()

    def choice(self, name: str, default: str, choices) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean: use 1/0, true/false")

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
        if value < minimum:
            raise SettingsError(f"{name}={value} must be at least {minimum}")
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if value <= 0:
            raise SettingsError(f"{name}={value} must be positive")
        return value

    def integers(self, name: str, default: list[int]) -> list[int]:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        if raw == "any":  # local development against servers on arbitrary ports
            return list(range(1, 65536))
        try:
            return [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise SettingsError(f"{name}={raw!r} must be comma-separated integers") from None

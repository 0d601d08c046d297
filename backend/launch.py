"""The serving process's start and stop, below `python -m backend` (backend/__main__.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable

from backend.app import create_app
from backend.registry import (
    REFERENCE_CHECK_AFTER_IDLE_S,
    REFERENCE_CHECK_WITHIN_S,
    ModelRegistry,
)
from backend.server import FrontServer, ServerLimits
from backend.services import services
from backend.settings import Settings
from backend.start_trace import log_phase, phase, since_start

log = logging.getLogger("backend")

_KEEPALIVE_S = 5.0  # an idle connection between two requests, as gunicorn's default
_LISTEN_BACKLOG = 2048


def serve(
    settings: Settings,
    models: ModelRegistry,
    step: Callable[[str], None] = lambda _: None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> int:
    """Serve `models` (loading in the background) until SIGTERM, stop; the exit status.

    `step(name)` is told each step as it begins (it may raise to stop the start there);
    `stop_requested()` says whether a signal came before the server took signals over.
    """
    app = create_app(settings, models)
    serving = services(app)
    step("binding the port")
    server = FrontServer(
        _FirstAnswer(app, then=lambda: _load_the_fetcher_when_idle(serving.models)),
        _listening_socket(settings.port),
        threads=settings.request_threads,
        limits=ServerLimits(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keepalive_s=_KEEPALIVE_S,
            max_header_bytes=settings.max_header_bytes,
            max_body_bytes=settings.max_request_bytes,
            buffered_bytes_max=settings.buffered_bytes_max,
            graceful_s=settings.graceful_timeout_s,
        ),
        stop_signal=serving.stop_signal,
    )
    stopped_at = asyncio.run(_run(server, serving.models, stop_requested))
    _wait_for_loader(stopped_at + settings.graceful_timeout_s - 0.5)
    return 0


def _load_the_fetcher_when_idle(models: ModelRegistry) -> None:
    """Import the URL fetcher (requests and urllib3) on a thread of its own, once the forward
    passes pause as the reference checks wait for them (at most REFERENCE_CHECK_WITHIN_S).

    Its import is a tenth of a second of Python or more. During the start it delayed the
    sessions' openings; imported at ready, the first answer; right after the first answer, v2's
    next three first answers (benchmarks/RESULTS.md, "Cold start", has the figures). A URL
    prediction that comes before this is done imports it itself. (The wait takes no stop: the
    thread is a daemon, and the process ends with `os._exit`.)
    """

    def load() -> None:
        deadline = time.monotonic() + REFERENCE_CHECK_WITHIN_S
        models.runner.wait_idle(REFERENCE_CHECK_AFTER_IDLE_S, threading.Event(), deadline)
        with phase("imports_fetcher"):
            import backend.urlfetch  # noqa: F401

    threading.Thread(target=load, name="fetcher", daemon=True).start()


class _FirstAnswer:
    """The WSGI app; at its first prediction answered 200 it logs the start's last phase and
    runs `then()`: what the start put off."""

    def __init__(self, app, then: Callable[[], None]) -> None:
        self.app = app
        self.then = then
        self.done = False

    def __call__(self, environ: dict, start_response):
        if self.done:
            return self.app(environ, start_response)
        began, statuses = since_start(), []

        def noting_status(status: str, headers, exc_info=None):
            statuses.append(status)
            return start_response(status, headers, exc_info)

        body = self.app(environ, noting_status)
        path = environ.get("PATH_INFO", "")
        if not self.done and path.endswith("/predict") and statuses[-1:] == ["200 OK"]:
            self.done = True  # two first answers at once may both get here: harmless
            log_phase("first_request", began, path=path)
            self.then()
        return body


async def _run(
    server: FrontServer, models: ModelRegistry, stop_requested: Callable[[], bool]
) -> float:
    """Serve until a signal; when the stop began (time.monotonic)."""
    loop = asyncio.get_running_loop()
    stopped_at: list[float] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopped_at:
            return  # a second SIGTERM changes nothing: the stop is under way
        stopped_at.append(time.monotonic())
        doing = (
            f"serving ({server.in_flight()} requests in flight)"
            if models.ready
            else models.status_message()
        )
        log.info(
            "stopping on %s while %s",
            sig.name,
            doing,
            extra={"event": "stopping", "interrupted": doing},
        )
        server.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if stop_requested():  # a signal between the last step and the handlers above
        loop.call_soon(on_signal, signal.SIGTERM)
    await server.run(on_stop=models.stop)
    return stopped_at[0] if stopped_at else time.monotonic()


def _wait_for_loader(deadline: float) -> None:
    """Let a model load in progress end at its step (a session opening), within the stop."""
    for thread in threading.enumerate():
        if thread.name == "model-loader":
            thread.join(max(0.0, deadline - time.monotonic()))


def _listening_socket(port: int) -> socket.socket:
    sock = socket.create_server(("0.0.0.0", port), backlog=_LISTEN_BACKLOG, reuse_port=False)  # noqa: S104  # Cloud Run sends to the container's port
    sock.setblocking(False)
    return sock

"""`python -m backend`: the serving process, as Cloud Run runs it (docker/backend.Dockerfile).

Start and stop are one state machine, because Cloud Run stops instances at any moment, starting
ones included (scale-in, deploys): SIGTERM while importing, reading settings or checking the
bundles ends the process at the end of that step (a fraction of a second); while the models
load (verify and open, then check each model's reference answer: a background thread, begun
before the server's modules are imported; /ready says when the models are open) or serving, the
server stops taking connections, the loader ends at its next step, and every request held
is answered within the graceful stop (backend/server.py). Either way: one log line saying what
was interrupted, exit status 0, well inside Cloud Run's 10 s. The process ends with `os._exit`
once everything is answered and the logs are flushed: no interpreter teardown runs under ONNX
Runtime's threads or a loader still opening a session.

A wrong setting or a missing bundle: one clear log line, exit status 1.
"""

from __future__ import annotations

import signal  # first: until the handler below is in place, SIGTERM kills the process outright

# Signals that came before the server listened. The handler only notes them: raised inside an
# import, an exception is turned into another by the importing module (numpy's "import numpy
# failed"); the start checks for them between its steps instead, each a fraction of a second.
_pending: list[str] = []


class _Stopped(BaseException):
    """SIGTERM (or SIGINT) arrived before the server listened: leave whatever is under way."""


def _stop_now(signum: int, _frame) -> None:
    _pending.append(signal.Signals(signum).name)


def _note_stops() -> None:
    """Note SIGTERM and SIGINT, with interrupted system calls restarted (SA_RESTART), as
    asyncio does for its own handlers: the handler only notes the signal, and C or C++ code
    that does not retry a call ended by EINTR would fail instead. (Once in a CI run, a SIGTERM
    0.3 s after launch failed onnxruntime's import, "ImportError: initialization failed", exit
    1; not reproduced on demand, this is its likely cause.)"""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_now)
        signal.siginterrupt(signum, False)


if __name__ == "__main__":
    _note_stops()

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402

from backend.logs import configure_logging  # noqa: E402
from backend.start_trace import log_phase, phase, since_start  # noqa: E402

_INTERPRETER_S = since_start()  # the interpreter's own start, up to this module

log = logging.getLogger("backend")


def main(before_exit: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM; `before_exit` runs last (tests list the modules loaded)."""
    _note_stops()
    configure_logging(os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO")
    log_phase("interpreter", 0.0, _INTERPRETER_S)
    step, code = ["importing"], 0
    refusals: tuple[type[Exception], ...] = ()  # none until the modules that raise them load

    def next_step(name: str) -> None:
        """Stop here if a signal came during the step that ended; else begin `name`."""
        if _pending:
            raise _Stopped(_pending[0])
        step[0] = name

    models = None
    try:
        # What loading needs first (numpy, ONNX Runtime, Pillow); the server's modules (Flask,
        # the routes) are imported while the digests run and the sessions open (ONNX Runtime
        # releases the GIL while it opens one: benchmarks/RESULTS.md, "Cold start").
        with phase("imports"):
            from backend.process import configure_process
            from backend.registry import ModelRegistry
            from backend.settings import Settings, SettingsError
            from runtime.bundle import BundleError
            from runtime.session import share_one_thread_pool

        refusals = (SettingsError, BundleError)  # the start's own: told in one line
        next_step("reading settings")
        with phase("settings"):
            settings = replace(Settings.from_env(), background_load=True, exit_on_load_failure=True)
            configure_process(settings.log_level)  # logging, warnings: before any session
            share_one_thread_pool(settings.session)  # one intra-op pool for every model
        next_step("checking the bundles")
        models = ModelRegistry(settings)
        models.start()  # verify and open in the loader thread, then the reference checks
        next_step("importing the server")
        with phase("imports_server"):
            from backend.launch import serve
        code = serve(settings, models, step=next_step, stop_requested=lambda: bool(_pending))
    except _Stopped as stopped:
        if models is not None:
            models.stop()
        log.info(
            "stopped by %s while %s",
            stopped,
            step[0],
            extra={"event": "stopping", "interrupted": step[0]},
        )
    except refusals as exc:
        log.critical("refusing to start: %s", exc, extra={"event": "start_refused"})
        code = 1
    except Exception:  # anything else that breaks the start: told with its traceback
        log.critical("failed to start", exc_info=True, extra={"event": "start_failed"})
        code = 1
    if before_exit is not None:
        before_exit()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

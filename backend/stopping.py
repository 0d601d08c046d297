"""The stop of the process, as the requests inside it see it.

On SIGTERM Cloud Run gives the process 10 s before SIGKILL; the server (backend/server.py)
answers every request it holds by the graceful stop (runtime/timing.py, 9 s). A request that
is waiting — for room in the pixel budget, for an image download — would otherwise run past
it and be cut off with no answer, so its wait ends at `answer_by`: early enough that its own
decode and forward pass (the budget's `compute_s`) and writing the answer still fit, and it is
answered 503 `shutting_down` with Retry-After (another instance will take it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from backend.errors import ShuttingDown
from runtime.timing import TIMING

# What a request needs after its wait: its compute, and half a second to write and exit.
ANSWER_MARGIN_S = TIMING.compute_s + 0.5


class StopSignal:
    """Whether the process is stopping, and by when (time.monotonic) waits must be over."""

    def __init__(self) -> None:
        self._answer_by: float | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[float], None]] = []

    @property
    def stopping(self) -> bool:
        return self._answer_by is not None

    @property
    def answer_by(self) -> float | None:
        return self._answer_by

    def stop(self, graceful_s: float) -> None:
        """The process stops now: waits end `ANSWER_MARGIN_S` before `graceful_s` is over."""
        with self._lock:
            if self._answer_by is not None:
                return
            self._answer_by = time.monotonic() + max(0.0, graceful_s - ANSWER_MARGIN_S)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self._answer_by)

    def subscribe(self, listener: Callable[[float], None]) -> Callable[[], None]:
        """Call `listener(answer_by)` at the stop (now, if stopping); returns the unsubscriber."""
        with self._lock:
            answer_by = self._answer_by
            if answer_by is None:
                self._listeners.append(listener)
        if answer_by is not None:
            listener(answer_by)
            return lambda: None

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def wait_ends(self, own_deadline: float) -> float:
        """The earlier of a wait's own deadline and the stop's `answer_by`."""
        answer_by = self._answer_by
        return own_deadline if answer_by is None else min(own_deadline, answer_by)


def shutting_down() -> ShuttingDown:
    return ShuttingDown(
        "the server is shutting down and cannot finish this request in time; "
        "retry it (another instance will answer)",
        retry_after_s=1,
    )

"""The inference threads: every forward pass runs here, a request's or a reference check's.

One queue for both, so a reference check (backend/registry.py) takes its turn with the requests'
forward passes (with INFERENCE_CONCURRENCY=1, the default, never beside one); and it knows how
long it has been idle, so the checks can wait for a quiet moment instead of delaying the
answers a cold start is waiting for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Forwards:
    """A thread pool for forward passes that knows when it last worked."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference")
        self._lock = threading.Lock()
        self._busy = 0
        self._idle_since = time.monotonic()

    def submit(self, forward: Callable[[], T]) -> Future[T]:
        with self._lock:
            self._busy += 1
        try:
            future = self._pool.submit(forward)
        except RuntimeError:  # the pool is shut down (the interpreter is exiting)
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future | None) -> None:
        with self._lock:
            self._busy -= 1
            self._idle_since = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last forward pass ended; 0 while one is queued or running."""
        with self._lock:
            return 0.0 if self._busy else time.monotonic() - self._idle_since

    def wait_idle(self, seconds: float, stop: threading.Event, deadline: float) -> bool:
        """Wait until no forward pass has run for `seconds`, or until `deadline` (monotonic)
        whatever the load; False if `stop` was set first."""
        while not stop.is_set():
            idle, left = self.idle_for(), deadline - time.monotonic()
            if idle >= seconds or left <= 0:
                return True
            stop.wait(min(left, seconds - idle if idle else min(seconds, 0.05)))
        return False

    def idle_from_now(self) -> None:
        """Count idleness from this moment (the instance has just become ready)."""
        with self._lock:
            self._idle_since = time.monotonic()

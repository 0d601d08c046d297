"""A bound on the decoded pixels in flight, so that concurrent large images cannot exhaust memory.

The per-image pixel limit bounds one request; an instance takes several at once (one per
request thread), and each decode holds its pixels, several bytes each, until the batch is
preprocessed. Without a bound, eight 36-megapixel uploads at once decode ~2.5 GB, over a Cloud
Run instance's memory: the instance is killed with every request in flight. So each request
reserves the pixels it is about to decode from one budget per process, and gives them back once
its model input is made (a few hundred KB, however large the image was). A request whose pixels
do not fit waits, in arrival order, for earlier ones to finish; after `wait_s` it is answered
503 with Retry-After (the instance is busy, not broken). An image larger than the whole budget
still runs, alone. When the process stops (SIGTERM), a wait ends by the stop's `answer_by`
(backend/stopping.py) with a 503 `shutting_down`, so the request is answered, not cut off.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from backend.errors import Busy
from backend.stopping import StopSignal, shutting_down


class PixelBudget:
    """At most `pixels` decoded pixels held at once by the requests of this process."""

    def __init__(self, pixels: int, wait_s: float, stop_signal: StopSignal | None = None) -> None:
        if pixels < 1 or wait_s < 0:
            raise ValueError("the pixel budget must be positive and its wait not negative")
        self.pixels = pixels
        self.wait_s = wait_s
        self._free = pixels
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()
        self._stop_signal = stop_signal or StopSignal()
        self._stop_signal.subscribe(lambda _: self._wake())

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()  # waiters recompute when their wait ends

    @property
    def free(self) -> int:
        with self._changed:
            return self._free

    @contextmanager
    def claim(self) -> Iterator[Claim]:
        """A claim to reserve pixels on; everything it reserved is given back at the end."""
        claim = Claim(self)
        try:
            yield claim
        finally:
            claim.release()

    def _take(self, pixels: int) -> int:
        need = min(pixels, self.pixels)
        ticket = object()
        own_deadline = time.monotonic() + self.wait_s
        with self._changed:
            self._queue.append(ticket)
            try:
                # First come, first served: a large image is not overtaken forever by small ones.
                while not (admitted := self._queue[0] is ticket and self._free >= need):
                    ends = self._stop_signal.wait_ends(own_deadline)
                    if time.monotonic() >= ends:
                        break
                    self._changed.wait(ends - time.monotonic())
                if not admitted:
                    if self._stop_signal.stopping and time.monotonic() < own_deadline:
                        raise shutting_down()
                    raise Busy(
                        "the server is decoding as many large images as its memory allows; "
                        "retry in a few seconds",
                        retry_after_s=max(1, round(self.wait_s)),
                    )
                self._free -= need
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()
        return need

    def _give_back(self, pixels: int) -> None:
        with self._changed:
            self._free += pixels
            self._changed.notify_all()


class Claim:
    """The pixels one request holds; `reserve` waits until they fit in the budget."""

    def __init__(self, budget: PixelBudget) -> None:
        self._budget = budget
        self._held = 0
        self.waited_ms = 0.0  # how long the reservations waited for room

    def reserve(self, pixels: int) -> None:
        start = time.perf_counter()
        self._held += self._budget._take(pixels)
        self.waited_ms += round((time.perf_counter() - start) * 1000, 2)

    def release(self) -> None:
        held, self._held = self._held, 0
        if held:
            self._budget._give_back(held)

"""The one timing budget: every deadline of the backend, the page, the gateway and Cloud Run.

Standard library only, like `runtime.limits`: the backend's settings, the page's settings and
the deployment program (`python3 -m deployment`, which needs nothing of the project's
environment) all read their defaults here, so no deadline is written down twice.

Five figures are chosen (measured ones are in benchmarks/RESULTS.md); the rest follows:

    sigterm_grace_s  Cloud Run's time between SIGTERM and SIGKILL: 10 s, fixed by the platform.
    probe_s          the startup probe's period and its timeout: 1 s, the least Cloud Run takes.
    startup_s        how long an instance may take to become ready (startup probe). The slowest
                     start measured is 3.4 s (v2, cold page cache): 30 s is ~9x that.
    fetch_s          the whole download of an image URL, DNS and redirects included.
    compute_s        the decode (at most 0.8 s of CPU, backend/imaging.py) and one forward pass.

    graceful_stop_s  SIGTERM to the server's last answer: a whole second under SIGKILL.
    ready_hold_s     how long GET /ready holds a request while the models load, so the probe
                     that comes during the load answers the moment they are ready, not a
                     period later: under the probe's timeout by 0.2 s, so no answer is lost to
                     it.
    decode_wait_s    how long a request waits for room in the decoded-pixel budget before a
                     503 with Retry-After: what is left of the graceful stop once the request's
                     own compute is counted, so a request still waiting at SIGTERM is answered
                     before the stop ends, never cut.
    request_timeout_s  Cloud Run's request timeout, which counts the wait for a starting
                     instance: the startup budget, then the longest request (fetch, wait,
                     compute), rounded up to a whole minute.
    gateway_deadline_s / page_timeout_s  the v3 gateway and the page wait as long as Cloud Run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class BudgetError(ValueError):
    """The deadlines disagree; the message says which and why it matters."""


@dataclass(frozen=True)
class TimingBudget:
    sigterm_grace_s: int = 10
    probe_s: int = 1
    startup_s: int = 30
    fetch_s: float = 8.0
    compute_s: float = 1.0

    @property
    def graceful_stop_s(self) -> int:
        return self.sigterm_grace_s - 1

    @property
    def ready_hold_s(self) -> float:
        return self.probe_s - 0.2

    @property
    def startup_probes(self) -> int:
        """The startup probe's failure threshold: as many probes as the startup budget holds."""
        return math.ceil(self.startup_s / self.probe_s)

    @property
    def decode_wait_s(self) -> float:
        return self.graceful_stop_s - self.compute_s

    @property
    def longest_request_s(self) -> float:
        return self.fetch_s + self.decode_wait_s + self.compute_s

    @property
    def request_timeout_s(self) -> int:
        return 60 * math.ceil((self.startup_s + self.longest_request_s) / 60)

    @property
    def gateway_deadline_s(self) -> float:
        return float(self.request_timeout_s)

    @property
    def page_timeout_s(self) -> float:
        return float(self.request_timeout_s)

    def check(self) -> TimingBudget:
        """This budget, if its deadlines agree; else `BudgetError` naming the one that does not."""
        if self.graceful_stop_s < 1:
            raise BudgetError(f"sigterm_grace_s={self.sigterm_grace_s} leaves no graceful stop")
        if self.fetch_s + self.compute_s > self.graceful_stop_s:
            raise BudgetError(
                f"fetch_s={self.fetch_s:g} + compute_s={self.compute_s:g} is over the graceful "
                f"stop of {self.graceful_stop_s} s: a request downloading its image at SIGTERM "
                "would be cut off"
            )
        if self.decode_wait_s <= 0:
            raise BudgetError(
                f"compute_s={self.compute_s:g} leaves no time to wait for the pixel budget "
                f"within the graceful stop of {self.graceful_stop_s} s"
            )
        if self.probe_s < 1:
            raise BudgetError(f"probe_s={self.probe_s}: Cloud Run probes at most once a second")
        if self.startup_s < 1 or self.request_timeout_s > 3600:
            raise BudgetError(
                f"startup_s={self.startup_s} must be at least 1 s and the request timeout it "
                f"implies ({self.request_timeout_s} s) at most Cloud Run's 3600 s"
            )
        return self


TIMING = TimingBudget().check()

"""One timing budget (runtime/timing.py): every deadline derives from it and they agree."""

from __future__ import annotations

import dataclasses

import pytest

from backend.settings import Settings
from backend.urlfetch import FetchPolicy
from frontend.config import FrontendConfig
from runtime.timing import TIMING, BudgetError, TimingBudget


def test_the_default_budget_agrees_with_itself():
    assert TIMING.check() is TIMING
    assert TIMING.graceful_stop_s < TIMING.sigterm_grace_s
    # A first request to a starting instance: the startup budget, then the longest request.
    assert TIMING.request_timeout_s >= TIMING.startup_s + TIMING.longest_request_s
    # /ready holds a probe's request, and answers before the probe stops waiting for it
    assert 0 < TIMING.ready_hold_s < TIMING.probe_s


def test_every_part_takes_its_deadlines_from_the_budget():
    backend = Settings.from_env({})
    assert backend.graceful_timeout_s == TIMING.graceful_stop_s
    assert backend.url_total_timeout_s == FetchPolicy().total_timeout_s == TIMING.fetch_s
    assert backend.decode_wait_s == TIMING.decode_wait_s
    page = FrontendConfig.from_env({"SERVING_URL": "http://127.0.0.1:1"})
    assert page.timeout_s == TIMING.page_timeout_s == TIMING.request_timeout_s


def test_a_request_waiting_for_pixels_at_sigterm_ends_within_the_graceful_stop():
    backend = Settings.from_env({})
    assert backend.decode_wait_s + TIMING.compute_s <= backend.graceful_timeout_s
    assert backend.url_total_timeout_s + TIMING.compute_s <= backend.graceful_timeout_s


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"fetch_s": 9.0}, "fetch_s=9"),
        ({"compute_s": 2.0}, "fetch_s=8 \\+ compute_s=2"),
        ({"fetch_s": 0.0, "compute_s": 9.0}, "no time to wait"),
        ({"sigterm_grace_s": 1}, "no graceful stop"),
        ({"startup_s": 4000}, "startup_s=4000"),
        ({"probe_s": 0}, "probe_s=0"),
    ],
)
def test_a_budget_whose_deadlines_disagree_is_refused(change, complaint):
    with pytest.raises(BudgetError, match=complaint):
        dataclasses.replace(TimingBudget(), **change).check()

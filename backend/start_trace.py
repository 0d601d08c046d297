"""Where a cold start goes: one log line per phase, timed from the moment the process began.

Each phase of the start (the interpreter, the imports, the settings, the bundles' checks, each
model's digest and session, the first request, each reference check) is logged once it ends, as
`{"event": "start_phase", "phase": ..., "start_ms": ..., "end_ms": ...}`, both measured from
the process's own start (the kernel's record of it, `/proc/self/stat`, 10 ms resolution), so
the interpreter's own start-up is a phase too and phases that overlap (the models' digests
run beside the sessions opening) show as they ran. `process_started_at` is that start on the
wall clock: a benchmark aligns it with the moment it launched the process.

Standard library only, and cheap: two clock reads and one log line per phase.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("backend.start")


def _process_start_boottime() -> float | None:
    """When this process started, in CLOCK_BOOTTIME seconds; None where /proc cannot say."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as stat:
            # The command name (field 2) may hold spaces: count fields after its ")".
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in ticks
    except (OSError, IndexError, ValueError):
        return None


def _now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


_STARTED = _process_start_boottime()
if _STARTED is None or not 0 <= _now() - _STARTED < 3600:
    _STARTED = _now()  # no /proc (or a clock that disagrees): time from this import instead


def since_start() -> float:
    """Seconds since this process started."""
    return _now() - _STARTED


def process_started_at() -> float:
    """The process's start on the wall clock (time.time())."""
    return time.time() - since_start()


def log_phase(phase: str, start_s: float, end_s: float | None = None, **fields) -> None:
    """Log one phase of the start, `start_s` to `end_s` (default: now) from `since_start()`."""
    end_s = since_start() if end_s is None else end_s
    log.info(
        "start phase %s: %.0f ms",
        phase if "model" not in fields else f"{phase} {fields['model']}",
        (end_s - start_s) * 1000,
        extra={
            "event": "start_phase",
            "phase": phase,
            "start_ms": round(start_s * 1000, 1),
            "end_ms": round(end_s * 1000, 1),
            "process_started_at": round(process_started_at(), 4),
            **fields,
        },
    )


@contextmanager
def phase(name: str, **fields) -> Iterator[None]:
    """Log the block as phase `name` once it ends (not if it raised: the error is told)."""
    began = since_start()
    yield
    log_phase(name, began, **fields)

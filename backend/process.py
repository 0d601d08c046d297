"""Process-wide setup of a serving process, all of it, in one place.

`configure_process` runs once per process (`python -m backend`, or a test's app), before any
model loads; the allocator's two settings below are applied by the registry, around its load
(`allocator_for_loading`, `allocator_for_serving`). Everything here changes state that every
thread of the process shares, which is why it is not spread over the modules that benefit
from it:

- logging: every logger's records go to stdout as JSON lines (backend/logs.py), at one level;
- warnings: Pillow's `DecompressionBombWarning` becomes an error, which image intake answers
  with 413 instead of decoding a bomb (backend/imaging.py);
- ONNX Runtime's own logger: errors only (its warnings are about graph internals);
- glibc's allocator: a fixed threshold above which allocations are their own mmap. By default
  glibc raises that threshold to the size of every large block freed (up to 32 MB), so after
  ONNX Runtime has transformed the weights at load, freed blocks of several MB stay in the
  heap for good. Serving, the threshold is 128 KiB. While the sessions open it is 4 MiB: the
  layout transforms allocate and free blocks of up to a few MB by the thousand, and each one
  a mapping of its own made every opening a third slower; once they are open the threshold
  goes back to 128 KiB and the heap's free pages are given back (`malloc_trim`), so the
  instance holds about what it held before (benchmarks/RESULTS.md, "Cold start" and "Session
  settings", have the figures). Set glibc's own `MALLOC_MMAP_THRESHOLD_` in the environment
  to choose another value.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import warnings

import onnxruntime as ort
from PIL import Image

from backend.logs import configure_logging
from runtime.session import ERRORS_ONLY

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 128 * 1024  # serving: glibc's initial default, made fixed
LOADING_MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024  # while the sessions open
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def configure_process(log_level: str) -> None:
    """Apply the process-wide settings above (idempotent; the log level is the latest given)."""
    configure_logging(log_level)
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    ort.set_default_logger_severity(ERRORS_ONLY)


def allocator_for_loading() -> None:
    """glibc's mmap threshold fixed at LOADING_MMAP_THRESHOLD_BYTES, for the sessions to open."""
    _fix_mmap_threshold(LOADING_MMAP_THRESHOLD_BYTES)


def allocator_for_serving() -> None:
    """glibc's mmap threshold fixed at MMAP_THRESHOLD_BYTES, the heap's free pages given back:
    once every session is open."""
    if _fix_mmap_threshold(MMAP_THRESHOLD_BYTES):  # so glibc is there
        _glibc().malloc_trim(0)


def _fix_mmap_threshold(size: int) -> bool:
    """Whether glibc's threshold is now `size`; not where the environment chose one, nor
    without glibc (each a no-op)."""
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return libc.mallopt(_M_MMAP_THRESHOLD, size) == 1


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has mallopt and malloc_trim), else None, said once."""
    # The process's own symbols, glibc's among them: not ctypes.util.find_library, whose
    # import (subprocess, tempfile, shutil) took 6-15 ms of the start.
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018  # musl has neither
    except (OSError, AttributeError):
        log.info("allocator left as it is (no glibc mallopt)", extra={"event": "allocator"})
        return None
    return libc

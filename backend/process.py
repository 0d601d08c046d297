"""Process-wide setup of a serving process, all of it, in one place.

`configure_process` runs once per process (a gunicorn worker, or a test's app), before any
model loads. Everything here changes state that every thread of the process shares, which is
why it is not spread over the modules that benefit from it:

- logging: every logger's records go to stdout as JSON lines (backend/logs.py), at one level;
- warnings: Pillow's `DecompressionBombWarning` becomes an error, which image intake answers
  with 413 instead of decoding a bomb (backend/imaging.py);
- ONNX Runtime's own logger: errors only (its warnings are about graph internals);
- glibc's allocator: a fixed threshold above which allocations are their own mmap. By default
  glibc raises that threshold to the size of every large block freed (up to 32 MB), so after
  ONNX Runtime has transformed the weights at load, freed blocks of several MB stay in the
  heap for good (benchmarks/RESULTS.md, "Session settings", has the figures). Set glibc's own
  `MALLOC_MMAP_THRESHOLD_` in the environment to choose another value.
"""

from __future__ import annotations

import ctypes
import logging
import os
import warnings

import onnxruntime as ort
from PIL import Image

from backend.logs import configure_logging
from runtime.session import ERRORS_ONLY

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial default, made fixed
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
_allocator_bounded = False


def configure_process(log_level: str) -> None:
    """Apply the process-wide settings above (idempotent; the log level is the latest given)."""
    configure_logging(log_level)
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    ort.set_default_logger_severity(ERRORS_ONLY)
    bound_allocator()


def bound_allocator() -> None:
    """Fix glibc's mmap threshold (see above), once; a no-op where there is no glibc."""
    global _allocator_bounded
    if _allocator_bounded or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    # The process's own symbols, glibc's among them: not ctypes.util.find_library, whose
    # import (subprocess, tempfile, shutil) took 6-15 ms of the start.
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        mallopt = None
    if mallopt is None or mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.info("allocator left as it is (no glibc mallopt)", extra={"event": "allocator"})
    _allocator_bounded = True

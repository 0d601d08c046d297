"""Structured JSON logs on stdout, in the shape Cloud Logging reads.

One JSON object per line: `severity`, `message`, and, inside a request, the request id and
Cloud trace (`logging.googleapis.com/trace`) taken from `X-Cloud-Trace-Context`. Written
with the standard library's logging: a formatter is all that is needed.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

# X-Cloud-Trace-Context is TRACE_ID/SPAN_ID;o=OPTIONS: 32 hex digits, then a decimal up to 2**64.
_TRACE_ID = re.compile(r"[0-9A-Za-z]{1,64}")
_SPAN_ID = re.compile(r"[0-9]{1,20}")

request_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "request_context", default=None
)

# Attributes every LogRecord has; anything else passed in `extra=` is ours to emit.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        entry.update(request_context.get() or {})
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time of the record, not at creation."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass  # always sys.stdout


def configure_logging(level: str) -> None:
    """Send every logger's records to stdout as JSON lines (idempotent)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_baked_vision", False)), None)
    if handler is None:
        handler = _StdoutHandler()
        handler._baked_vision = True  # type: ignore[attr-defined]
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)


def trace_fields(header: str | None, project: str | None) -> dict:
    """Cloud Logging's trace fields from an `X-Cloud-Trace-Context: TRACE/SPAN;o=1` header."""
    if not header:
        return {}
    trace_id, _, rest = header.partition("/")
    if not _TRACE_ID.fullmatch(trace_id):
        return {}
    fields = {
        "logging.googleapis.com/trace": f"projects/{project}/traces/{trace_id}"
        if project
        else trace_id
    }
    span = rest.split(";", 1)[0]
    # ASCII digits, at most 20 of them, before int(): int() of more than 4,300 digits raises.
    if _SPAN_ID.fullmatch(span) and int(span) < 2**64:
        # The header carries the span as a decimal; Cloud Logging wants 16 hex digits.
        fields["logging.googleapis.com/spanId"] = f"{int(span):016x}"
    return fields

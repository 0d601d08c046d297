"""Where a URL prediction's download may go, and how long and how much it may fetch.

Apart from the fetcher (backend/urlfetch.py) so that the app can be configured without
importing requests and urllib3: the fetcher is loaded after the start's first answer, or by
the first URL prediction (backend/launch.py says why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backend.stopping import StopSignal
from runtime.limits import MAX_IMAGE_BYTES
from runtime.timing import TIMING

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class FetchPolicy:
    """Where `fetch_url` may connect and how long and how much it may download."""

    allowed_ports: frozenset[int] = frozenset({80, 443})
    allow_loopback: bool = False  # tests and local development only
    connect_timeout_s: float = 3.0
    # The whole download, redirects and slow-drip bodies included (runtime/timing.py).
    total_timeout_s: float = TIMING.fetch_s
    max_bytes: int = MAX_IMAGE_BYTES
    max_redirects: int = 3
    max_url_length: int = 2048
    resolver: Resolver | None = None  # host, port -> addresses; None: the system resolver
    ca_bundle: str | None = None  # PEM file of trusted CAs; None: requests' default (certifi)
    user_agent: str = "baked-vision-fetch/1.0"
    # The process's stop (SIGTERM): a download still running then ends by the stop's
    # `answer_by` with a 503 `shutting_down`, instead of being cut off with no answer.
    stop_signal: StopSignal | None = None

    def __post_init__(self) -> None:
        if not all(0 < port < 65536 for port in self.allowed_ports):
            raise ValueError("allowed_ports must be TCP ports (1-65535)")
        if self.connect_timeout_s <= 0 or self.total_timeout_s <= 0:
            raise ValueError("connect_timeout_s and total_timeout_s must be positive")
        if self.max_bytes < 1 or self.max_redirects < 0 or self.max_url_length < 1:
            raise ValueError("max_bytes and max_url_length must be positive, max_redirects >= 0")

"""Slow clients against the real server (`python -m backend`): they hold no request thread."""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time

import pytest
import requests

from tests.backend_process import start_backend
from tests.upstream import PNG_BYTES

pytestmark = pytest.mark.slow

THREADS = 8  # the server's request threads (GUNICORN_THREADS' default)


@pytest.fixture(scope="module")
def backend(bundles_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("slow") / "log.txt"
    server = start_backend(
        bundles_dir, log, MODELS="resnet18", HEADER_TIMEOUT_S="3", BODY_TIMEOUT_S="4"
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


class _Drip:
    """`count` connections sending `data` one byte a second (or nothing, if `data` is empty)."""

    def __init__(self, url: str, count: int, data: bytes) -> None:
        self.sockets = [_connect(url) for _ in range(count)]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(data,), daemon=True)
        self._thread.start()

    def _run(self, data: bytes) -> None:
        for byte in data:
            for sock in self.sockets:
                with contextlib.suppress(OSError):  # the server gave up on it: allowed
                    sock.send(bytes([byte]))
            if self._done.wait(1.0):
                return

    def close(self) -> None:
        self._done.set()
        for sock in self.sockets:
            sock.close()


def _health_latencies(url: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
        out.append(time.perf_counter() - started)
        time.sleep(0.05)
    return out


def test_slow_and_silent_connections_hold_no_thread(backend):
    """2x the thread count of each kind: dripping headers, dripping bodies, silent."""
    body_headers = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    slow = [
        _Drip(backend.url, 2 * THREADS, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
        _Drip(backend.url, 2 * THREADS, b""),
    ]
    body = _Drip(backend.url, 2 * THREADS, b"")
    for sock in body.sockets:
        sock.send(body_headers)  # headers whole, then a body that never comes
    slow.append(body)
    try:
        time.sleep(1.0)  # every slow connection is open and in progress
        latencies = _health_latencies(backend.url, 20)
        answer = requests.post(
            f"{backend.url}/predict",
            files={"image": ("x.png", PNG_BYTES, "image/png")},
            timeout=10,
        )
    finally:
        for drip in slow:
            drip.close()
    median, worst = statistics.median(latencies), max(latencies)
    print(f"/health with {6 * THREADS} slow connections: median {median * 1000:.1f} ms, "
          f"max {worst * 1000:.1f} ms")  # fmt: skip
    assert median < 0.1, latencies
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("sent", "deadline_s", "what"),
    [
        (b"GET /health HTTP/1.1\r\nHost: x", 3, "headers"),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{", 4, "body"),
    ],
)
def test_a_request_that_does_not_arrive_in_time_gets_408_json(backend, sent, deadline_s, what):
    with _connect(backend.url) as sock:
        sock.send(sent)
        started = time.monotonic()
        answer = sock.recv(65536)
        elapsed = time.monotonic() - started
        while chunk := sock.recv(65536):  # the server closes after its answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"content-type: application/json" in head.lower()
    assert what in json.loads(body)["error"]["message"]
    assert deadline_s - 0.2 < elapsed < deadline_s + 1.0


def test_an_idle_connection_is_closed_without_an_answer(backend):
    with _connect(backend.url) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed, nothing said: no request was begun
        assert time.monotonic() - started < 8

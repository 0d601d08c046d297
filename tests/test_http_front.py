"""The HTTP front of the real server (`python -m backend`): slow clients hold no request
thread, and every answer it gives itself, to any request, is the JSON error body."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import statistics
import threading
import time

import pytest
import requests

from backend.server import FrontServer, ServerLimits
from backend.stopping import StopSignal
from tests.backend_process import start_backend
from tests.upstream import PNG_BYTES

pytestmark = pytest.mark.slow

THREADS = 8  # the server's request threads (REQUEST_THREADS's default)


@pytest.fixture(scope="module")
def backend(bundles_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("slow") / "log.txt"
    server = start_backend(
        bundles_dir,
        log,
        MODELS="resnet18",
        HEADER_TIMEOUT_S="3",
        BODY_TIMEOUT_S="4",
        MAX_IMAGE_MB="1",  # a small request limit: bodies over it are quick to send
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


def test_an_answer_is_sent_whole_without_waiting_for_the_clients_ack(backend):
    """Each answer leaves as soon as it is written. With Nagle's algorithm on the server's
    sockets (asyncio leaves it on for ours), the body waited for the client to acknowledge the
    headers, which a client acknowledges late on purpose (delayed ACK): ~40 ms on every
    answer of a kept-alive connection, a third of a resnet152 /predict."""
    with requests.Session() as session:
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            assert session.get(f"{backend.url}/health", timeout=5).status_code == 200
            latencies.append(time.perf_counter() - started)
    median = statistics.median(latencies)
    print(f"/health on a kept-alive connection: median {median * 1000:.1f} ms")
    assert median < 0.02, latencies


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


def _exchange(url: str, raw: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the answer until the server closes; status, headers, body."""
    with _connect(url) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before it all went
            sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _chunked(body: bytes, size: int = 65536) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
             for i in range(0, len(body), size)]  # fmt: skip
    return b"".join(parts) + b"0\r\n\r\n"


OVER_THE_LIMIT = b'{"url": "' + b"a" * (2 * 1024 * 1024) + b'"}'
ODD_REQUESTS = {
    "garbage request line": (b"GARBAGE\r\n\r\n", 400),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    "headers too large": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 +
                          b"\r\n\r\n", 431),
    "URI too long": (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "unknown method": (b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "no Host": (b"GET /health HTTP/1.1\r\n\r\n", 400),
    "superscript Content-Length": ("POST /predict HTTP/1.1\r\nHost: x\r\n"
                                   "Content-Length: \u00b9\u00b2\r\n\r\n{}".encode(), 400),
    "5,000-digit Content-Length": (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                   b"9" * 5000 + b"\r\n\r\n{}", 400),
    "negative Content-Length": (b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: -1\r\n\r\n", 400),
    "two Content-Lengths": (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}", 400),
    "Content-Length over the limit": (b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Type: application/json\r\n"
                                      b"Content-Length: 99999999999\r\n\r\n", 413),
    "chunked JSON over the limit": (b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Type: application/json\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" +
                                    _chunked(OVER_THE_LIMIT), 413),
    "negative chunk size": (b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
    "5,000-digit chunk size": (b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 5000 + b"\r\n", 400),
    "gzip Transfer-Encoding": (b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: gzip\r\n\r\n", 501),
    "5,000-digit trace span": (b"GET /models HTTP/1.1\r\nHost: x\r\nX-Cloud-Trace-Context: "
                               b"105445aa7843bc8bf206b12000100000/" + b"9" * 5000 + b"\r\n"
                               b"Connection: close\r\n\r\n", 200),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ODD_REQUESTS))
def test_every_answer_to_an_odd_request_is_json_never_a_500(backend, case):
    raw, expected = ODD_REQUESTS[case]
    status, headers, body = _exchange(backend.url, raw)
    assert status == expected, (status, body[:300])
    assert headers["content-type"] == "application/json"
    if status >= 400:
        error = json.loads(body)["error"]
        assert error["code"] and error["message"]
    assert requests.get(f"{backend.url}/health", timeout=5).status_code == 200


def test_bodies_past_the_buffered_bytes_bound_are_503_busy(bundles_dir, tmp_path):
    """The bodies being received, all connections together, stay within BUFFERED_BYTES_MAX:
    one request's worth here; a second body arriving meanwhile is refused, not buffered."""
    server = start_backend(
        bundles_dir, tmp_path / "log.txt", MODELS="resnet18", MAX_IMAGE_MB="1",
        BUFFERED_BYTES_MAX=str(1024 * 1024 + 64 * 1024),
    )  # fmt: skip
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n"
    )
    try:
        server.wait_ready()
        with _connect(server.url) as first:
            first.sendall(head + b"a" * 900_000)  # most of its body, held in the server
            time.sleep(0.5)
            status, headers, body = _exchange(server.url, head + b"b" * 1_000_000)
        assert status == 503, body
        assert json.loads(body)["error"]["code"] == "busy"
        assert headers["retry-after"] == "1"
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        server.stop()


def test_a_request_sent_on_a_kept_alive_connection_as_the_stop_comes_is_answered():
    """HTTP's keep-alive race at SIGTERM: a client's next request on an idle connection, sent
    just after the stop began, is served (and its answer closes the connection), not cut off
    by the server closing the connection under it; a new connection is refused at once."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    limits = ServerLimits(
        header_timeout_s=3,
        body_timeout_s=3,
        keepalive_s=5,
        max_header_bytes=8192,
        max_body_bytes=1024,
        buffered_bytes_max=4096,
        graceful_s=5,
    )
    server = FrontServer(app, listener, threads=2, limits=limits, stop_signal=StopSignal())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.run(),))
    thread.start()
    try:
        client = http.client.HTTPConnection(*address, timeout=5)
        for _ in range(100):  # the server listens once its loop has started
            with contextlib.suppress(ConnectionRefusedError):
                client.request("GET", "/")
                break
            time.sleep(0.01)
        first = client.getresponse()
        assert (first.status, first.read(), first.getheader("Connection")) == (200, b"ok", None)

        loop.call_soon_threadsafe(server.stop)
        time.sleep(0.05)  # the stop has begun; the client knows nothing of it yet
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5)
        client.request("GET", "/")
        second = client.getresponse()
        assert (second.status, second.read(), second.getheader("Connection")) == (
            200,
            b"ok",
            "close",
        )
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(10)
        loop.close()
    assert not thread.is_alive()

"""fetch_url against the URL and download cases of docs/bad-inputs.md.

Nothing here leaves 127.0.0.1: names are answered by a stub resolver, and the autouse `network`
guard refuses (and records) any connect to another address and any DNS query, so even a broken
fetch_url cannot dial the metadata server or a "public" address a test pretends to resolve.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from backend.errors import (
    BadRequest,
    PayloadTooLarge,
    ShuttingDown,
    UnsupportedMedia,
    UpstreamError,
    UpstreamTimeout,
    UrlNotAllowed,
)
from backend.stopping import ANSWER_MARGIN_S, StopSignal
from backend.urlfetch import FetchPolicy, fetch_url
from runtime.timing import TIMING
from tests.upstream import (
    JPEG_BYTES,
    PNG_BYTES,
    SECRET_BODY,
    Upstream,
    make_tls_certificate,
    upstream_server,
)

PUBLIC_IP = "93.184.215.14"  # a global address the guard intercepts; never dialled
LOOPBACK = {"127.0.0.1", "::1"}
# A broken deadline makes its test hang (a drip lasts 500 s): fail it quickly instead.
hangs_if_broken = pytest.mark.timeout(10)


@dataclass
class NetworkGuard:
    connects: list[tuple[Any, ...]] = field(default_factory=list)
    dns_queries: list[str] = field(default_factory=list)

    def non_loopback_connects(self) -> list[tuple[Any, ...]]:
        return [address for address in self.connects if address[0] not in LOOPBACK]


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    """Record every connect; let only loopback ones through; allow no DNS query."""
    guard = NetworkGuard()
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock: socket.socket, address: tuple[Any, ...]) -> None:
        guard.connects.append(address)
        if address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"test guard: refusing to dial {address[0]}")
        real_connect(sock, address)

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        try:
            return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            guard.dns_queries.append(host)
            raise

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return guard


class StubResolver:
    """Answers names from a table, host -> successive answers (the last repeats); records calls."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        answers = self.table.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        self.calls.append(host)
        return answers[min(self.calls.count(host), len(answers)) - 1]


def resolving(host: str, *addresses: str) -> StubResolver:
    return StubResolver({host: [list(addresses)]})


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


def loopback_policy(upstream: Upstream, **overrides: Any) -> FetchPolicy:
    """A policy that may reach the test server: loopback and its port allowed, short deadlines."""
    settings: dict[str, Any] = {
        "allow_loopback": True,
        "allowed_ports": frozenset({80, 443, upstream.port}),
        "connect_timeout_s": 1.0,
        "total_timeout_s": 3.0,
        "resolver": resolving("images.example.com", "127.0.0.1"),
    }
    return FetchPolicy(**(settings | overrides))


# --- URLs refused before any lookup or connection -----------------------------------------

BAD_URLS = [
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://METADATA.Google.Internal/computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0/",
    "http://0251.0376.0251.0376/",
    "http://%31%32%37.0.0.1/",
    "http://127.0.0.1/",
    "http://localhost/",
    "http://10.0.0.1/",
    "http://[::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[::ffff:0:a9fe:a9fe]/",  # IPv4-translated (SIIT) metadata address
    "http://[::ffff:0:7f00:1]/",
    "http://[::a9fe:a9fe]/",  # IPv4-compatible
    "http://240.0.0.1/",  # reserved (240/4)
    "http://255.255.255.255/",
    "http://[2001:db8::1]/",  # documentation
    "http://[fe80::1%25eth0]/",
    "file:///etc/passwd",
    "gopher://example.com:70/_GET",
    "ftp://example.com/cat.png",
    "data:image/png;base64,iVBORw0KGgo=",
    "//example.com/cat.png",
    "example.com/cat.png",
    "http://example.com:8080/cat.png",
    "https://example.com:22/cat.png",
    "http://169.254.169.254\\@example.com/",
    "http://user:pass@example.com/cat.png",
    "http://user@example.com/cat.png",
    "http://example.com/cat.png\r\nMetadata-Flavor: Google",
    "http://example.com/" + "a" * 2100,
    "http://[::1/",
    "http://[evil]/",
    "http://example.com:99999/",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_forbidden_url_is_refused_without_lookup_or_connection(
    url: str, network: NetworkGuard
) -> None:
    resolver = resolving("example.com", PUBLIC_IP)
    with pytest.raises(UrlNotAllowed) as caught:
        fetch_url(url, FetchPolicy(resolver=resolver))
    assert caught.value.status == 400
    assert caught.value.code == "url_not_allowed"
    assert resolver.calls == []
    assert network.connects == []
    assert network.dns_queries == []


@pytest.mark.parametrize(
    "url", [123, 1.5, None, ["http://example.com/"], {}, b"http://x/", "", " "]
)
def test_url_that_is_not_a_non_empty_string_is_a_bad_request(
    url: object, network: NetworkGuard
) -> None:
    with pytest.raises(BadRequest) as caught:
        fetch_url(url, FetchPolicy(resolver=resolving("example.com", PUBLIC_IP)))
    assert caught.value.code == "bad_request"
    assert network.connects == []


@pytest.mark.parametrize(
    "answers",
    [
        ["10.1.2.3"],
        ["172.16.5.4"],
        ["192.168.1.1"],
        ["100.64.0.1"],
        ["169.254.169.254"],
        ["127.0.0.1"],
        ["0.0.0.0"],
        ["224.0.0.251"],
        ["255.255.255.255"],
        ["::1"],
        ["fd00::1"],
        ["fe80::1"],
        ["::ffff:10.0.0.1"],
        ["64:ff9b::a9fe:a9fe"],
        ["2002:a9fe:a9fe::1"],
        ["::ffff:0:a9fe:a9fe"],
        ["240.0.0.1"],
        ["198.18.0.1"],
        [PUBLIC_IP, "10.0.0.1"],
        ["10.0.0.1", PUBLIC_IP],
        ["not-an-address"],
    ],
)
def test_name_resolving_to_a_forbidden_address_is_refused(
    answers: list[str], network: NetworkGuard
) -> None:
    resolver = resolving("images.example.com", *answers)
    with pytest.raises(UrlNotAllowed):
        fetch_url("http://images.example.com/cat.png", FetchPolicy(resolver=resolver))
    assert resolver.calls == ["images.example.com"]
    assert network.connects == []


def test_loopback_server_is_refused_unless_the_policy_allows_loopback(
    upstream: Upstream, network: NetworkGuard
) -> None:
    policy = loopback_policy(upstream, allow_loopback=False)
    with pytest.raises(UrlNotAllowed):
        fetch_url(upstream.url("/image.png"), policy)
    with pytest.raises(UrlNotAllowed):
        fetch_url(upstream.url("/image.png", host="images.example.com"), policy)
    assert network.connects == []
    assert upstream.requests == []


def test_unresolvable_name_is_an_upstream_error(network: NetworkGuard) -> None:
    with pytest.raises(UpstreamError):
        fetch_url("http://nowhere.example.com/", FetchPolicy(resolver=StubResolver({})))
    assert network.connects == []


# --- the pinned connection ------------------------------------------------------------------


def test_image_is_fetched_with_only_our_own_headers(upstream: Upstream) -> None:
    url = upstream.url("/image.png", host="images.example.com")
    body = fetch_url(url, loopback_policy(upstream))
    assert body.data == PNG_BYTES
    assert body.content_type == "image/png"
    assert body.final_url == url
    [received] = upstream.requests
    assert received.headers == {
        "Host": f"images.example.com:{upstream.port}",
        "User-Agent": "baked-vision-fetch/1.0",
        "Accept": "image/*, application/octet-stream;q=0.5",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/image.jpg", JPEG_BYTES), ("/no-type", PNG_BYTES), ("/octet-stream", PNG_BYTES)],
)
def test_image_types_and_missing_type_are_fetched(
    upstream: Upstream, path: str, expected: bytes
) -> None:
    assert fetch_url(upstream.url(path), loopback_policy(upstream)).data == expected


def test_dns_rebinding_connects_to_the_checked_address(upstream: Upstream) -> None:
    # Checked answer: the test server; any later lookup would say 10.0.0.1.
    resolver = StubResolver({"rebind.example.com": [["127.0.0.1"], ["10.0.0.1"]]})
    url = upstream.url("/image.png", host="rebind.example.com")
    body = fetch_url(url, loopback_policy(upstream, resolver=resolver))
    assert body.data == PNG_BYTES
    assert resolver.calls == ["rebind.example.com"]
    assert upstream.paths() == ["/image.png"]


def test_dns_rebinding_to_loopback_still_dials_the_public_address_checked(
    network: NetworkGuard,
) -> None:
    resolver = StubResolver({"rebind.example.com": [[PUBLIC_IP], ["127.0.0.1"]]})
    with pytest.raises(UpstreamError):  # the guard refuses the (public) dial
        fetch_url("http://rebind.example.com/cat.png", FetchPolicy(resolver=resolver))
    assert resolver.calls == ["rebind.example.com"]
    assert network.connects == [(PUBLIC_IP, 80)]


def test_https_is_pinned_to_the_address_but_verified_against_the_hostname(
    tmp_path: Path,
) -> None:
    cert, key = make_tls_certificate(tmp_path, "images.example.com")
    with upstream_server(tls=(cert, key)) as server:
        policy = loopback_policy(server, ca_bundle=str(cert))
        body = fetch_url(server.url("/image.png", host="images.example.com"), policy)
        assert body.data == PNG_BYTES
        assert server.requests[0].headers["Host"] == f"images.example.com:{server.port}"


def test_https_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    cert, key = make_tls_certificate(tmp_path, "other.example.com")
    with upstream_server(tls=(cert, key)) as server:
        policy = loopback_policy(server, ca_bundle=str(cert))
        with pytest.raises(UpstreamError):
            fetch_url(server.url("/image.png", host="images.example.com"), policy)
        assert server.requests == []


# --- redirects ----------------------------------------------------------------------------


def test_three_redirects_are_followed(upstream: Upstream) -> None:
    body = fetch_url(upstream.url("/redirect/3"), loopback_policy(upstream))
    assert body.data == PNG_BYTES
    assert body.final_url == upstream.url("/redirect/0")
    assert upstream.paths() == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


def test_more_than_three_redirects_are_refused(upstream: Upstream) -> None:
    with pytest.raises(UrlNotAllowed):
        fetch_url(upstream.url("/redirect/4"), loopback_policy(upstream))
    assert upstream.paths() == ["/redirect/4", "/redirect/3", "/redirect/2", "/redirect/1"]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::ffff:169.254.169.254]/",
        "http://0x7f.1/",
        "http://private.example.com/cat.png",
        "file:///etc/passwd",
        "http://user:pass@images.example.com/cat.png",
        "http://[::1",
    ],
)
def test_redirect_to_a_forbidden_place_is_refused(
    upstream: Upstream, network: NetworkGuard, location: str
) -> None:
    resolver = StubResolver({"private.example.com": [["10.0.0.7"]]})
    policy = loopback_policy(upstream, resolver=resolver)
    with pytest.raises(UrlNotAllowed):
        fetch_url(upstream.url(f"/redirect?to={quote(location, safe='')}"), policy)
    assert network.non_loopback_connects() == []
    assert len(upstream.requests) == 1


def test_each_redirect_hop_is_resolved_and_pinned_again(upstream: Upstream) -> None:
    resolver = StubResolver(
        {"images.example.com": [["127.0.0.1"]], "cdn.example.com": [["127.0.0.1"]]}
    )
    target = upstream.url("/image.png", host="cdn.example.com")
    url = upstream.url(f"/redirect?to={quote(target, safe='')}", host="images.example.com")
    body = fetch_url(url, loopback_policy(upstream, resolver=resolver))
    assert body.data == PNG_BYTES
    assert resolver.calls == ["images.example.com", "cdn.example.com"]
    assert upstream.requests[1].headers["Host"] == f"cdn.example.com:{upstream.port}"


def test_connect_falls_back_to_the_next_checked_address(
    upstream: Upstream, network: NetworkGuard
) -> None:
    # The first answer refuses the connection (the guard refuses any address but loopback).
    resolver = resolving("images.example.com", PUBLIC_IP, "127.0.0.1")
    url = upstream.url("/image.png", host="images.example.com")
    body = fetch_url(url, loopback_policy(upstream, resolver=resolver))
    assert body.data == PNG_BYTES
    assert network.connects == [(PUBLIC_IP, upstream.port), ("127.0.0.1", upstream.port)]
    assert resolver.calls == ["images.example.com"]  # one lookup: no rebinding window


def test_every_address_refusing_is_an_upstream_error(network: NetworkGuard) -> None:
    resolver = resolving("images.example.com", PUBLIC_IP, "93.184.215.15")
    with pytest.raises(UpstreamError) as caught:
        fetch_url("http://images.example.com/cat.png", FetchPolicy(resolver=resolver))
    assert caught.value.status == 502
    assert network.connects == [(PUBLIC_IP, 80), ("93.184.215.15", 80)]


@hangs_if_broken
def test_an_address_that_never_answers_falls_back_within_the_deadline(
    upstream: Upstream,
) -> None:
    # A listener whose accept queue is full drops further SYNs: connect hangs until its timeout.
    listener, fillers = _stalled_listener(upstream.port)
    try:
        # 127.0.0.2 is loopback too, but the test server listens on 127.0.0.1 only.
        resolver = resolving("images.example.com", "127.0.0.2", "127.0.0.1")
        policy = loopback_policy(upstream, resolver=resolver, connect_timeout_s=0.3)
        started = time.monotonic()
        body = fetch_url(upstream.url("/image.png", host="images.example.com"), policy)
        assert body.data == PNG_BYTES
        assert time.monotonic() - started < 1.5
    finally:
        for sock in [listener, *fillers]:
            sock.close()


def _stalled_listener(port: int) -> tuple[socket.socket, list[socket.socket]]:
    listener = socket.socket()
    listener.bind(("127.0.0.2", port))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.2", port))
        fillers.append(filler)
    return listener, fillers


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


ipv6_loopback = pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to serve on"
)


@ipv6_loopback
def test_ipv6_connection_is_pinned_to_the_checked_address(network: NetworkGuard) -> None:
    with upstream_server(host="::1") as server:
        resolver = StubResolver({"images.example.com": [["::1"], ["10.0.0.1"]]})
        policy = loopback_policy(server, resolver=resolver)
        body = fetch_url(server.url("/image.png", host="images.example.com"), policy)
        assert body.data == PNG_BYTES
        assert [address[:2] for address in network.connects] == [("::1", server.port)]
        assert server.requests[0].headers["Host"] == f"images.example.com:{server.port}"
        # and an IPv6 literal, as written in a URL
        assert fetch_url(server.url("/image.jpg"), policy).data == JPEG_BYTES
        assert server.requests[1].headers["Host"] == f"[::1]:{server.port}"


# --- DNS inside the deadline --------------------------------------------------------------


class SlowResolver(StubResolver):
    """A stub resolver whose names in `slow` take `delay_s` to answer (an attacker's DNS)."""

    def __init__(self, table: dict[str, list[list[str]]], slow: set[str], delay_s: float):
        super().__init__(table)
        self.slow, self.delay_s = slow, delay_s
        self.released = threading.Event()

    def __call__(self, host: str, port: int) -> list[str]:
        if host in self.slow:
            self.released.wait(self.delay_s)
        return super().__call__(host, port)


@pytest.fixture
def slow_resolver() -> Iterator[SlowResolver]:
    resolver = SlowResolver(
        {"slow.example.com": [["127.0.0.1"]], "images.example.com": [["127.0.0.1"]]},
        slow={"slow.example.com"},
        delay_s=4.0,
    )
    yield resolver
    resolver.released.set()  # let the abandoned lookup thread end


@hangs_if_broken
def test_a_slow_resolver_is_cut_at_the_deadline(
    upstream: Upstream, slow_resolver: SlowResolver
) -> None:
    policy = loopback_policy(upstream, resolver=slow_resolver, total_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="did not resolve in time"):
        fetch_url(upstream.url("/image.png", host="slow.example.com"), policy)
    assert 0.9 < time.monotonic() - started < 1.3
    assert upstream.requests == []


@hangs_if_broken
def test_a_redirect_to_a_slow_name_is_cut_at_the_deadline(
    upstream: Upstream, slow_resolver: SlowResolver
) -> None:
    target = upstream.url("/image.png", host="slow.example.com")
    url = upstream.url(f"/redirect?to={quote(target, safe='')}", host="images.example.com")
    policy = loopback_policy(upstream, resolver=slow_resolver, total_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        fetch_url(url, policy)
    assert 0.9 < time.monotonic() - started < 1.3
    assert upstream.paths() == [f"/redirect?to={quote(target, safe='')}"]


@hangs_if_broken
def test_the_system_resolver_runs_under_the_deadline_too(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()

    def stalled_getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        released.wait(4.0)
        raise socket.gaierror(socket.EAI_AGAIN, "stalled")

    monkeypatch.setattr(socket, "getaddrinfo", stalled_getaddrinfo)
    policy = loopback_policy(upstream, resolver=None, total_timeout_s=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout):
            fetch_url(upstream.url("/image.png", host="images.example.com"), policy)
        assert time.monotonic() - started < 1.3
    finally:
        released.set()


def test_resolver_errors_still_come_out_typed(upstream: Upstream) -> None:
    policy = loopback_policy(upstream, resolver=StubResolver({}))
    with pytest.raises(UpstreamError, match="cannot resolve"):
        fetch_url(upstream.url("/image.png", host="nowhere.example.com"), policy)


# --- bounded downloads ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/not-found", "/server-error"])
def test_upstream_error_status_is_502_without_the_upstream_body(
    upstream: Upstream, path: str
) -> None:
    with pytest.raises(UpstreamError) as caught:
        fetch_url(upstream.url(path), loopback_policy(upstream))
    assert caught.value.status == 502
    assert SECRET_BODY.decode() not in caught.value.message


def test_html_is_unsupported_media(upstream: Upstream) -> None:
    with pytest.raises(UnsupportedMedia) as caught:
        fetch_url(upstream.url("/html"), loopback_policy(upstream))
    assert caught.value.status == 415


@hangs_if_broken
def test_declared_length_over_the_cap_is_refused_before_reading(upstream: Upstream) -> None:
    # The server sends 16 of its declared bytes and stalls: reading would hit the deadline.
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge):
        fetch_url(upstream.url("/too-large"), loopback_policy(upstream, total_timeout_s=5.0))
    assert time.monotonic() - started < 2.0


def test_endless_chunked_body_stops_at_the_cap(upstream: Upstream) -> None:
    with pytest.raises(PayloadTooLarge):
        fetch_url(upstream.url("/endless"), loopback_policy(upstream, max_bytes=1_000_000))


ODD_FRAMING = {
    "superscript Content-Length": ("Content-Length: \u00b9\u00b2", b"0123456789ab"),
    "5,000-digit Content-Length": ("Content-Length: " + "9" * 5000, b"x"),
    "negative Content-Length": ("Content-Length: -1", b"x"),
    "negative chunk size": ("Transfer-Encoding: chunked", b"-5\r\nhello\r\n0\r\n\r\n"),
    "superscript chunk size": ("Transfer-Encoding: chunked", "\u00b9\r\nh\r\n0\r\n\r\n"),
    "5,000-digit chunk size": ("Transfer-Encoding: chunked", b"f" * 5000 + b"\r\nh\r\n"),
    "chunk size with underscores": ("Transfer-Encoding: chunked", b"1_0\r\nh\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("case", list(ODD_FRAMING))
def test_odd_upstream_framing_is_a_client_visible_error_never_a_crash(
    upstream: Upstream, case: str
) -> None:
    """Content-Length and chunk sizes that Python's int() reads (or chokes on) but HTTP does
    not allow: a typed error (502/413), never an exception that would be a 500."""
    header, body = ODD_FRAMING[case]
    raw_body = body.encode("utf-8") if isinstance(body, str) else body

    def odd(request: BaseHTTPRequestHandler) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n{header}\r\n\r\n"
        request.wfile.write(head.encode("utf-8") + raw_body)
        request.wfile.flush()
        request.close_connection = True

    upstream.add_route("/odd", odd)
    with pytest.raises((UpstreamError, PayloadTooLarge)) as caught:
        fetch_url(upstream.url("/odd"), loopback_policy(upstream, total_timeout_s=2.0))
    assert caught.value.status in (413, 502)


def test_a_content_length_with_5000_leading_zeros_is_read_as_the_number_it_is(upstream):
    def padded(request: BaseHTTPRequestHandler) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: " + "0" * 4999
        request.wfile.write(f"{head}1\r\n\r\nx".encode())
        request.close_connection = True

    upstream.add_route("/padded", padded)
    assert fetch_url(upstream.url("/padded"), loopback_policy(upstream)).data == b"x"


def test_body_shorter_than_its_content_length_is_an_upstream_error(upstream: Upstream) -> None:
    with pytest.raises(UpstreamError) as caught:
        fetch_url(upstream.url("/short"), loopback_policy(upstream))
    assert caught.value.status == 502


def test_compressed_body_is_refused(upstream: Upstream) -> None:
    with pytest.raises(UpstreamError):
        fetch_url(upstream.url("/gzip"), loopback_policy(upstream))
    assert upstream.requests[0].headers["Accept-Encoding"] == "identity"


@hangs_if_broken
def test_slow_drip_body_times_out_at_the_total_deadline(upstream: Upstream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        fetch_url(upstream.url("/drip"), loopback_policy(upstream, total_timeout_s=1.2))
    assert caught.value.status == 504
    assert 1.1 < time.monotonic() - started < 2.0


@hangs_if_broken
def test_a_download_at_the_stop_ends_by_the_stops_answer_by_with_503(upstream: Upstream) -> None:
    """SIGTERM while an image downloads: the download ends early enough to be answered within
    the graceful stop, as 503 `shutting_down` with Retry-After, not 504 at its own deadline."""
    stop = StopSignal()
    policy = loopback_policy(upstream, total_timeout_s=5.0, stop_signal=stop)
    threading.Timer(0.3, stop.stop, kwargs={"graceful_s": ANSWER_MARGIN_S + 0.4}).start()
    started = time.monotonic()
    with pytest.raises(ShuttingDown) as caught:
        fetch_url(upstream.url("/drip"), policy)
    assert 0.6 < time.monotonic() - started < 1.5
    assert caught.value.status == 503 and caught.value.retry_after_s >= 1


@hangs_if_broken
def test_slow_drip_headers_time_out_at_the_total_deadline(upstream: Upstream) -> None:
    def drip_status_line(request: BaseHTTPRequestHandler) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 1000:
            if upstream.stopping.wait(0.1):
                return
            request.wfile.write(bytes([byte]))
            request.wfile.flush()

    upstream.add_route("/drip-headers", drip_status_line)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        fetch_url(upstream.url("/drip-headers"), loopback_policy(upstream, total_timeout_s=1.0))
    assert time.monotonic() - started < 1.8


@hangs_if_broken
def test_server_that_never_answers_times_out_within_the_deadline(upstream: Upstream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        fetch_url(upstream.url("/hang"), loopback_policy(upstream, total_timeout_s=1.0))
    assert time.monotonic() - started < 1.8


@hangs_if_broken
def test_deadline_covers_all_redirect_hops(upstream: Upstream) -> None:
    def slow_redirect(request: BaseHTTPRequestHandler) -> None:
        upstream.stopping.wait(0.4)
        request.send_response(302)
        request.send_header("Location", "/slow-redirect")
        request.send_header("Content-Length", "0")
        request.end_headers()

    upstream.add_route("/slow-redirect", slow_redirect)
    policy = loopback_policy(upstream, total_timeout_s=1.0, max_redirects=10)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        fetch_url(upstream.url("/slow-redirect"), policy)
    assert time.monotonic() - started < 1.8


@hangs_if_broken
def test_connect_deadline(network: NetworkGuard) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    policy = FetchPolicy(
        allow_loopback=True,
        allowed_ports=frozenset({port}),
        connect_timeout_s=0.3,
        total_timeout_s=5.0,
    )
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout):
            fetch_url(f"http://127.0.0.1:{port}/cat.png", policy)
    finally:
        for sock in [listener, *fillers]:
            sock.close()
    assert time.monotonic() - started < 1.5


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_slow_drip_times_out_at_the_timing_budgets_fetch_deadline(upstream: Upstream) -> None:
    deadline = FetchPolicy().total_timeout_s
    assert deadline == TIMING.fetch_s  # the default is the budget's, not a figure of its own
    policy = loopback_policy(upstream, total_timeout_s=deadline)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        fetch_url(upstream.url("/drip"), policy)
    assert deadline - 0.1 < time.monotonic() - started < deadline + 1.5


@pytest.mark.parametrize(
    "overrides",
    [
        {"allowed_ports": frozenset({0})},
        {"total_timeout_s": 0},
        {"connect_timeout_s": -1},
        {"max_bytes": 0},
        {"max_redirects": -1},
    ],
)
def test_policy_rejects_nonsense(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FetchPolicy(**overrides)

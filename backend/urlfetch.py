"""Download a user-supplied image URL without letting it reach into our own network (SSRF guard).

On Cloud Run the metadata server hands out the service account's token, so every URL a client
sends is hostile until checked. `fetch_url` refuses, with no connection made, anything that is not
plain http(s) to an allowed port on a host whose every address is globally routable; it then
connects to exactly the address it checked, follows at most a few redirects (each one checked
again), and bounds the download in time and size.

What comes from libraries and why some of it is written here:
- requests/urllib3 speak HTTP and TLS and verify certificates. requests-hardened supplies the
  table of special ranges Python's `ipaddress` still calls global (NAT64, CG-NAT, 6to4...) and
  the pinning recipe: connect to the checked IP while Host, SNI and the certificate check use the
  hostname.
- requests-hardened's `IPFilterAdapter` itself is not mounted: it resolves the name again at
  connect time with the system resolver and checks only the first answer (a name answering
  [public, 10.0.0.1] passes), its check is a module function no subclass can replace, and it
  cannot take a stub resolver for tests. `_PinnedAdapter` instead connects to the address
  `_check_url` already checked: one lookup, every answer checked, no rebinding window.
- requests' timeouts bound each socket operation, so a body dripping a byte every half second
  never times out. `_Deadline` shuts the socket down when the whole download's time is up.
- getaddrinfo takes no timeout, and an attacker's DNS server can stall it on every hop. Each
  lookup (the system's or a policy's resolver) runs in a daemon thread that the request waits
  for only until the deadline (`_resolve_within`); at most `_MAX_LOOKUPS` run at once, so
  stalled lookups cannot pile up threads. Not concurrent.futures: its worker threads are joined
  at interpreter exit, so one stalled lookup would hold a stopping worker past Cloud Run's 10 s.
- The connection goes to the checked addresses in the resolver's order: if one refuses or does
  not answer in the connect timeout, the next is tried, within the same deadline.
- Redirects are followed here, not by requests, so each hop gets the same checks as the first.
- Hosts are checked on the URL as requests itself parses it, and spellings such as `0x7f.1` or
  `2130706433`, which the C resolver (inet_aton) reads as 127.0.0.1, are refused outright.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.connection import allowed_gai_family

from backend.errors import (
    ApiError,
    BadRequest,
    PayloadTooLarge,
    UnsupportedMedia,
    UpstreamError,
    UpstreamTimeout,
    UrlNotAllowed,
)
from backend.fetch_policy import FetchPolicy, Resolver
from backend.imaging import is_image_content_type
from backend.stopping import StopSignal, shutting_down

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_LOOKUPS = 32  # DNS lookups in flight at once, across all requests of the process
_lookup_slots = threading.BoundedSemaphore(_MAX_LOOKUPS)
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 64 * 1024
# Deprecated IPv6 forms Python still calls global: IPv4-compatible (::a.b.c.d) and site-local;
# IPv4-translated (::ffff:0:a.b.c.d, SIIT): the metadata server is ::ffff:0:a9fe:a9fe.
_BLOCKED_NETWORKS = (
    *EXTRA_BLOCKED_NET_RANGES,
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("::ffff:0:0:0/96"),
    ipaddress.ip_network("fec0::/10"),
)
# Refused whatever they resolve to: *.internal is Google Cloud's internal DNS (the metadata
# server among it), .local is mDNS, .localhost is loopback by definition (RFC 6761).
_BLOCKED_NAME_SUFFIXES = (".internal", ".local", ".localhost")
_HOSTNAME = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*\.?")
# WHATWG "ends in a number": such a host is an IPv4 address in some spelling, never a DNS name.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_MEDIA_TYPE = re.compile(r"[\w.+-]{1,50}/[\w.+-]{1,50}")


@dataclass(frozen=True)
class FetchedBody:
    data: bytes
    content_type: str | None
    final_url: str


def fetch_url(url: object, policy: FetchPolicy) -> FetchedBody:
    """Return the body behind a client's image URL, or raise a `backend.errors` type.

    BadRequest: `url` is not a non-empty string. UrlNotAllowed: a refused scheme, port, user-info,
    host or address (here or on a redirect), too long a URL, more than `max_redirects` redirects.
    UpstreamError: unreachable, TLS failure, status >= 400, compressed, empty or cut-short body.
    UpstreamTimeout: the connect or total deadline passed. PayloadTooLarge: over `max_bytes`.
    UnsupportedMedia: the server says the body is not an image (text/html...).
    """
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("'url' must be a non-empty string")
    with _Deadline(policy.total_timeout_s, policy.stop_signal) as deadline:
        try:
            return _follow(url.strip(), policy, deadline)
        except ApiError as exc:
            if deadline.cut_by_stop and deadline.expired:
                raise shutting_down() from exc
            raise


def _follow(current: str, policy: FetchPolicy, deadline: _Deadline) -> FetchedBody:
    """Fetch `current`, following redirects, each hop checked like the first."""
    for _ in range(policy.max_redirects + 1):
        target = _check_url(current, policy, deadline)
        response, adapter = _connect_and_send(target, policy, deadline)
        try:
            with contextlib.closing(response):
                location = _redirect_location(response)
                if location is None:
                    return _read_image(response, target, policy, deadline)
        finally:
            adapter.close()
        try:
            current = urljoin(target.url, location)
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise _refuse("the image server redirects to a malformed URL") from exc
    raise UrlNotAllowed(f"the URL redirects more than {policy.max_redirects} times")


@dataclass(frozen=True)
class _Target:
    """A checked URL and the one address the connection must go to."""

    url: str
    scheme: str
    hostname: str  # as in the URL, without IPv6 brackets: Host header, SNI, certificate check
    port: int
    addresses: tuple[str, ...]  # every one checked; connected to in this order


def _refuse(reason: str) -> UrlNotAllowed:
    return UrlNotAllowed(f"this URL is not allowed: {reason}")


def _check_url(url: str, policy: FetchPolicy, deadline: _Deadline) -> _Target:
    """Return where `url` may be fetched from, or raise UrlNotAllowed; no connection is made."""
    if len(url) > policy.max_url_length:
        raise _refuse(f"longer than {policy.max_url_length} characters")
    # Backslashes and control characters are where URL parsers disagree: to one parser
    # `http://169.254.169.254\@example.com/` is example.com, to another the metadata server.
    if "\\" in url or any(char.isspace() or not char.isprintable() for char in url):
        raise _refuse("it contains a backslash, space or control character")
    try:
        if urlsplit(url).scheme.lower() not in _DEFAULT_PORTS:
            raise _refuse("only http and https URLs can be fetched")
        # Check the URL as requests will send it (IDNA-encoded host, normalised authority).
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        parsed = urllib3.util.parse_url(prepared.url)
        split = urlsplit(prepared.url)
        split_port = split.port
    except (requests.RequestException, urllib3.exceptions.LocationParseError, ValueError) as exc:
        raise _refuse("it is malformed") from exc
    if parsed.auth is not None or "@" in split.netloc:
        raise _refuse("user names and passwords in URLs are not accepted")
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise _refuse("it has no host")
    hostname = parsed.host.lower().removeprefix("[").removesuffix("]")
    if split.hostname != hostname or split_port != parsed.port:
        raise _refuse("it parses differently in different libraries")
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    if port not in policy.allowed_ports:
        raise _refuse(f"port {port} is not allowed")
    addresses = _addresses_of(hostname, port, policy, deadline)
    unique = tuple(dict.fromkeys(str(address) for address in addresses))
    return _Target(prepared.url, parsed.scheme, hostname, port, unique)


def _addresses_of(
    hostname: str, port: int, policy: FetchPolicy, deadline: _Deadline
) -> list[IPAddress]:
    """Return the host's addresses if every one of them may be connected to."""
    literal = _ip_literal(hostname)
    if literal is not None:
        if _is_forbidden(literal, policy.allow_loopback):
            raise _refuse("it points to a private or reserved address")
        return [literal]
    _check_name(hostname, policy)
    resolve = policy.resolver or _system_resolver
    try:
        found = _resolve_within(resolve, hostname, port, deadline)
        answers = [ipaddress.ip_address(answer) for answer in found]
    except (OSError, UnicodeError) as exc:
        raise UpstreamError(f"cannot resolve the host {hostname}") from exc
    except ValueError as exc:
        raise _refuse("its host resolves to something that is not an IP address") from exc
    if not answers:
        raise UpstreamError(f"cannot resolve the host {hostname}")
    # One bad answer refuses the name: the connection could otherwise land on it.
    if any(_is_forbidden(answer, policy.allow_loopback) for answer in answers):
        raise _refuse("its host resolves to a private or reserved address")
    return answers


def _ip_literal(hostname: str) -> IPAddress | None:
    """Return the address a literal host names, None for a DNS name; refuse odd IPv4 spellings."""
    if ":" in hostname:
        try:
            return ipaddress.IPv6Address(hostname)
        except ValueError as exc:
            raise _refuse("its IPv6 address is malformed") from exc
    if _NUMERIC_LABEL.fullmatch(hostname.removesuffix(".").rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(hostname)  # strict: four decimal octets, no leading 0
        except ValueError as exc:
            # 2130706433, 0x7f.1, 0177.0.0.1, 127.1, 0: all 127.0.0.1 or 0.0.0.0 to inet_aton.
            raise _refuse("IPv4 addresses must be written as four decimal numbers") from exc
    return None


def _check_name(hostname: str, policy: FetchPolicy) -> None:
    if not _HOSTNAME.fullmatch(hostname) or len(hostname) > 254:
        raise _refuse("its host name is malformed")  # e.g. percent-encoded (%31%32%37.0.0.1)
    name = hostname.removesuffix(".")
    if policy.allow_loopback and name == "localhost":
        return
    # A single label goes through the resolver's search list: on Google Cloud `metadata` becomes
    # metadata.google.internal.
    if "." not in name or name.endswith(_BLOCKED_NAME_SUFFIXES):
        raise _refuse(f"the host {name} is internal")


def _is_forbidden(address: IPAddress, allow_loopback: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    if allow_loopback and address.is_loopback:
        return False
    return (
        not address.is_global
        or address.is_reserved
        or address.is_multicast
        or any(address in network for network in _BLOCKED_NETWORKS)
    )


def _resolve_within(resolve: Resolver, hostname: str, port: int, deadline: _Deadline) -> list[str]:
    """`resolve(hostname, port)`, or UpstreamTimeout if it has not answered by the deadline."""
    timed_out = UpstreamTimeout(f"the host name {hostname} did not resolve in time")
    if not _lookup_slots.acquire(timeout=deadline.remaining()):
        raise timed_out  # every slot is held by a lookup that has not answered
    outcome: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(resolve(hostname, port))
        except BaseException as exc:  # noqa: BLE001  # handed to the waiting request, re-raised there
            outcome.append(exc)
        finally:
            _lookup_slots.release()
            done.set()

    # A daemon thread: one the resolver never lets go of must not hold up the process's exit.
    threading.Thread(target=lookup, name=f"dns {hostname}", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise timed_out
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return list(result)


def _system_resolver(hostname: str, port: int) -> list[str]:
    # The address family urllib3 would use, so an IPv4-only host is not pinned to IPv6.
    infos = socket.getaddrinfo(hostname, port, allowed_gai_family(), socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _connect_and_send(
    target: _Target, policy: FetchPolicy, deadline: _Deadline
) -> tuple[requests.Response, _PinnedAdapter]:
    """Send the request to the first of the target's addresses that takes the connection."""
    for index, address in enumerate(target.addresses):
        adapter = _PinnedAdapter(target, address)
        try:
            return _send(adapter, target, policy, deadline), adapter
        except _ConnectFailed as failed:
            adapter.close()
            if index == len(target.addresses) - 1 or deadline.expired:
                raise failed.error from failed.__cause__
        except BaseException:
            adapter.close()
            raise
    raise AssertionError("a checked target has at least one address")  # pragma: no cover


class _ConnectFailed(Exception):
    """No connection to this address: the next one may be tried. `error` is what to raise."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _send(
    adapter: _PinnedAdapter, target: _Target, policy: FetchPolicy, deadline: _Deadline
) -> requests.Response:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise UpstreamTimeout("the image download took too long")
    host_header = f"[{target.hostname}]" if ":" in target.hostname else target.hostname
    if target.port != _DEFAULT_PORTS[target.scheme]:
        host_header += f":{target.port}"
    # Built from scratch: no header of the client's request (cookies, Metadata-Flavor...) travels.
    headers = {
        "Host": host_header,
        "User-Agent": policy.user_agent,
        "Accept": "image/*, application/octet-stream;q=0.5",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    request = requests.Request("GET", target.url, headers=headers).prepare()
    try:
        return adapter.send(
            request,
            stream=True,
            timeout=(min(policy.connect_timeout_s, remaining), remaining),
            verify=policy.ca_bundle or True,
        )
    except requests.ConnectTimeout as exc:
        raise _ConnectFailed(UpstreamTimeout("the image server did not answer in time")) from exc
    except requests.Timeout as exc:
        raise UpstreamTimeout("the image server did not answer in time") from exc
    except requests.ConnectionError as exc:
        failure = UpstreamError(f"cannot get the image from {target.hostname}")
        if deadline.expired:
            raise UpstreamTimeout("the image server did not answer in time") from exc
        if _is_connect_failure(exc):
            raise _ConnectFailed(failure) from exc
        raise failure from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        if deadline.expired:
            raise UpstreamTimeout("the image server did not answer in time") from exc
        raise UpstreamError(f"cannot get the image from {target.hostname}") from exc


def _is_connect_failure(exc: requests.ConnectionError) -> bool:
    """Whether no TCP connection was made (refused, unreachable), not a later failure."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the connection's error
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _redirect_location(response: requests.Response) -> str | None:
    if response.status_code not in _REDIRECT_STATUSES:
        return None
    location = response.headers.get("Location")
    if not location:
        raise UpstreamError("the image server sent a redirect without a location")
    # http.client decodes headers as latin-1; servers send UTF-8 (requests does the same fix).
    with contextlib.suppress(UnicodeError):
        location = location.encode("latin-1").decode("utf-8")
    return location


def _read_image(
    response: requests.Response, target: _Target, policy: FetchPolicy, deadline: _Deadline
) -> FetchedBody:
    if not 200 <= response.status_code < 300:
        # The upstream's body is never read, let alone passed on.
        raise UpstreamError(f"the image server answered HTTP {response.status_code}")
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in {"", "identity"}:
        # We asked for identity; decompressing would let a small body become a huge one.
        raise UpstreamError("the image server sent a compressed body")
    content_type = response.headers.get("Content-Type")
    if not is_image_content_type(content_type):
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        shown = f" ({media_type})" if _MEDIA_TYPE.fullmatch(media_type) else ""
        raise UnsupportedMedia(f"the URL does not point to an image{shown}")
    declared = response.headers.get("Content-Length")
    if declared is not None:
        # ASCII digits only (str.isdigit() takes "¹²", which int() refuses), and compared
        # without int() when long: int() of more than 4,300 digits raises.
        digits = declared.strip().lstrip("0") or "0"
        if not _ASCII_DIGITS.fullmatch(digits):
            raise UpstreamError("the image server sent a malformed Content-Length")
        if len(digits) > len(str(policy.max_bytes)) or int(digits) > policy.max_bytes:
            raise PayloadTooLarge(f"the image is larger than {policy.max_bytes:,} bytes")
    data = _read_capped(response.raw, policy.max_bytes, deadline)
    if not data:
        raise UpstreamError("the image server sent an empty body")
    return FetchedBody(data=data, content_type=content_type, final_url=target.url)


def _read_capped(raw: urllib3.HTTPResponse, max_bytes: int, deadline: _Deadline) -> bytes:
    """Return the body, counting bytes as they arrive (a chunked body declares no length)."""
    body = bytearray()
    try:
        while chunk := raw.read(min(_READ_CHUNK, max_bytes + 1 - len(body)), decode_content=False):
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"the image is larger than {max_bytes:,} bytes")
    except (urllib3.exceptions.HTTPError, HTTPException, OSError, ValueError) as exc:
        # ValueError: a chunk size int() reads but HTTP forbids (negative, "1_0").
        if deadline.expired or isinstance(exc, ReadTimeoutError):
            raise UpstreamTimeout("the image download took too long") from exc
        # urllib3 checks Content-Length and chunk sizes: a body cut short lands here.
        raise UpstreamError("the image download broke off or is malformed") from exc
    if deadline.expired:  # a shut-down socket can also look like a clean end of body
        raise UpstreamTimeout("the image download took too long")
    return bytes(body)


class _Deadline:
    """The whole download's time budget: when it runs out, every watched socket is shut down.

    Shutting a socket down from a timer thread wakes a read blocked on it at once, however the
    server paces its bytes. Connections register themselves through `_active_deadline`.
    """

    def __init__(self, seconds: float, stop_signal: StopSignal | None = None) -> None:
        self._ends_at = time.monotonic() + seconds
        self._expired = False
        self.cut_by_stop = False  # the process's stop brought the deadline forward
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = self._timer_for(seconds)
        self._stop_signal = stop_signal
        self._unsubscribe: Callable[[], None] = lambda: None

    def _timer_for(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(max(0.0, seconds), self._expire)
        timer.daemon = True
        return timer

    def __enter__(self) -> _Deadline:
        self._token = _active_deadline.set(self)
        self._timer.start()
        if self._stop_signal is not None:
            self._unsubscribe = self._stop_signal.subscribe(self._bring_forward)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._unsubscribe()
        with self._lock:
            self._timer.cancel()
        _active_deadline.reset(self._token)

    def _bring_forward(self, ends_at: float) -> None:
        """End at `ends_at` (time.monotonic) instead, if that is sooner: the process stops."""
        with self._lock:
            if self._expired or ends_at >= self._ends_at:
                return
            self._ends_at, self.cut_by_stop = ends_at, True
            self._timer.cancel()
            self._timer = self._timer_for(ends_at - time.monotonic())
            self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self._ends_at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self._expired or time.monotonic() >= self._ends_at

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self._expired:
                _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    # socket.socket's own shutdown, not SSLSocket's, which would also drop its TLS state under
    # the reading thread's feet. A socket already closed raises OSError: nothing left to stop.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_active_deadline: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "urlfetch_deadline", default=None
)


class _DeadlineHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        if (deadline := _active_deadline.get()) is not None and self.sock is not None:
            deadline.watch(self.sock)


class _DeadlineHTTPSConnection(HTTPSConnection):
    # TCP connect and TLS handshake are bounded by the connect timeout, the rest by the deadline.
    def connect(self) -> None:
        super().connect()
        if (deadline := _active_deadline.get()) is not None and self.sock is not None:
            deadline.watch(self.sock)


class _DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    """Sends to the checked address while Host, SNI and the certificate check use the hostname.

    The URL inside the request is never used to choose where to connect.
    """

    def __init__(self, target: _Target, address: str) -> None:
        self._target = target
        self._address = address
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPConnectionPool,
            "https": _DeadlineHTTPSConnectionPool,
        }

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        target = self._target
        host_params.update(scheme=target.scheme, host=self._address, port=target.port)
        if target.scheme == "https":
            pool_kwargs["server_hostname"] = target.hostname
            pool_kwargs["assert_hostname"] = target.hostname
        return host_params, pool_kwargs

"""The backend's HTTP server: an event loop that reads whole requests, a thread pool that runs them.

Why not gunicorn's threaded worker: there a connection holds a thread while its request is
read, so 16 clients sending one byte a second held all 8 threads and `/health` stopped
answering (docs/bad-inputs.md, "Slow clients"). Here one asyncio loop reads every connection:
a request reaches a thread only once its headers and body are complete, each read within its
own deadline (`header_timeout_s`, `body_timeout_s`) and byte bound (the request limit per
request, `buffered_bytes_max` for all requests being read at once). h11 parses HTTP (strict
framing: Content-Length and chunk sizes as ASCII digits, one Transfer-Encoding); every answer
the server gives itself (a malformed request, headers too large, a body over the limit, a
timeout) is the JSON error body of the HTTP contract, never HTML.

Stopping: `stop()` (SIGTERM) closes the listening socket at once; a connection then has a
last call (`_LAST_CALL_S`) for a request already on its way; after it, idle connections are
closed, requests still being read are answered 503 `shutting_down`, and the requests in the
threads finish; waits inside them end early (backend/stopping.py). At the graceful stop
whatever is still unanswered gets a 503 with Retry-After, then the server returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import h11

from backend.stopping import StopSignal

log = logging.getLogger("backend.server")

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]

_READ_SIZE = 64 * 1024
_LINGER_S = 2.0  # after refusing a request, how long its remaining bytes are read and dropped
# After SIGTERM, how long a kept-alive connection may still bring a request. A client sends its
# next request on an idle connection whenever it likes; closing that connection the moment the
# stop comes cuts off a request already sent (HTTP's keep-alive race: once in a CI run, a
# client polling /health got no answer). A request that arrives in this moment is served.
_LAST_CALL_S = 0.25
_MAX_TARGET_BYTES = 8 * 1024  # the path and query: ours are short; 8 KB as most servers
_REASONS = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    408: ("request_timeout", "the request was not received in time; send it again, faster"),
    413: ("payload_too_large", "the request body is over the limit"),
    414: ("uri_too_long", "the URL is too long"),
    431: ("headers_too_large", "the request line or headers are too large"),
    500: ("internal_error", "the server failed; try again"),
    501: ("not_implemented", "this Transfer-Encoding is not supported; send the body as is"),
    503: ("shutting_down", "the server is shutting down; retry (another instance will answer)"),
}


@dataclass(frozen=True)
class ServerLimits:
    """What one connection may cost before a thread sees its request."""

    header_timeout_s: float  # request line and headers, from their first byte
    body_timeout_s: float  # the whole body, from the end of the headers
    keepalive_s: float  # an idle connection between requests
    max_header_bytes: int  # request line and headers
    max_body_bytes: int  # one request's body
    buffered_bytes_max: int  # the bodies of every request being read, together
    graceful_s: float  # SIGTERM to the last answer


class _Refusal(Exception):
    """The server answers this request itself, with `status`, and closes the connection."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        retry_after: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.code = code


class _Closed(Exception):
    """The client went away, or was idle too long between requests: close without answering."""


class FrontServer:
    """Serve `app` (WSGI) on `sock` with `threads` request threads; `stop()` ends it."""

    def __init__(
        self,
        app: WsgiApp,
        sock: socket.socket,
        *,
        threads: int,
        limits: ServerLimits,
        stop_signal: StopSignal,
    ) -> None:
        self.app = app
        self.sock = sock
        self.address = sock.getsockname()[:2]  # kept: the socket is closed at the stop
        self.limits = limits
        self.stop_signal = stop_signal
        self.threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="request")
        self._buffered = 0
        self._connections: dict[asyncio.Task, str] = {}  # task -> "idle", "reading" or "busy"
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._hard_stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- running and stopping ------------------------------------------------------------

    async def run(self, on_stop: Callable[[], None] = lambda: None) -> None:
        """Serve until `stop()`; then answer or refuse what is held, within the graceful stop."""
        self._loop = asyncio.get_running_loop()
        self._stopping, self._hard_stop = asyncio.Event(), asyncio.Event()
        self._server = await asyncio.start_server(self._connection, sock=self.sock)
        host, port = self.address
        log.info("listening at http://%s:%s", host, port, extra={"event": "listening"})
        await self._stopping.wait()
        self._server.close()  # if stop() came before the server existed
        stopped_at = time.monotonic()
        on_stop()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=_LAST_CALL_S)
        for task, state in list(self._connections.items()):
            if state != "busy":  # idle or still sending: nothing of theirs runs yet
                task.cancel()
        # Half a second before the graceful stop ends, to write the last answers and exit.
        answer_all_s = max(0.0, self.limits.graceful_s - 0.5)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(self._loop.time() + answer_all_s):
                while self._connections:
                    await asyncio.wait(list(self._connections), timeout=0.5)
        if self._connections:
            self._hard_stop.set()  # every request still in a thread: 503 now
            await asyncio.wait(list(self._connections), timeout=0.5)
        log.info(
            "stopped serving",
            extra={"event": "stopped", "stop_s": round(time.monotonic() - stopped_at, 3)},
        )

    def stop(self) -> None:
        """Begin the graceful stop (call from the loop's thread, e.g. its signal handler)."""
        self.stop_signal.stop(self.limits.graceful_s)
        if self._server is not None:
            # Now, before any answer says "Connection: close": a client that connects again is
            # refused (and goes elsewhere), not taken into the kernel's backlog and then reset.
            self._server.close()
        if self._stopping is not None:
            self._stopping.set()

    def in_flight(self) -> int:
        return sum(state == "busy" for state in self._connections.values())

    # --- one connection ------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = "idle"
        _no_delay(writer)
        peer = writer.get_extra_info("peername") or ("", 0)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        try:
            while True:
                try:
                    request, body = await self._read_request(conn, reader, writer, task)
                except _Refusal as refusal:
                    await self._send_error(conn, reader, writer, refusal)
                    return
                except asyncio.CancelledError:  # the server is stopping
                    task.uncancel()
                    if self._connections.get(task) == "reading":  # a request had begun: answer
                        await self._send_error(conn, reader, writer, _Refusal(503, retry_after=1))
                    return
                self._connections[task] = "busy"
                status, headers, payload = await self._dispatch(request, body, peer)
                if not await self._send(conn, writer, request, status, headers, payload):
                    return
                if conn.our_state is not h11.DONE or self.stop_signal.stopping:
                    return
                conn.start_next_cycle()
                self._connections[task] = "idle"
        except (_Closed, ConnectionError, h11.LocalProtocolError, TimeoutError):
            return
        except Exception:  # a bug of this server's: logged, the client told, never a silent cut
            log.exception("the server failed on a connection", extra={"event": "server_error"})
            await self._send_error(conn, reader, writer, _Refusal(500))
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader, writer, task: asyncio.Task
    ) -> tuple[h11.Request, bytes]:
        """A whole request: its headers within `header_timeout_s`, its body within
        `body_timeout_s`, each within its byte bounds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.keepalive_s  # for the first byte
        request = None
        while request is None:
            event = _next_event(conn)
            if event is h11.NEED_DATA:
                idle = self._connections[task] == "idle"
                late = _Closed() if idle else _Refusal(408, "the request headers came too slowly")
                data = await self._receive(reader, deadline, late)
                if data and idle:
                    self._connections[task] = "reading"
                    deadline = loop.time() + self.limits.header_timeout_s
                if not data and self._connections[task] == "idle":
                    raise _Closed
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                self._connections[task] = "reading"
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed
            else:  # pragma: no cover - h11 gives a Request first on a server connection
                raise _Refusal(400)
        self._check_head(request)
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = bytearray()
        deadline = loop.time() + self.limits.body_timeout_s
        reserved = 0
        try:
            while True:
                event = _next_event(conn)
                if event is h11.NEED_DATA:
                    late = _Refusal(408, "the request body came too slowly")
                    data = await self._receive(reader, deadline, late)
                    conn.receive_data(data)
                elif isinstance(event, h11.Data):
                    if len(body) + len(event.data) > self.limits.max_body_bytes:
                        raise _Refusal(413, self._too_large_message())
                    reserved += self._reserve(len(event.data))
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return request, bytes(body)
                else:
                    raise _Refusal(400)
        finally:
            self._buffered -= reserved

    async def _receive(
        self, reader: asyncio.StreamReader, deadline: float, on_timeout: Exception
    ) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await reader.read(_READ_SIZE)
        except TimeoutError:
            raise on_timeout from None

    def _check_head(self, request: h11.Request) -> None:
        """Refuse what h11 lets through: it bounds only a head that arrives in pieces."""
        if request.http_version not in (b"1.0", b"1.1"):
            raise _Refusal(400, "this server speaks HTTP/1.1 only")
        if len(request.target) > _MAX_TARGET_BYTES:
            raise _Refusal(414, f"the URL is over {_MAX_TARGET_BYTES:,} bytes")
        head = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if head > self.limits.max_header_bytes:
            raise _Refusal(431, f"the headers are over {self.limits.max_header_bytes:,} bytes")
        for name, value in request.headers:
            # h11 has checked the value is ASCII digits; a huge one is refused before reading.
            if name == b"content-length" and (
                len(value) > 18 or int(value) > self.limits.max_body_bytes
            ):
                raise _Refusal(413, self._too_large_message())

    def _too_large_message(self) -> str:
        limit = self.limits.max_body_bytes
        return f"the request body is over the {limit:,}-byte limit; send a smaller image"

    def _reserve(self, size: int) -> int:
        if self._buffered + size > self.limits.buffered_bytes_max:
            raise _Refusal(
                503,
                "the server is receiving as many request bodies as its memory allows; retry",
                retry_after=1,
                code="busy",
            )
        self._buffered += size
        return size

    # --- running a request ---------------------------------------------------------------

    async def _dispatch(self, request: h11.Request, body: bytes, peer) -> tuple:
        environ = _environ(request, body, peer, self.address)
        future = asyncio.wrap_future(self.threads.submit(_call_app, self.app, environ))
        assert self._hard_stop is not None
        hard_stop = asyncio.ensure_future(self._hard_stop.wait())
        try:
            await asyncio.wait({future, hard_stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hard_stop.cancel()
        if future.done():
            return future.result()
        future.cancel()  # nothing to cancel in a thread; its answer is dropped
        return _error_answer(_Refusal(503, retry_after=1))

    async def _send(self, conn, writer, request, status: int, headers, payload: bytes) -> bool:
        """Write the answer; False if the client is gone."""
        headers = [
            (k, v) for k, v in headers if k.lower() not in (b"content-length", b"connection")
        ]
        headers.append((b"Content-Length", str(len(payload)).encode()))
        if self.stop_signal.stopping:
            headers.append((b"Connection", b"close"))
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        if request.method != b"HEAD" and payload:
            writer.write(conn.send(h11.Data(data=payload)))
        writer.write(conn.send(h11.EndOfMessage()))
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            return False
        return True

    async def _send_error(self, conn: h11.Connection, reader, writer, refusal: _Refusal) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # an answer was begun: nothing more can be said
        status, headers, payload = _error_answer(refusal)
        headers.append((b"Connection", b"close"))
        headers.append((b"Content-Length", str(len(payload)).encode()))
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError, TimeoutError, OSError):
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            writer.write(conn.send(h11.Data(data=payload)))
            writer.write(conn.send(h11.EndOfMessage()))
            async with asyncio.timeout(1):
                await writer.drain()
            # Lingering close: a client still sending the body we refused would get a reset on
            # close, and a reset can discard our answer before it reads it. Half-close, then
            # drop what it still sends, for a moment.
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                while await reader.read(_READ_SIZE):
                    pass


def _next_event(conn: h11.Connection):
    """h11's next event; a request it refuses becomes the answer it suggests (400, 431, 501)."""
    try:
        return conn.next_event()
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint if exc.error_status_hint in _REASONS else 400
        raise _Refusal(status, f"{_REASONS[status][1]}: {str(exc)[:200]}") from None
    except ValueError:  # a Content-Length of thousands of digits: int() refuses it
        raise _Refusal(400, "the Content-Length is not a number HTTP allows") from None


def _error_answer(refusal: _Refusal) -> tuple[int, list, bytes]:
    code, message = _REASONS.get(refusal.status, _REASONS[400])
    body = {"error": {"code": refusal.code or code, "message": refusal.message or message}}
    headers = [(b"Content-Type", b"application/json")]
    if refusal.retry_after is not None:
        headers.append((b"Retry-After", str(refusal.retry_after).encode()))
    return refusal.status, headers, json.dumps(body).encode()


def _environ(request: h11.Request, body: bytes, peer, server_address) -> dict:
    """The WSGI environ (PEP 3333) of a complete request."""
    path, _, query = request.target.partition(b"?")
    environ = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": str(server_address[0]),
        "SERVER_PORT": str(server_address[1]),
        "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('ascii')}",
        "REMOTE_ADDR": str(peer[0]),
        "REMOTE_PORT": str(peer[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1")
        # A header with "_" would become the same variable as one with "-": drop it, so that
        # no client can pass X_Forwarded_For off as X-Forwarded-For.
        if "_" in name or name in ("content-length", "transfer-encoding"):
            continue
        value = raw_value.decode("latin-1")
        key = "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if environ.get("HTTP_X_FORWARDED_PROTO") == "https":  # Cloud Run terminates TLS in front
        environ["wsgi.url_scheme"] = "https"
    return environ


def _call_app(app: WsgiApp, environ: dict) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run the WSGI app on a request thread; its status, headers and whole body."""
    started: dict = {}

    def start_response(status: str, headers: list, exc_info=None):
        started["status"], started["headers"] = status, headers
        return lambda data: None  # the legacy write(): unused by Flask

    try:
        result = app(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:  # a bug below Flask's own handlers: answered, logged, never a cut
        log.exception("the app failed", extra={"event": "unhandled_error"})
        return _error_answer(_Refusal(500))
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in started["headers"]]
    return int(started["status"].split(" ", 1)[0]), headers, payload


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Send each answer as soon as it is written (TCP_NODELAY).

    asyncio sets it only on sockets whose protocol number says TCP, and a socket from
    `socket.create_server` (ours: backend/launch.py) says 0. Without it, the body of an answer
    waited for the client to acknowledge its headers: Nagle's algorithm against the client's
    delayed ACK, ~40 ms on every answer (/predict on resnet152: 164 ms at the client, 118 ms
    in the server).
    """
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

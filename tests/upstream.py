"""A scripted image server on 127.0.0.1 playing the good and bad upstreams of docs/bad-inputs.md.

    from tests.upstream import upstream_server

    with upstream_server() as upstream:
        upstream.url("/image.png")   # "http://127.0.0.1:<port>/image.png"
        upstream.port                # the port to allow (with loopback) in the fetch policy
        upstream.requests            # what reached the server: [ReceivedRequest(path, headers)]

Routes (GET):
    /image.png  /image.jpg      a small PNG / JPEG (bytes in PNG_BYTES, JPEG_BYTES)
    /no-type  /octet-stream     the PNG with no Content-Type / application/octet-stream
    /not-found  /server-error   404 / 500 whose body contains SECRET_BODY (must never be echoed)
    /html                       200 text/html
    /too-large                  declares a 1 GiB Content-Length, sends 16 bytes, then stalls
    /endless                    chunked body that never ends
    /short                      Content-Length 1000, sends 100 bytes, closes
    /drip                       Content-Length 1000, one byte every `drip_interval_s` (0.5 s)
    /hang                       reads the request, never answers
    /gzip                       the PNG gzip-compressed, Content-Encoding: gzip
    /redirect/<n>               n redirects (302, relative) down to /redirect/0, which is the PNG
    /redirect?to=<url>          302 to <url> (URL-encoded), e.g. a forbidden address

`upstream.add_route(path, handler)` adds one: `handler(request)` gets the
BaseHTTPRequestHandler. `upstream_server(tls=(certfile, keyfile))` serves HTTPS instead;
`make_tls_certificate(directory, hostname)` writes a self-signed certificate for a hostname.
Stalling routes end when the client goes away or the server closes.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import io
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

SECRET_BODY = b"upstream-secret-body: do not echo me"
DECLARED_HUGE_LENGTH = 1 << 30
SHORT_DECLARED_LENGTH = 1000
DRIP_LENGTH = 1000


def _encode(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG_BYTES = _encode("PNG")
JPEG_BYTES = _encode("JPEG")


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]


Handler = Callable[[BaseHTTPRequestHandler], None]


class Upstream:
    """A running server: its address, what it received, and its routes."""

    def __init__(self, server: ThreadingHTTPServer, scheme: str) -> None:
        self._server = server
        self.scheme = scheme
        address = server.server_address[0]
        self.host = f"[{address}]" if ":" in str(address) else str(address)  # as in a URL
        self.port: int = server.server_address[1]
        self.requests: list[ReceivedRequest] = []
        self.drip_interval_s = 0.5
        self.stopping = threading.Event()
        self.routes: dict[str, Handler] = _default_routes(self)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str, host: str | None = None) -> str:
        """Return the URL of `path`, optionally under another host name (resolve it to us)."""
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def add_route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        self.requests.append(ReceivedRequest(request.path, dict(request.headers.items())))
        path = urlsplit(request.path).path
        handler = self.routes.get(path)
        if handler is None and path.startswith("/redirect/"):
            handler = self.routes["/redirect/<n>"]
        (handler or _not_found)(request)


def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name.replace("_", "-"), value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


def _not_found(request: BaseHTTPRequestHandler) -> None:
    _send(request, 404, SECRET_BODY, Content_Type="text/plain")


def _default_routes(upstream: Upstream) -> dict[str, Handler]:
    def image(body: bytes, content_type: str | None) -> Handler:
        def handle(request: BaseHTTPRequestHandler) -> None:
            headers = {"Content_Type": content_type} if content_type else {}
            _send(request, 200, body, **headers)

        return handle

    def start_body(request: BaseHTTPRequestHandler, length: int, sent: bytes) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", str(length))
        request.end_headers()
        request.wfile.write(sent)
        request.wfile.flush()

    def too_large(request: BaseHTTPRequestHandler) -> None:
        start_body(request, DECLARED_HUGE_LENGTH, PNG_BYTES[:16])
        upstream.stopping.wait()

    def endless(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        chunk = b"\0" * 65536
        while not upstream.stopping.is_set():
            request.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    def short(request: BaseHTTPRequestHandler) -> None:
        start_body(request, SHORT_DECLARED_LENGTH, PNG_BYTES[:100])
        request.close_connection = True

    def drip(request: BaseHTTPRequestHandler) -> None:
        start_body(request, DRIP_LENGTH, b"")
        for _ in range(DRIP_LENGTH):
            if upstream.stopping.wait(upstream.drip_interval_s):
                return
            request.wfile.write(b"\0")
            request.wfile.flush()

    def hang(request: BaseHTTPRequestHandler) -> None:
        upstream.stopping.wait()

    def gzipped(request: BaseHTTPRequestHandler) -> None:
        _send(
            request,
            200,
            gzip.compress(PNG_BYTES),
            Content_Type="image/png",
            Content_Encoding="gzip",
        )

    def redirect_chain(request: BaseHTTPRequestHandler) -> None:
        remaining = int(urlsplit(request.path).path.rsplit("/", 1)[1])
        if remaining == 0:
            _send(request, 200, PNG_BYTES, Content_Type="image/png")
        else:
            _send(request, 302, b"", Location=f"/redirect/{remaining - 1}")

    def redirect_to(request: BaseHTTPRequestHandler) -> None:
        location = parse_qs(urlsplit(request.path).query)["to"][0]
        _send(request, 302, b"", Location=location)

    return {
        "/image.png": image(PNG_BYTES, "image/png"),
        "/image.jpg": image(JPEG_BYTES, "image/jpeg"),
        "/no-type": image(PNG_BYTES, None),
        "/octet-stream": image(PNG_BYTES, "application/octet-stream"),
        "/not-found": _not_found,
        "/server-error": lambda request: _send(request, 500, SECRET_BODY),
        "/html": image(b"<!doctype html><title>not an image</title>", "text/html"),
        "/too-large": too_large,
        "/endless": endless,
        "/short": short,
        "/drip": drip,
        "/hang": hang,
        "/gzip": gzipped,
        "/redirect/<n>": redirect_chain,
        "/redirect": redirect_to,
    }


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked bodies need it
    server: _Server

    def do_GET(self) -> None:
        self.close_connection = True
        self.server.upstream._dispatch(self)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: eight downloads connecting at once, while the
    # accept loop waits for the GIL, overflow it, and the kernel drops the extra connections'
    # SYNs, which their client sends again one second later (once in CI, a test's 8 downloads
    # began 1.02 s late and ran into their own deadline before the stop's).
    request_queue_size = 64
    upstream: Upstream


class _Server6(_Server):
    address_family = socket.AF_INET6

    def handle_error(self, request: object, client_address: object) -> None:
        # A client giving up on a stalling route is the point of the route, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError | ssl.SSLError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def upstream_server(
    tls: tuple[Path, Path] | None = None, host: str = "127.0.0.1"
) -> Iterator[Upstream]:
    """Run the scripted server on `host` (127.0.0.1 or ::1; an ephemeral port) for the block."""
    server = (_Server6 if ":" in host else _Server)((host, 0), _RequestHandler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    upstream = Upstream(server, "https" if tls else "http")
    server.upstream = upstream
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield upstream
    finally:
        upstream.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_tls_certificate(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Write a self-signed certificate for `hostname` (its own CA); return (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{hostname}.pem"
    key_path = directory / f"{hostname}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path

"""Real HTTP servers on 127.0.0.1 for the frontend's tests: the network boundary, not mocks.

    with ScriptedServer({("GET", "/models"): json_reply(["resnet18"])}) as backend:
        backend.url                  # "http://127.0.0.1:<port>"
        backend.requests             # what reached it: [Received(method, path, headers, body)]

- `ScriptedServer`: canned replies by (method, path); a stand-in backend that can be slow,
  broken or private. Unscripted paths answer 404 with no body.
- `image_server()`: serves a generated JPEG at /cat.jpg and a text file at /notes.txt.
- `gateway(backend_url)`: a path-routing stand-in for the v3 API gateway.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay_s: float = 0.0  # wait before the status line: a slow backend
    # Send the body in this many pieces, `delay_s` apart (after the headers): an answer that
    # keeps trickling in, each gap shorter than a read timeout.
    trickle: int = 0


def json_reply(obj: object, status: int = 200, **kwargs) -> Reply:
    return Reply(status, json.dumps(obj).encode(), **kwargs)


def error_reply(status: int, code: str, message: str) -> Reply:
    return json_reply({"error": {"code": code, "message": message}}, status)


Responder = Callable[[Received], Reply]


@dataclass
class ScriptedServer:
    """A threaded HTTP server on 127.0.0.1 answering from a script; records every request."""

    script: dict[tuple[str, str], Reply] | Responder = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                server.requests.append(received)
                reply = server.reply_for(received)
                if reply.delay_s and not reply.trickle:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                pieces = max(1, reply.trickle)
                size = -(-len(reply.body) // pieces)
                for start in range(0, len(reply.body), size):
                    self.wfile.write(reply.body[start : start + size])
                    self.wfile.flush()
                    if reply.trickle:
                        time.sleep(reply.delay_s)

            do_GET = do_POST = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # clients that give up early (timeout tests) are expected

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def reply_for(self, received: Received) -> Reply:
        if callable(self.script):
            return self.script(received)
        return self.script.get((received.method, received.path.split("?")[0]), Reply(404))

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method in (None, r.method)]

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def sample_jpeg(size: int = 320) -> bytes:
    """A small picture (sky, sun, hill) that any backend decodes."""
    image = Image.new("RGB", (size, size), (110, 170, 230))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.6, size * 0.1, size * 0.85, size * 0.35), fill=(250, 210, 60))
    draw.polygon([(0, size), (size * 0.45, size * 0.45), (size, size)], fill=(60, 140, 70))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


JPEG = sample_jpeg()


def image_server() -> ScriptedServer:
    return ScriptedServer(
        {
            ("GET", "/cat.jpg"): Reply(body=JPEG, content_type="image/jpeg"),
            ("GET", "/notes.txt"): Reply(body=b"not an image\n", content_type="image/jpeg"),
        }
    )


_GATEWAY_PREDICT = re.compile(r"^/model/[^/]+/predict$")


def gateway(backend_url: str) -> ScriptedServer:
    """Routes only what the v3 gateway routes: GET /models and POST /model/<id>/predict."""

    def forward(received: Received) -> Reply:
        routed = (received.method, received.path) == ("GET", "/models") or (
            received.method == "POST" and _GATEWAY_PREDICT.match(received.path)
        )
        if not routed:
            return Reply(404, b"no route", content_type="text/plain")
        answer = requests.request(
            received.method,
            backend_url + received.path,
            data=received.body,
            headers={"Content-Type": received.headers.get("content-type", "")},
            timeout=60,
        )
        return Reply(answer.status_code, answer.content, answer.headers["Content-Type"])

    return ScriptedServer(forward)


@dataclass
class TokenEndpoint:
    """A stand-in for Google's OAuth token endpoint, and a service account key that uses it.

    google-auth's own service-account code runs against it: it signs a JWT assertion with the
    key, POSTs it to `token_uri`, and reads the ID token (a JWT whose `exp` is
    `lifetime_s` from now) from the answer. `issued` lists the tokens given out.
    """

    lifetime_s: float = 3600
    issued: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from google.auth import crypt

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self._signer = crypt.RSASigner.from_string(self.private_key, key_id="test-key")
        self.server = ScriptedServer(self._grant)

    def _grant(self, received: Received) -> Reply:
        from google.auth import jwt

        if (received.method, received.path) != ("POST", "/token"):
            return Reply(404)
        now = int(time.time())
        claims = {"iss": "https://accounts.google.com", "iat": now}
        claims["exp"] = now + int(self.lifetime_s)
        token = jwt.encode(self._signer, {**claims, "n": len(self.issued)}).decode()
        self.issued.append(token)
        return json_reply({"id_token": token})

    def key_file(self, path) -> str:
        """Writes a service account key pointing at this endpoint; returns its path."""
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "test-project",
                    "private_key_id": "test-key",
                    "private_key": self.private_key,
                    "client_email": "frontend@test-project.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": f"{self.server.url}/token",
                }
            )
        )
        return str(path)

    def __enter__(self) -> TokenEndpoint:
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)

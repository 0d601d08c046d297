"""deployment/steps/base.sh's look-up of an existing base asks the registry for read only.

A registry behind token auth (as Artifact Registry is), over TLS, whose token server records the
scopes each request asks for and grants pull only: the look-up must ask for pull alone. The old
look-up, `docker manifest inspect` with docker 20.10's CLI, asked for push and pull (shown too).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.backend_process import free_port
from tests.cloudbuild_runner import BuildFailed, run_build
from tests.dockerd import Registry

pytestmark = [pytest.mark.cloudbuild, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
STEP = """steps:
  - id: base
    name: gcr.io/cloud-builders/docker
    entrypoint: bash
    args: [deployment/steps/base.sh, "${_IMAGE}", "${BUILD_ID}", Dockerfile, --, input.txt]
"""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens (RS256, the certificate in x5c) granting pull, and push only while
    allowed; records the scopes asked for."""

    def __init__(self, key: Path, cert: Path) -> None:
        self.scopes: list[str] = []
        self.allow_push, self.key = True, key
        der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "der"],
                             capture_output=True, check=True).stdout  # fmt: skip
        self.header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                scopes = parse_qs(urlparse(self.path).query).get("scope", [])
                server.scopes += scopes
                body = json.dumps({"token": server.token(scopes)}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:  # repository:NAME:pull,push
            kind, rest = scope.split(":", 1)
            name, actions = rest.rsplit(":", 1)
            granted = [a for a in actions.split(",") if a == "pull" or self.allow_push]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": "test-issuer", "sub": "build", "aud": "test-registry", "exp": now + 600,
                  "nbf": now - 60, "iat": now, "jti": uuid.uuid4().hex,
                  "access": access}  # fmt: skip
        signed = f"{b64(json.dumps(self.header).encode())}.{b64(json.dumps(claims).encode())}"
        sign = ["openssl", "dgst", "-sha256", "-sign", self.key]
        signature = subprocess.run(sign, input=signed.encode(), capture_output=True, check=True)
        return f"{signed}.{b64(signature.stdout)}"


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    return key, cert


@pytest.fixture
def guarded_registry(tmp_path):
    """A TLS registry behind token auth, and its token server."""
    self_signed(tmp_path, "tls")
    tokens = TokenServer(*self_signed(tmp_path, "token"))
    registry = Registry(
        tmp_path,
        free_port(),
        f"  tls:\n    certificate: {tmp_path}/tls.crt\n    key: {tmp_path}/tls.key\n"
        f"auth:\n  token:\n    realm: {tokens.url}\n    service: test-registry\n"
        f"    issuer: test-issuer\n    rootcertbundle: {tmp_path}/token.crt\n",
    )
    yield registry, tokens
    registry.stop()
    tokens.httpd.shutdown()


def test_the_look_up_of_an_existing_base_asks_for_pull_only(
    docker_engine, guarded_registry, tmp_path
):
    registry, tokens = guarded_registry
    workspace = tmp_path / "workspace"
    (workspace / "deployment/steps").mkdir(parents=True)
    shutil.copy2(ROOT / "deployment/steps/base.sh", workspace / "deployment/steps/base.sh")
    (workspace / "Dockerfile").write_text("FROM busybox\nCOPY input.txt /\n")
    (workspace / "input.txt").write_text(uuid.uuid4().hex)
    (workspace / "cloudbuild.yaml").write_text(STEP)
    image = {"_IMAGE": f"{registry.host}/p/r/thing_base"}
    built = run_build(workspace / "cloudbuild.yaml", workspace, docker_engine, substitutions=image)
    assert "building it" in built.log  # pushed, with push allowed
    docker_engine.forget_everything()
    tokens.allow_push, tokens.scopes = False, []
    with pytest.raises(BuildFailed) as failed:  # pushing :latest is refused, as it should be
        run_build(workspace / "cloudbuild.yaml", workspace, docker_engine, substitutions=image)
    assert "not rebuilt" in str(failed.value)  # the look-up found the base
    assert tokens.scopes[0] == "repository:p/r/thing_base:pull", tokens.scopes
    tokens.scopes = []  # the old look-up, `docker manifest inspect` (20.10's CLI), asked for push
    docker_engine.run("manifest", "inspect", f"{image['_IMAGE']}:latest", check=False)
    assert tokens.scopes[0] == "repository:p/r/thing_base:push,pull"

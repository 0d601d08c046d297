"""A stand-in for the weights' origins, on 127.0.0.1: torchvision's file host and the Hub.

Served over plain http: the fetch allows http only from this machine (127.0.0.1), which is
where these servers are. The catalog pins each file's full sha256 and size, as the real one
does for the files it can, so a frozen fetch (the image builds) accepts them.

Real files in the real on-disk formats (random values) are served over real HTTP, so the
fetch code and huggingface_hub's own download code run unchanged against them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from weights.catalog import Catalog, load_catalog
from weights.demo import write_untrained

HUB_REPO = "timm/resnet18.tv_in1k"
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"
HUB_FILE = "model.safetensors"


@dataclass
class Route:
    path: Path
    headers: dict[str, str] = field(default_factory=dict)
    truncate_to: int | None = None  # send fewer bytes than Content-Length announces
    status: int = 200


class OriginServer:
    """A threaded HTTP server serving files by URL path; it records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _answer(self, with_body: bool) -> None:
                origin.requests.append((self.command, self.path))
                route = origin.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = route.path.read_bytes()
                self.send_response(route.status)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                for key, value in route.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if with_body:
                    self.wfile.write(data[: route.truncate_to])

            def do_GET(self):
                self._answer(with_body=True)

            def do_HEAD(self):
                self._answer(with_body=False)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # clients that hang up early (tests of failed downloads) are expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> OriginServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET"]


@dataclass
class WeightsOrigin:
    """Generated files, the server offering them, and a catalog that points at it."""

    server: OriginServer
    catalog: Catalog
    catalog_path: Path
    files: dict[str, tuple[Path, str]]  # model id -> (file, sha256)

    @property
    def hub_endpoint(self) -> str:
        return self.server.base_url


def make_origin(root: Path, server: OriginServer) -> WeightsOrigin:
    """Generate weights for resnet18, mobilenet_v3_large and a Hub resnet18; serve them."""
    files_dir = root / "files"
    files: dict[str, tuple[Path, str]] = {}
    for model_id, arch, seed in [
        ("resnet18", "resnet18", 1),
        ("mobilenet_v3_large", "mobilenet_v3_large", 2),
    ]:
        path, digest = write_untrained(arch, files_dir, seed=seed)
        server.routes[f"/models/{path.name}"] = Route(path)
        files[model_id] = (path, digest)
    hub_path, hub_digest = write_untrained(
        "resnet18", files_dir / "hub", stem="model", fmt="safetensors", seed=3
    )
    server.routes[f"/{HUB_REPO}/resolve/{HUB_REVISION}/{HUB_FILE}"] = Route(
        hub_path,
        headers={"X-Repo-Commit": HUB_REVISION, "ETag": f'"{hub_digest}"'},
    )
    files["resnet18_timm"] = (hub_path, hub_digest)

    base = server.base_url
    sizes = {model_id: path.stat().st_size for model_id, (path, _) in files.items()}
    catalog_path = root / "catalog.toml"
    catalog_path.write_text(
        f"""
default = "resnet18"
[sets]
small = ["resnet18", "mobilenet_v3_large"]
[models.resnet18]
architecture = "resnet18"
weights = "ResNet18_Weights.IMAGENET1K_V1"
url = "{base}/models/{files["resnet18"][0].name}"
sha256 = "{files["resnet18"][1]}"
size = {sizes["resnet18"]}
[models.mobilenet_v3_large]
architecture = "mobilenet_v3_large"
weights = "MobileNet_V3_Large_Weights.IMAGENET1K_V2"
url = "{base}/models/{files["mobilenet_v3_large"][0].name}"
sha256 = "{files["mobilenet_v3_large"][1]}"
size = {sizes["mobilenet_v3_large"]}
[models.resnet18_timm]
architecture = "resnet18"
weights = "ResNet18_Weights.IMAGENET1K_V1"
preprocessing = {{ resize = 128, crop = 112, interpolation = "bicubic" }}
[models.resnet18_timm.hub]
repo = "{HUB_REPO}"
file = "{HUB_FILE}"
revision = "{HUB_REVISION}"
sha256 = "{hub_digest}"
"""
    )
    return WeightsOrigin(server, load_catalog(catalog_path), catalog_path, files)

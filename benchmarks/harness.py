"""What the benchmarks share: weights and bundles to serve, processes to launch, logs to read."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bake.pipeline import bake  # noqa: E402
from runtime.bundle import GRAPH, GRAPH_DATA, read_index  # noqa: E402
from runtime.timing import TIMING  # noqa: E402
from weights.catalog import load_catalog  # noqa: E402
from weights.demo import bake_untrained  # noqa: E402
from weights.lock import read_lock  # noqa: E402


def test_image() -> bytes:
    """A 640x480 JPEG: a realistic upload that every model resizes and crops."""
    image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    image.paste((200, 60, 40), (160, 120, 480, 360))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bench_weights(ids: list[str], directory: Path) -> Path:
    """Random weights of the real architectures: real file sizes, real compute costs."""
    bake_untrained(ids, directory, catalog=load_catalog())
    return directory


def bench_bundles(ids: list[str], weights_dir: Path, directory: Path) -> Path:
    """Those weights compiled by the real bake step (kept between runs while unchanged)."""
    bake(ids, weights_dir, directory, catalog=load_catalog(), say=print)
    return directory


def weight_files(directory: Path, ids: list[str]) -> dict[str, Path]:
    lock = read_lock(directory)
    return {i: directory / lock[i].file for i in ids}


def graphs(bundles_dir: Path, ids: list[str]) -> dict[str, Path]:
    """Each model's ONNX graph in a bundles directory."""
    read_index(bundles_dir)  # a bundles directory, or a clear error
    return {i: bundles_dir / i / GRAPH for i in ids}


def model_files_mib(bundles_dir: Path, ids: list[str]) -> float:
    """What the served model files weigh (graph + weights data), MiB."""
    files = [bundles_dir / i / name for i in ids for name in (GRAPH, GRAPH_DATA)]
    return sum(f.stat().st_size for f in files) / 2**20


def architecture(model_id: str) -> str:
    return load_catalog().entry(model_id).architecture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_page_cache() -> bool:
    """Evict file pages (weights, libraries) so the next start reads from disk; root only."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


class FileServer:
    """Serve a directory over HTTP on 127.0.0.1 (for 'download at start')."""

    def __init__(self, directory: Path) -> None:
        handler = partial(_QuietHandler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@dataclass
class Launched:
    process: subprocess.Popen
    url: str
    log_path: Path
    launched_at: float

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def worker_pid(self) -> int:
        """The process that serves: gunicorn's worker, or our backend itself (no children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return int(children.split()[0]) if children.split() else self.process.pid


def launch(command: Sequence[str], env: dict[str, str], log_path: Path) -> Launched:
    port = free_port()
    launched_at = time.time()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1", **env},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    return Launched(process, f"http://127.0.0.1:{port}", log_path, launched_at)


class StartupProbe:
    """Cloud Run's startup probe, as the deploys configure it (deployment/ops.py): GET /ready
    every `TIMING.probe_s` from the launch, each waiting up to `TIMING.probe_s` for its answer;
    `passed_at` (wall clock) once one answered 200, the moment Cloud Run would route the first
    request to the instance."""

    def __init__(self, target: Launched) -> None:
        self.target, self.passed_at = target, None
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self._thread.start()

    def _probe(self) -> None:
        period = TIMING.probe_s
        tick = self.target.launched_at
        while self.target.process.poll() is None:
            time.sleep(max(0.0, tick - time.time()))
            try:
                if requests.get(f"{self.target.url}/ready", timeout=period).status_code == 200:
                    self.passed_at = time.time()
                    return
            except requests.RequestException:  # not listening yet, or no answer in time
                pass
            tick += period

    def passed(self, timeout: float = 60) -> float:
        """Seconds from the launch to the probe that passed."""
        self._thread.join(timeout)
        if self.passed_at is None:
            log = self.target.log_path.read_text()[-3000:]
            raise RuntimeError(f"the startup probe never passed:\n{log}")
        return self.passed_at - self.target.launched_at


# Our backend as Cloud Run runs it (docker/backend.Dockerfile's CMD).
BACKEND = (sys.executable, "-m", "backend")


def poll_prediction(
    url: str, image: bytes, model: str, *, timeout: float = 300, alive=None
) -> float:
    """Wall-clock time of the first 200 from POST /predict at `url`, polling from now.

    `alive()` (optional) says whether the server is still running: a server that died
    fails at once instead of at the timeout.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server at {url} stopped before it answered")
        try:
            response = requests.post(
                f"{url}/predict",
                files={"image": ("x.jpg", image, "image/jpeg")},
                data={"model": model},
                timeout=60,
            )
            if response.status_code == 200:
                return time.time()
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no prediction from {url} within {timeout}s")


def first_prediction(target: Launched, image: bytes, model: str, timeout: float = 300) -> float:
    """Wall-clock time of a launched process's first 200 (its log on failure)."""
    try:
        return poll_prediction(
            target.url, image, model, timeout=timeout, alive=lambda: target.process.poll() is None
        )
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}:\n{target.log_path.read_text()[-3000:]}") from exc


def log_time(event: dict) -> float:
    """Wall-clock seconds of a backend JSON log line's ISO 'time' (or an explicit 't')."""
    if "t" in event:
        return float(event["t"])
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: list[float]) -> float:
    return percentile(values, 0.5)

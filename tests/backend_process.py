"""Run the real backend (`python -m backend`, as the image does) as a process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def port_served(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BackendProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds until /ready answered 200; raises with the log if it never does."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"backend exited {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"backend not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 15 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_backend(
    bundles_dir: Path,
    log_path: Path,
    *,
    prefix: tuple[str, ...] = (),
    module: str = "backend",
    **env: str,
) -> BackendProcess:
    """Start the backend as Cloud Run would, with test-friendly overrides in `env`.

    `prefix` wraps the command, e.g. ("unshare", "-n") for a process with no network;
    `module` is what `python -m` runs (a test's may wrap the production one).
    """
    port = free_port()
    full_env = {
        **os.environ,
        "PORT": str(port),
        "BUNDLES_DIR": str(bundles_dir),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with log_path.open("w") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", module],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return BackendProcess(process, f"http://127.0.0.1:{port}", log_path)

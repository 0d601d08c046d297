"""Run the frontend as the container does (`python -m frontend`) on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.backend_process import ROOT, free_port, stop_process


@dataclass
class FrontendProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60) -> None:
        """Returns once Streamlit's health endpoint answers; raises with the log if never."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"frontend exited {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/_stcore/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"frontend not healthy after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.process)


def start_frontend(log_path: Path, **env: str) -> FrontendProcess:
    """`python -m frontend` with PORT set and only the given configuration variables."""
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    full_env = {**keep, "PORT": str(port), "PYTHONUNBUFFERED": "1", **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "frontend"],
        cwd=ROOT,
        env=full_env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    return FrontendProcess(process, f"http://127.0.0.1:{port}", log_path)

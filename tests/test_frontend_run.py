"""scripts/run, the local run command: its options, its dry run, and a real offline start."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.backend_process import ROOT, free_port, port_served

RUN = ROOT / "scripts" / "run"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RUN), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_shellcheck_is_clean():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shellcheck"), str(RUN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_help_describes_the_options():
    result = run("--help")
    assert result.returncode == 0
    for option in ("--version v1|v2|v3", "--backend-port", "--frontend-port", "--dry-run"):
        assert option in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["--version", "v4"], ["--backend-port", "http"], ["--frontend-port", "0"]],
)
def test_wrong_options_exit_2_with_a_message(args):
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("error:")
    assert result.stdout == ""  # nothing was run


def test_dry_run_prints_every_command_and_runs_none(tmp_path):
    weights, bundles = tmp_path / "weights", tmp_path / "bundles"
    result = run(
        "--dry-run",
        "--backend-port",
        "9001",
        "--frontend-port",
        "9002",
        "--weights-dir",
        str(weights),
        "--bundles-dir",
        str(bundles),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        "uv sync --locked --inexact --no-default-groups --group backend --group bake "
        "--group frontend"
    ) in [line.strip() for line in lines]
    assert any(f"-m weights fetch --models resnet152 --dest {weights}" in line for line in lines)
    assert any(f"-m weights demo --models resnet152 --dest {weights}" in line for line in lines)
    assert any(
        f"-m bake --models resnet152 --weights {weights} --dest {bundles}" in line for line in lines
    )
    (backend,) = [line for line in lines if "-m backend" in line]
    assert f"BUNDLES_DIR={bundles}" in backend and "PORT=9001" in backend
    assert "MODELS=resnet152" in backend
    (frontend,) = [line for line in lines if "-m frontend" in line]
    assert "SERVING_URL=http://127.0.0.1:9001" in frontend and "PORT=9002" in frontend
    assert "MODEL_PICKER=off" in frontend
    assert not weights.exists() and not bundles.exists()


def test_dry_run_of_v2_serves_the_v2_set_with_a_picker():
    lines = run("--dry-run", "--version", "v2").stdout.splitlines()
    assert any("MODELS=v2" in line and "-m backend" in line for line in lines)
    assert any("MODEL_PICKER=on" in line and "-m frontend" in line for line in lines)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class Output:
    """Collects a process's output lines on a thread, so the test can wait for one."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.ended = False  # the process closed its output: no line will come
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        with process.stdout:
            for line in process.stdout:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        """Until a line holds `text`; fails at once, with the output, if the process ended."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.ended or any(text in li for li in self.lines), timeout
            )
            if not any(text in li for li in self.lines):
                ended = "the process ended" if self.ended else f"{timeout}s passed"
                raise AssertionError(f"no {text!r} ({ended}):\n{self.text()}")

    def text(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def _stopped_by_ctrl_c(process: subprocess.Popen, ports, *, timeout: float):
    """After the block: Ctrl-C ends the run command with 130, leaving nothing on its ports.

    If the block fails, the process is killed instead, and the block's failure is the one told.
    """
    try:
        yield
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for port in ports:
        assert not port_served(port), f"port {port} still served"


def _start_run(tmp_path, *args: str, env: dict[str, str]) -> tuple[subprocess.Popen, Output]:
    process = subprocess.Popen(
        [str(RUN), *args, "--weights-dir", str(tmp_path / "weights"),
         "--bundles-dir", str(tmp_path / "bundles")],
        cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return process, Output(process)


@pytest.mark.slow
def test_offline_it_starts_both_with_labelled_demo_weights_and_ctrl_c_stops_both(tmp_path):
    backend_port, frontend_port = free_port(), free_port()
    ports = ("--backend-port", str(backend_port), "--frontend-port", str(frontend_port))
    # A mirror nobody answers: the download fails here as it would with no network.
    env = {"MODELS": "resnet18", "WEIGHTS_MIRROR": closed_port_url()}
    for attempt in ("first", "second", "after a change"):
        if attempt == "after a change":  # a weights file changed: the steps run again
            next((tmp_path / "weights").rglob("*.pth")).touch()
        process, output = _start_run(tmp_path, *ports, env=env)
        with _stopped_by_ctrl_c(process, (backend_port, frontend_port), timeout=30):
            output.wait_for("Baked Vision is running", timeout=240)
            ready = [line for line in output.lines if "is ready after" in line]
            print(f"{attempt} start:", *ready)
            page_url = f"http://127.0.0.1:{frontend_port}"
            assert f"open {page_url}" in output.text()
            assert "UNTRAINED demo weights" in output.text()
            assert "the page answers after" in output.text()
            if attempt == "first":
                assert "could not be downloaded" in output.text()
                assert "exporting resnet18" in output.text() and "verified against" in output.text()
            elif attempt == "second":  # nothing changed: no install, no download, no bake
                assert "unchanged since the last run" in output.text()
                assert "compiling" not in output.text() and "installing" not in output.text()
            else:  # the bundle is checked against the weights again, and kept
                assert "unchanged since the last run" not in output.text()
                assert "resnet18 (1/1): bundle present, verified" in output.text()
            backend = f"http://127.0.0.1:{backend_port}"
            assert requests.get(f"{backend}/models/resnet18", timeout=5).json()["untrained"] is True
            assert requests.get(f"{page_url}/_stcore/health", timeout=5).status_code == 200


def test_dry_run_of_v3_starts_the_local_gateway_stack():
    lines = run("--dry-run", "--version", "v3").stdout.splitlines()
    assert any("deployment/local_v3.py" in line and "--models v2" in line for line in lines)


@pytest.mark.slow
def test_v3_offline_runs_one_backend_per_model_behind_the_gateway(tmp_path):
    gateway_port, frontend_port = free_port(), free_port()
    process, output = _start_run(
        tmp_path, "--version", "v3", "--offline", "--backend-port", str(gateway_port),
        "--frontend-port", str(frontend_port), env={"MODELS": "small"},
    )  # fmt: skip
    with _stopped_by_ctrl_c(process, (gateway_port, frontend_port), timeout=60):
        output.wait_for("Ctrl-C stops everything", timeout=240)  # < pytest-timeout: shows output
        gateway = f"http://127.0.0.1:{gateway_port}"
        assert requests.get(f"{gateway}/models", timeout=5).json() == [
            "resnet18",
            "mobilenet_v3_large",
        ]
        answer = requests.post(
            f"{gateway}/model/mobilenet_v3_large/predict",
            files={"image": ("x.png", _png(), "image/png")},
            timeout=60,
        ).json()
        assert answer["model"] == "mobilenet_v3_large" and answer["untrained"] is True
        page = f"http://127.0.0.1:{frontend_port}"
        assert requests.get(f"{page}/_stcore/health", timeout=5).status_code == 200


def _png() -> bytes:
    from tests.upstream import PNG_BYTES

    return PNG_BYTES

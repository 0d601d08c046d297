"""Run v3 on this machine: one backend process per model behind nginx, plus the frontend.

The same routing table as the Google API Gateway spec (deployment/gateway.py), rendered for
nginx; each backend is `python -m backend`, as in production, and `MODELS=<one id>`.

    uv run python deployment/local_v3.py --bundles-dir .local/bundles --models small
        [--port 8080] [--frontend-port 8501] [--allow-untrained]

It prints the gateway's (and the page's) URL, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deployment"))

from gateway import nginx_config  # noqa: E402

from runtime.bundle import read_index  # noqa: E402


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies, however it dies.

    Ctrl-C and SIGTERM reach the launcher, which stops every process itself; this covers
    a SIGKILL (a test's timeout, the OOM killer), which would otherwise leave orphans
    holding the ports.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def free_port(reserved: Collection[int] = ()) -> int:
    """A port free now, and none of `reserved`: ports this stack was told to use, which stay
    free until their own process binds them, so the kernel may hand them out again."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in reserved:
            return port


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if not found:
        raise SystemExit("nginx is not installed: run `bash scripts/install-system-packages.sh`")
    return found


def wait_http(url: str, timeout: float, process: subprocess.Popen, log: Path) -> None:
    """Wait until `url` answers 200, or fail with the process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited {process.returncode}:\n{log.read_text()}")
        with (
            contextlib.suppress(URLError, OSError),
            urlopen(url, timeout=2) as response,  # noqa: S310  (our own 127.0.0.1 URL)
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s:\n{log.read_text()}")


@dataclass
class LocalV3:
    """The running stack: backends by model id, the gateway URL, the processes."""

    gateway_url: str
    backends: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    frontend_url: str | None = None


@contextlib.contextmanager
def run_local_v3(
    *,
    bundles_dir: Path,
    models: str,
    work_dir: Path,
    port: int | None = None,
    frontend_port: int | None = None,
    allow_untrained: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LocalV3]:
    """Start the backends, nginx (and the frontend if a port is given); stop them on exit."""
    index = read_index(bundles_dir)
    ids = index.select(models)
    default = index.default if index.default in ids else ids[0]
    work_dir.mkdir(parents=True, exist_ok=True)
    base_env = {
        **os.environ,
        "BUNDLES_DIR": str(bundles_dir),
        "LISTED_MODELS": ",".join(ids),
        "PYTHONUNBUFFERED": "1",
        # Each process gets a share of the cores rather than all of them each.
        "INFERENCE_THREADS": str(max(1, len(os.sched_getaffinity(0)) // len(ids))),
        **({"ALLOW_UNTRAINED_WEIGHTS": "1"} if allow_untrained else {}),
        **(extra_env or {}),
    }
    processes: list[subprocess.Popen] = []
    reserved = {p for p in (port, frontend_port) if p}  # bound later, by nginx and the page
    try:
        backends: dict[str, str] = {}
        waits = []
        for model_id in ids:
            backend_port = free_port(reserved)
            reserved.add(backend_port)
            log = work_dir / f"backend-{model_id}.log"
            process = subprocess.Popen(
                [sys.executable, "-m", "backend"],
                cwd=ROOT,
                env={**base_env, "MODELS": model_id, "PORT": str(backend_port)},
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            processes.append(process)
            backends[model_id] = f"http://127.0.0.1:{backend_port}"
            waits.append((f"{backends[model_id]}/ready", process, log))
        for url, process, log in waits:
            wait_http(url, 300, process, log)

        gateway_port = port or free_port(reserved)
        prefix = work_dir / "nginx"
        prefix.mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(backends, default, listen=gateway_port, prefix=str(prefix)))
        log = work_dir / "nginx.log"
        nginx = subprocess.Popen(
            [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        processes.append(nginx)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{gateway_url}/models", 30, nginx, log)
        stack = LocalV3(gateway_url, backends, processes)

        if frontend_port:
            log = work_dir / "frontend.log"
            frontend = subprocess.Popen(
                [sys.executable, "-m", "frontend"],
                cwd=ROOT,
                env={
                    **os.environ,
                    "SERVING_URL": gateway_url,
                    "PORT": str(frontend_port),
                },
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            processes.append(frontend)
            stack.frontend_url = f"http://127.0.0.1:{frontend_port}"
            wait_http(f"{stack.frontend_url}/_stcore/health", 60, frontend, log)
        yield stack
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bundles-dir", type=Path, required=True, help="from python -m bake")
    parser.add_argument("--models", default="small", help="a set or comma-separated ids")
    parser.add_argument("--port", type=int, default=8080, help="the gateway's port")
    parser.add_argument("--frontend-port", type=int, default=8501, help="0: no frontend")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".local" / "v3")
    parser.add_argument("--allow-untrained", action="store_true", help="serve demo weights")
    args = parser.parse_args(argv)
    # SIGTERM ends the process the way Ctrl-C does: through the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _serve(args)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130


def _serve(args: argparse.Namespace) -> int:
    with run_local_v3(
        bundles_dir=args.bundles_dir.resolve(),
        models=args.models,
        work_dir=args.work_dir.resolve(),
        port=args.port,
        frontend_port=args.frontend_port or None,
        allow_untrained=args.allow_untrained,
    ) as stack:
        print(f"gateway:  {stack.gateway_url}  (POST /model/<id>/predict, GET /models)")
        for model_id, url in stack.backends.items():
            print(f"  {model_id:<20} {url}")
        if stack.frontend_url:
            print(f"page:     {stack.frontend_url}")
        print(f"logs in {args.work_dir}; Ctrl-C stops everything", flush=True)
        while all(p.poll() is None for p in stack.processes):
            time.sleep(1)
    print("a process of the stack stopped; stopped the rest", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

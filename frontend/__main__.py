"""`python -m frontend`: serve the page with Streamlit on 0.0.0.0:$PORT (the container's CMD).

Streamlit replaces this process (exec), so the signals Cloud Run sends reach it directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from frontend.config import ConfigError, FrontendConfig, RetiredSetting
from runtime.limits import MAX_IMAGE_MB

APP = Path(__file__).resolve().with_name("app.py")
MMAP_THRESHOLD_BYTES = 128 * 1024  # as the backend's (backend/process.py)
ROOT = APP.parents[1]  # holds the `frontend` package the page imports


def streamlit_command(port: str, address: str) -> list[str]:
    """The `streamlit run` command line for the page."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        f"--server.address={address}",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        # The code never changes under a running service; watching it costs a thread and inotify.
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        # Uploads larger than the backend accepts (MAX_IMAGE_MB) would only be refused there.
        f"--server.maxUploadSize={MAX_IMAGE_MB}",
        "--client.toolbarMode=viewer",
        # The welcome banner looks up this machine's public IP on the internet; logs need
        # no banner, and main() prints the address itself.
        "--logger.hideWelcomeMessage=true",
    ]


def main() -> None:
    port = os.environ.get("PORT", "8080").strip() or "8080"
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"error: PORT={port!r} is not a TCP port")
    address = os.environ.get("FRONTEND_ADDRESS", "0.0.0.0").strip() or "0.0.0.0"  # noqa: S104  # a container serves every interface
    try:
        FrontendConfig.from_env()
    except RetiredSetting as exc:
        # A deployment still written for the old names would serve something it did not ask
        # for: it stops here, and its logs say what to rename.
        sys.exit(f"error: {exc}")
    except ConfigError as exc:
        # Still serve: the page itself tells the visitor what is missing.
        print(f"warning: {exc}; the page will say so", file=sys.stderr)
    env = dict(os.environ)
    # glibc raises its mmap threshold to the size of each large block freed, so the buffers of
    # a 10 MB upload stay in the heap of the session's thread for good; fixed at its initial
    # 128 KiB, large blocks go back to the system when freed: measured, 16.7 -> 8.4 MiB per
    # session that classified a 10 MB upload (benchmarks/RESULTS.md, memory under load).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD_BYTES))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    command = streamlit_command(port, address)
    print(f"serving the page on http://{address}:{port}", file=sys.stderr, flush=True)
    os.execve(sys.executable, command, env)  # noqa: S606  # fixed argv, no shell


if __name__ == "__main__":
    main()

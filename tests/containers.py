"""Build and run the project's images with podman on a machine with no Docker and no registry.

Used by the container tests (marker `container`). Everything here is idempotent and cached
on the machine: the tools are installed once (apt-get), the local Python base image is made
once (debootstrap), and podman keeps built layers, so only the first run is slow.
Why each step is needed: podman's default runtime (crun) and its open-file limits do not work
on this kind of host (docker/containers.conf), no registry serves python:3.11-slim here (a
debootstrap image stands in), and downloads pass a TLS-intercepting proxy (its CA is handed
to pip for the build only).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = ROOT / "docker" / "containers.conf"
# A stand-in for python:3.11-slim, which no registry here serves.
PYTHON_IMAGE = "localhost/python-local:3.11"
# The host's CA bundle: downloads here pass a TLS-intercepting proxy that it trusts. Base
# Dockerfiles take it as PIP_CERT, bind-mounted at this path for the build only.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_CA = "/run/hostca.crt"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
TOOLS = ("podman", "buildah", "runc", "debootstrap")
APT_PACKAGES = (
    "buildah",
    "podman",
    "runc",
    "fuse-overlayfs",
    "uidmap",
    "slirp4netns",
    "containernetworking-plugins",
    "debootstrap",
)
# Debian's python3 is 3.11 in bookworm, as in python:3.11-slim; passwd gives useradd.
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "passwd")
LOCK_FILE = Path(tempfile.gettempdir()) / "baked-vision-containers.lock"


class ContainerToolsUnavailable(RuntimeError):
    """podman and friends are missing and cannot be installed here (not root)."""


def environment() -> dict[str, str]:
    """Give the environment for podman: the project's containers.conf."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


@contextmanager
def machine_lock() -> Iterator[None]:
    """Serialize installs and base builds between processes (parallel test runs)."""
    with LOCK_FILE.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_tools() -> None:
    """Install podman, buildah, runc and debootstrap with apt-get, unless already there."""
    if all(shutil.which(tool) for tool in TOOLS):
        return
    if os.geteuid() != 0:
        missing = [tool for tool in TOOLS if not shutil.which(tool)]
        raise ContainerToolsUnavailable(f"not root, cannot apt-get install {', '.join(missing)}")
    with machine_lock():
        if all(shutil.which(tool) for tool in TOOLS):
            return
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=apt_env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=apt_env)


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run podman with the project's containers.conf; give the finished process."""
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def image_exists(reference: str) -> bool:
    return podman("image", "exists", reference, check=False).returncode == 0


def debian_mirror() -> str:
    """Give the Debian mirror this machine's apt uses (read, never hard-coded)."""
    for line in DEBIAN_SOURCES.read_text().splitlines():
        if line.startswith("URIs:"):
            return line.split()[1]
    raise RuntimeError(f"no URIs: line in {DEBIAN_SOURCES}")


def ensure_python_base() -> str:
    """Make the local Python base image (debootstrap bookworm, ~45 s) unless it exists."""
    ensure_tools()
    if image_exists(PYTHON_IMAGE):
        return PYTHON_IMAGE
    with machine_lock():
        if image_exists(PYTHON_IMAGE):
            return PYTHON_IMAGE
        with tempfile.TemporaryDirectory(prefix="python-rootfs-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(DEBOOTSTRAP_PACKAGES)}",
                    "bookworm",
                    str(rootfs),
                    debian_mirror(),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=1200,
            )
            subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=True)
            shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", PYTHON_IMAGE],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                env=environment(),
            )
            tar.stdout.close()
            tar.wait()
            if imported.returncode != 0 or tar.returncode != 0:
                raise RuntimeError(f"podman import failed: {imported.stderr}")
    return PYTHON_IMAGE


def build(
    dockerfile: str,
    tag: str,
    *,
    context: Path = ROOT,
    build_args: Mapping[str, str] | None = None,
    timeout: float = 3600,
) -> tuple[subprocess.CompletedProcess, float]:
    """Build an image from a project Dockerfile; give the result and its seconds.

    Layers are cached (--layers); a Dockerfile that takes PIP_CERT gets the host's CA
    bind-mounted (never stored in a layer); the build shares the host's network, so a server
    on 127.0.0.1 (the weights origin) is reachable.
    """
    args = [
        "build",
        "--isolation",
        "chroot",
        "--layers",
        "--network",
        "host",
        "--file",
        str(context / dockerfile),
        "--tag",
        tag,
    ]
    build_args = dict(build_args or {})
    if "ARG PIP_CERT" in (context / dockerfile).read_text():
        args += ["--volume", f"{HOST_CA}:{BUILD_CA}:ro"]
        build_args.setdefault("PIP_CERT", BUILD_CA)
    for name, value in build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    result = podman(*args, str(context), timeout=timeout)
    return result, time.monotonic() - started


def build_bake_and_base(
    context: Path, bake_tag: str, base_tag: str, build_args: Mapping[str, str]
) -> tuple[float, float]:
    """The backend's bake image, then its base image with the bake's bundles: the two builds
    of deployment/steps/base.sh. Give the seconds of each."""
    _, bake_seconds = build(
        "docker/backend-bake.Dockerfile", bake_tag, context=context, build_args=build_args
    )
    _, base_seconds = build(
        "docker/backend-base.Dockerfile", base_tag, context=context,
        build_args={**build_args, "BAKE_IMAGE": bake_tag},
    )  # fmt: skip
    return bake_seconds, base_seconds


def layers(reference: str) -> list[str]:
    """Give the digests of an image's layers, bottom first."""
    out = podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", reference).stdout
    return [layer for layer in out.strip().strip("[]").replace('"', "").split(",") if layer]


def image_id(reference: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()


def image_size_mb(reference: str) -> float:
    size = podman("image", "inspect", "--format", "{{.Size}}", reference).stdout.strip()
    return int(size) / 1e6


def run_in(reference: str, command: Sequence[str], *, network: str = "none") -> str:
    """Run a one-off command in a fresh container of an image; give its stdout."""
    return podman("run", "--rm", "--network", network, reference, *command).stdout


def copy_context(destination: Path, parts: Sequence[str]) -> Path:
    """Copy parts of the repository (and .dockerignore) into a fresh build context."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for part in parts:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, destination / part, ignore=ignore)
        else:
            (destination / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / part)
    shutil.copy2(ROOT / ".dockerignore", destination / ".dockerignore")
    return destination

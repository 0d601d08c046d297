"""A real Docker Engine and a real registry on this machine, for running the Cloud Build files.

Cloud Build's `gcr.io/cloud-builders/docker` is Docker 20.10.24, the version Debian ships as
docker.io, so the steps run here against the same engine (a private dockerd on a socket in a
temp dir) and Debian's docker-registry on 127.0.0.1 standing in for Artifact Registry. No
registry serves images here, so the images the files name are local stand-ins: busybox, a
builder with bash and Debian's docker client under the builder's own name, and the tests'
Python image (tests/containers.py) with the host's CA bundle, which pip needs behind this
machine's TLS-intercepting proxy (the files pass it as _PIP_CERT).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests import containers

DOCKER = "/usr/bin/docker"  # Debian's 20.10 client, Cloud Build's; /usr/local/bin may be newer
BUILDER = "gcr.io/cloud-builders/docker"
TOOLS = ("dockerd", "docker-registry", "busybox")  # scripts/install-system-packages.sh
PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The one difference from Cloud Build: there, base.sh's `docker build --network=cloudbuild` runs
# on the network with Google's metadata server (credentials for gs:// weights); here a build
# must reach the weights origin and the registry on 127.0.0.1, and this dockerd has no bridge
# network (--bridge=none), so the stand-in builder's docker builds on the host's network.
DOCKER_WRAPPER = """#!/bin/bash
if [[ "${1:-}" != build ]]; then exec /usr/bin/docker.real "$@"; fi
args=()
for arg in "${@:2}"; do [[ "${arg}" == --network=cloudbuild ]] || args+=("${arg}"); done
exec /usr/bin/docker.real build --network host "${args[@]}"
"""


def ensure_tools() -> None:
    """Fail clearly unless Debian's docker.io, docker-registry and busybox-static are there."""
    if missing := [tool for tool in TOOLS if not shutil.which(tool)]:
        raise containers.ContainerToolsUnavailable(f"{', '.join(missing)} missing")


class Docker:
    """A private dockerd (overlay2, no bridge) with its state in a temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def start(self) -> Docker:
        log = (self.root / "dockerd.log").open("w")
        command = ["dockerd", "--iptables=false", "--ip-forward=false", "--bridge=none",
                   f"--data-root={self.root / 'data'}", f"--exec-root={self.root / 'exec'}",
                   f"--host=unix://{self.socket}",
                   f"--pidfile={self.root / 'docker.pid'}"]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if self.run("version", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"dockerd did not start: {(self.root / 'dockerd.log').read_text()}")

    def stop(self) -> None:
        self.process.terminate()  # dockerd stops its containerd too
        self.process.wait(timeout=30)
        netns = self.root / "exec" / "netns" / "default"
        if netns.exists():  # dockerd leaves this mount behind
            subprocess.run(["umount", str(netns)], check=False)

    def run(self, *args: str, check: bool = True, timeout: float = 1800, **kwargs):
        """Run Debian's docker client against this daemon; give the finished process."""
        result = subprocess.run(
            [DOCKER, *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stdout[-3000:]}{result.stderr}")
        return result

    def import_tree(self, tree: Path, name: str, *changes: str) -> None:
        tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
        options = [arg for change in (PATH_ENV, *changes) for arg in ("--change", change)]
        self.run("import", *options, "-", name, stdin=tar.stdout)
        tar.wait()

    def forget_everything(self) -> None:
        """Remove every image but the stand-ins, and the build cache: a fresh Cloud Build
        worker's daemon (which has the builders; the Python image it would pull)."""
        keep = {"busybox:latest", f"{BUILDER}:latest", containers.PYTHON_IMAGE}
        listed = ["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]
        names = {ref if not ref.endswith(":<none>") else image_id  # untagged: by id
                 for ref, image_id in map(str.split, self.run(*listed).stdout.splitlines())
                 if ref not in keep}  # fmt: skip
        if names:  # their untagged parents (the classic builder's cache) go with them
            self.run("rmi", "--force", *sorted(names), check=False)  # checked below
        self.run("builder", "prune", "--all", "--force")
        left = {line.split()[0] for line in self.run(*listed).stdout.splitlines()} - keep
        if left:
            raise RuntimeError(f"images left after removing them all: {left}")


def copy_with_libraries(tree: Path, binary: str, destination: str) -> None:
    """Copy a dynamically linked binary and the libraries it needs into a root tree."""
    (tree / destination.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, tree / destination.lstrip("/"))
    for lib in subprocess.run(["ldd", binary], capture_output=True, text=True).stdout.split():
        if lib.startswith("/"):
            (tree / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, tree / lib.lstrip("/"))


def import_stand_ins(docker: Docker, scratch: Path) -> None:
    """busybox, the docker builder (busybox + bash + docker 20.10) and the Python image."""
    tree = scratch / "builder"
    for folder in ("bin", "usr/bin", "tmp", "workspace"):
        (tree / folder).mkdir(parents=True)
    shutil.copy2(shutil.which("busybox"), tree / "bin/busybox")
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True).stdout
    for applet in applets.split():
        if not (tree / "bin" / applet).exists():
            (tree / "bin" / applet).symlink_to("busybox")  # relative: valid inside the image
    docker.import_tree(tree, "busybox:latest", 'CMD ["/bin/sh"]')
    copy_with_libraries(tree, "/bin/bash", "/usr/bin/bash")
    (tree / "bin/bash").unlink(missing_ok=True)
    (tree / "bin/bash").symlink_to("/usr/bin/bash")
    copy_with_libraries(tree, DOCKER, "/usr/bin/docker.real")
    (tree / "usr/bin/docker").write_text(DOCKER_WRAPPER)
    (tree / "usr/bin/docker").chmod(0o755)
    docker.import_tree(tree, BUILDER, 'ENTRYPOINT ["/usr/bin/docker"]')
    # The Python stand-in, its CA bundle the host's (the proxy's CA): _PIP_CERT names it.
    save = subprocess.Popen(["podman", "save", containers.PYTHON_IMAGE], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=containers.environment())  # fmt: skip
    docker.run("load", stdin=save.stdout)
    save.wait()
    context = scratch / "python"
    context.mkdir()
    shutil.copy2(containers.HOST_CA, context / "ca.crt")
    (context / "Dockerfile").write_text(
        f"FROM {containers.PYTHON_IMAGE}\nCOPY ca.crt {containers.HOST_CA}\n"
    )
    docker.run("build", "--quiet", "--tag", containers.PYTHON_IMAGE, str(context))


class Registry:
    """Debian's docker-registry on 127.0.0.1; `extra` adds to its config (e.g. token auth)."""

    def __init__(self, root: Path, port: int, extra: str = "") -> None:
        self.root, self.port = root, port
        self.host = f"127.0.0.1:{port}"
        self.storage = root / "storage"
        config = root / "registry.yml"
        config.write_text(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            f"  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n{extra}"
        )
        log = (root / "registry.log").open("w")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"registry did not start: {(root / 'registry.log').read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)

    def layers(self, repository: str, tag: str) -> list[str]:
        """The digests of an image's layers as the registry stores them (compressed blobs)."""
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return [layer["digest"] for layer in json.load(response)["layers"]]

    def stored_bytes(self) -> int:
        """What the registry holds, in bytes: grows by exactly what a push uploaded."""
        du = subprocess.run(["du", "-sb", self.storage], capture_output=True, text=True)
        return int(du.stdout.split()[0]) if du.returncode == 0 else 0  # none before a push

"""Cold start as containers: `podman run` to the first successful prediction.

Images are built from the project's Dockerfiles with the same local stand-ins as the
container tests (tests/containers.py): a debootstrap Python image, torch from pip's default
index, and generated weights of the real architectures served from 127.0.0.1 through a
catalog that points there. The three variants all run the same base image:

(a) baked     the backend code image as Cloud Run runs it (weights in the image)
(b) download  the assignment's behaviour: the base image's Python running
              benchmarks/assignment_app.py, downloading the weights at start from 127.0.0.1
(c) floor     benchmarks/floor.py inside the image: import, read, build, one forward
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    FileServer,
    architecture,
    free_port,
    median,
    poll_prediction,
    test_image,
)
from tests import containers
from weights.demo import write_untrained

BENCH_CATALOG = "weights/bench-catalog.toml"


def _origin(ids: list[str], work: Path) -> tuple[FileServer, dict[str, str]]:
    """Generated files named like torchvision's, served from 127.0.0.1; id -> URL."""
    files = work / "origin"
    urls = {}
    server = FileServer(files)
    for model_id in ids:
        path, _ = write_untrained(architecture(model_id), files)
        urls[model_id] = f"{server.url}/{path.name}"
    return server, urls


def _catalog(urls: dict[str, str]) -> str:
    from weights.catalog import load_catalog

    catalog = load_catalog()
    lines = [f'default = "{next(iter(urls))}"']
    for model_id, url in urls.items():
        entry = catalog.entry(model_id)
        lines += [
            f"[models.{model_id}]",
            f'architecture = "{entry.architecture}"',
            f'weights = "{entry.weights}"',
            f'url = "{url}"',
        ]
    return "\n".join(lines) + "\n"


def _images(name: str, ids: list[str], urls: dict[str, str], work: Path) -> tuple[str, dict]:
    context = containers.copy_context(work / f"context-{name}", ["docker", "weights", "backend"])
    (context / BENCH_CATALOG).write_text(_catalog(urls))
    base, code = f"localhost/baked-vision-bench-base:{name}", f"localhost/baked-vision-bench:{name}"
    _, base_s = containers.build(
        "docker/backend-base.Dockerfile",
        base,
        context=context,
        build_args={
            "PYTHON_IMAGE": containers.ensure_python_base(),
            "TORCH_INDEX_URL": "",
            "MODELS": ",".join(ids),
            "WEIGHTS_CATALOG": f"/app/{BENCH_CATALOG}",
        },
    )
    _, code_s = containers.build(
        "docker/backend.Dockerfile", code, context=context, build_args={"BASE_IMAGE_URI": base}
    )
    return code, {
        "base_build_s": base_s,
        "code_build_s": code_s,
        "image_mb": containers.image_size_mb(code),
    }


def _first_200(url: str, model: str, started: float) -> float:
    return poll_prediction(url, test_image(), model) - started


def _run_baked(image: str, ids: list[str]) -> float:
    port = free_port()
    started = time.time()
    name = f"bench-baked-{port}"
    containers.podman(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        "-e", "ALLOW_UNTRAINED_WEIGHTS=1", image,
    )  # fmt: skip
    try:
        return _first_200(f"http://127.0.0.1:{port}", ids[0], started)
    finally:
        containers.podman("rm", "--force", name, check=False)


def _run_download(image: str, ids: list[str], urls: dict[str, str]) -> float:
    port = free_port()
    spec = ",".join(f"{architecture(i)}={urls[i]}" for i in ids)
    started = time.time()
    name = f"bench-download-{port}"
    # The host's network: the container reaches the file server on 127.0.0.1.
    containers.podman(
        "run", "-d", "--name", name, "--network", "host",
        "-v", f"{ROOT / 'benchmarks'}:/app/benchmarks:ro", "-e", f"BENCH_MODELS={spec}",
        "-e", f"PORT={port}", image,
        "gunicorn", "--config", "python:backend.gunicorn_conf", "benchmarks.assignment_app:app",
    )  # fmt: skip
    try:
        return _first_200(f"http://127.0.0.1:{port}", architecture(ids[0]), started)
    finally:
        containers.podman("rm", "--force", name, check=False)


def _run_floor(image: str, ids: list[str]) -> float:
    listing = containers.run_in(
        image, ["python", "-c", "import json;print(open('/opt/weights/weights.lock').read())"]
    )
    import json

    lock = json.loads(listing)["models"]
    args = [f"{architecture(i)}=/opt/weights/{lock[i]['file']}" for i in ids]
    started = time.time()
    subprocess.run(
        [shutil.which("podman") or "podman", "run", "--rm", "--network", "none",
         "-v", f"{ROOT / 'benchmarks'}:/app/benchmarks:ro", image,
         "python", "/app/benchmarks/floor.py", *args],
        check=True, capture_output=True, env=containers.environment(),
    )  # fmt: skip
    return time.time() - started


def run(sets: dict[str, list[str]], runs: int, work: Path) -> dict:
    """Median seconds from `podman run` to the first prediction, per set and variant."""
    try:
        containers.ensure_tools()
    except containers.ContainerToolsUnavailable as exc:
        return {name: {"skipped": str(exc)} for name in sets}
    result: dict = {}
    for name, ids in sets.items():
        server, urls = _origin(ids, work / name)
        try:
            image, build = _images(name, ids, urls, work)
            samples: dict[str, list[float]] = {"baked": [], "download": [], "floor": []}
            for _ in range(runs):
                samples["baked"].append(_run_baked(image, ids))
                samples["download"].append(_run_download(image, ids, urls))
                samples["floor"].append(_run_floor(image, ids))
        finally:
            server.close()
        result[name] = {
            **build,
            **{
                variant: {"total_s": median(values), "all_s": [round(v, 2) for v in values]}
                for variant, values in samples.items()
            },
        }
    return result

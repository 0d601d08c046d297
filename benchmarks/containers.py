"""Images and cold starts as containers: build times, sizes, `podman run` to the first answer.

Images are built from the project's Dockerfiles with the same local stand-ins as the
container tests (tests/containers.py): a debootstrap Python image, torch from pip's default
index, and generated weights of the real architectures served from 127.0.0.1 through a
catalog that points there. Three cold starts, each from `podman run`:

(a) baked        the backend code image as Cloud Run runs it, to its first 200 /predict
(b) ort floor    benchmarks/floor_ort.py in the same image: import, open, one forward, exit
(c) torch floor  benchmarks/floor.py in the bake image (the serving image has no
                 torch): import torch+torchvision, read, build, one forward, exit
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
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
PARTS = ["docker", "weights", "runtime", "bake", "backend"]


@dataclass(frozen=True)
class Served:
    """A generated weights file served from 127.0.0.1, and its pins."""

    url: str
    sha256: str
    size: int


def _origin(ids: list[str], work: Path) -> tuple[FileServer, dict[str, Served]]:
    """Generated files named like torchvision's, served from 127.0.0.1; id -> where, pins."""
    files = work / "origin"
    served = {}
    server = FileServer(files)
    for model_id in ids:
        path, digest = write_untrained(architecture(model_id), files)
        served[model_id] = Served(f"{server.url}/{path.name}", digest, path.stat().st_size)
    return server, served


def _catalog(served: dict[str, Served]) -> str:
    """A catalog of those files, pinned (the image builds fetch --frozen)."""
    from weights.catalog import load_catalog

    catalog = load_catalog()
    lines = [f'default = "{next(iter(served))}"']
    for model_id, file in served.items():
        entry = catalog.entry(model_id)
        lines += [
            f"[models.{model_id}]",
            f'architecture = "{entry.architecture}"',
            f'weights = "{entry.weights}"',
            f'url = "{file.url}"',
            f'sha256 = "{file.sha256}"',
            f"size = {file.size}",
        ]
    return "\n".join(lines) + "\n"


def _size_mb(image: str, path: str) -> float:
    """MB (1e6 bytes, as podman counts image sizes) under `path` in `image`."""
    return float(containers.run_in(image, ["du", "-sb", path]).split()[0]) / 1e6


def _images(name: str, ids: list[str], urls: dict[str, Served], work: Path) -> tuple[dict, dict]:
    context = containers.copy_context(work / f"context-{name}", PARTS)
    (context / BENCH_CATALOG).write_text(_catalog(urls))
    tags = {
        "bake": f"localhost/baked-vision-bench-bake:{name}",
        "base": f"localhost/baked-vision-bench-base:{name}",
        "code": f"localhost/baked-vision-bench:{name}",
    }
    args = {
        "PYTHON_IMAGE": containers.ensure_python_base(),
        "TORCH_INDEX_URL": "",
        "MODELS": ",".join(ids),
        "WEIGHTS_CATALOG": f"/build/{BENCH_CATALOG}",
    }
    bake_s, base_s = containers.build_bake_and_base(context, tags["bake"], tags["base"], args)
    _, code_s = containers.build(
        "docker/backend.Dockerfile", tags["code"], context=context,
        build_args={"BASE_IMAGE_URI": tags["base"]},
    )  # fmt: skip
    image_mb = containers.image_size_mb(tags["code"])
    bundles_mb = _size_mb(tags["code"], "/opt/bundles")
    return tags, {
        "bake_stage_build_s": bake_s,  # fetch + export + verify (torch layers cached or not)
        "runtime_stage_build_s": base_s,  # the base: serving dependencies, the bake's bundles
        "code_build_s": code_s,
        "image_mb": image_mb,
        "bundles_mb": bundles_mb,
        "image_without_models_mb": image_mb - bundles_mb,
        "bake_image_mb": containers.image_size_mb(tags["bake"]),
    }


def build_images(name: str, ids: list[str], work: Path) -> tuple[dict, dict]:
    """The bake, base and code images of `ids`, with generated weights of their real
    sizes: the tags (bake, base, code) and the build figures."""
    server, served = _origin(ids, work / name)
    try:
        return _images(name, ids, served, work)
    finally:
        server.close()


def _run_baked(image: str, ids: list[str]) -> float:
    port = free_port()
    started = time.time()
    name = f"bench-baked-{port}"
    containers.podman(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        "-e", "ALLOW_UNTRAINED_WEIGHTS=1", image,
    )  # fmt: skip
    try:
        return poll_prediction(f"http://127.0.0.1:{port}", test_image(), ids[0]) - started
    finally:
        containers.podman("rm", "--force", name, check=False)


def _timed_run(image: str, command: list[str]) -> float:
    started = time.time()
    subprocess.run(
        [shutil.which("podman") or "podman", "run", "--rm", "--network", "none",
         "-v", f"{ROOT / 'benchmarks'}:/bench:ro", image, *command],
        check=True, capture_output=True, env=containers.environment(),
    )  # fmt: skip
    return time.time() - started


def _run_ort_floor(image: str, ids: list[str]) -> float:
    graphs = [f"/opt/bundles/{i}/model.onnx" for i in ids]
    return _timed_run(image, ["python", "/bench/floor_ort.py", *graphs])


def _run_torch_floor(bake_image: str, ids: list[str]) -> float:
    lock = json.loads(containers.run_in(bake_image, ["cat", "/build/weights-files/weights.lock"]))[
        "models"
    ]
    files = [f"{architecture(i)}=/build/weights-files/{lock[i]['file']}" for i in ids]
    return _timed_run(bake_image, ["python", "/bench/floor.py", *files])


def run(sets: dict[str, list[str]], runs: int, work: Path) -> dict:
    """Build figures, and the median seconds from `podman run` to the answer, per set."""
    try:
        containers.ensure_tools()
    except containers.ContainerToolsUnavailable as exc:
        return {name: {"skipped": str(exc)} for name in sets}
    result: dict = {}
    for name, ids in sets.items():
        tags, build = build_images(name, ids, work)
        samples: dict[str, list[float]] = {"baked": [], "ort_floor": [], "torch_floor": []}
        for _ in range(runs):
            samples["baked"].append(_run_baked(tags["code"], ids))
            samples["ort_floor"].append(_run_ort_floor(tags["base"], ids))
            samples["torch_floor"].append(_run_torch_floor(tags["bake"], ids))
        result[name] = {
            **build,
            **{
                variant: {"total_s": median(values), "all_s": [round(v, 2) for v in values]}
                for variant, values in samples.items()
            },
        }
    return result

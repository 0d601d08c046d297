"""The Cloud Build files run for real (marker `cloudbuild`) by tests/cloudbuild_runner.py against
a private Docker Engine 20.10 and a registry on 127.0.0.1 (tests/dockerd.py).

The scenarios run in file order, each building on the last, as a user's builds would, with one
registry. Before each build whose claim depends on it the daemon forgets its images and build
cache (a fresh Cloud Build worker): the registry is the only cache. The new model set (built
with the v2 file) and v3 run on the dependency change's worker, which already showed the
registry alone bringing torch back (a fresh worker would pull its 5 GB again, 1-2 min here).
torch (pip's CUDA build here, ~5 GB: the CPU index is out of reach) is installed once, by the
first build. Small generated models from the tests' weights origin stand in for the catalog's
sets: what is claimed is which layers are built and pushed, not the models.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from tests import containers
from tests.backend_process import free_port
from tests.cloudbuild_runner import run_build
from tests.dockerd import Registry

pytestmark = [pytest.mark.cloudbuild, pytest.mark.slow, pytest.mark.timeout(1800)]

DEPLOYMENT = Path(__file__).resolve().parent.parent / "deployment"
PROJECT = "test-project"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = Registry(tmp_path_factory.mktemp("registry"), free_port())
    yield server
    server.stop()
    print("\nscenario times: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMES.items()))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, weights_origin) -> Path:
    """The source a build uploads: what the Dockerfiles COPY, base.sh, a local catalog."""
    parts = ["docker", "weights", "runtime", "bake", "backend", "frontend", "deployment/steps"]
    source = containers.copy_context(tmp_path_factory.mktemp("source") / "workspace", parts)
    shutil.copy2(weights_origin.catalog_path, source / "weights/test-catalog.toml")
    return source


def build(name, workspace, engine, registry, *, fresh=True, **substitutions):
    """Run one cloudbuild file the way `python3 -m deployment build` submits it; time it."""
    if fresh:
        engine.forget_everything()
    values = {"_REGISTRY": registry.host, "_PYTHON_IMAGE": containers.PYTHON_IMAGE,
              "_PIP_CERT": str(containers.HOST_CA)}  # fmt: skip
    if name.startswith("backend"):
        values.update(_TORCH_INDEX_URL="", _MODELS="resnet18",
                      _WEIGHTS_CATALOG="/build/weights/test-catalog.toml")  # fmt: skip
    before, started = registry.stored_bytes(), time.monotonic()
    config = DEPLOYMENT / f"cloudbuild_{name}.yaml"
    done = run_build(
        config, workspace, engine, project=PROJECT, substitutions=values | substitutions
    )
    done.pushed = registry.stored_bytes() - before
    label = f"{len(TIMES) + 1}. {name}"
    TIMES[label] = time.monotonic() - started
    (registry.root / f"build-{len(TIMES)}-{name}.log").write_text(done.log)  # pytest keeps it
    steps = ", ".join(f"{step} {seconds:.0f}s" for step, seconds in done.seconds.items())
    print(f"\n{label}: {TIMES[label]:.0f}s ({steps}), pushed {done.pushed / 1e6:.1f} MB")
    return done


def image(registry, name: str, tag: str) -> str:
    return f"{registry.host}/{PROJECT}/baked-vision/{name}:{tag}"


def layers(registry, name: str, tag: str = "latest") -> list[str]:
    return registry.layers(f"{PROJECT}/baked-vision/{name}", tag)


def found(log: str) -> bool:
    return bool(re.search(r"found \S+:inputs-\w+: not rebuilt", log))


def ran(log: str) -> list[str]:
    """The Dockerfile steps a build ran rather than took from its cache (the classic builder
    prints "Running in" under a step it runs)."""
    steps, step = [], ""
    for line in log.splitlines():
        if line.startswith("Step "):
            step = line
        elif line.startswith(" ---> Running in") and step:
            steps.append(step)
            step = ""
    return steps


def ran_any(log: str, *commands: str) -> list[str]:
    return [step for step in ran(log) if any(command in step for command in commands)]


# The bake image's steps that cost minutes: torch (~5 GB here), the weights, the export.
BAKE_COMMANDS = ("requirements-torch.txt", "python -m weights fetch", "python -m bake ")


def test_first_build_builds_and_pushes_the_base(docker_engine, registry, workspace):
    done = build("backend_v1", workspace, docker_engine, registry)
    assert "backend_v1_base:inputs-" in done.log and not found(done.log)
    for name, tag in [
        ("backend_v1_base", "latest"),
        ("backend_bake", "latest"),
        ("backend_v1", done.build_id),
    ]:
        assert layers(registry, name, tag)  # in the registry


def test_the_same_inputs_again_find_the_base_and_build_nothing_of_it(
    docker_engine, registry, workspace
):
    done = build("backend_v1", workspace, docker_engine, registry)
    assert found(done.log)
    base_step = done.log.split("--- step base")[1].split("--- step")[0]
    assert "Step 1/" not in base_step and "backend_bake" not in base_step  # nothing built
    assert done.pushed < 1e6


def test_a_code_only_change_pushes_at_most_1_mb(docker_engine, registry, workspace):
    app = workspace / "backend" / "app.py"
    app.write_text(app.read_text() + "\n# a code-only change\n")
    done = build("backend_v1", workspace, docker_engine, registry)
    assert found(done.log)
    assert done.pushed <= 1_000_000, f"a code-only change pushed {done.pushed} bytes"


def test_a_dependency_change_rebuilds_the_base_reusing_unchanged_layers(
    docker_engine, registry, workspace
):
    bake_before, base_before = layers(registry, "backend_bake"), layers(registry, "backend_v1_base")
    requirements = workspace / "docker" / "requirements-backend.txt"
    requirements.write_text(requirements.read_text() + "six==1.17.0 ; sys_platform == 'linux'\n")
    done = build("backend_v1", workspace, docker_engine, registry)
    base = image(registry, "backend_v1_base", "latest")
    assert not found(done.log)
    # On a fresh worker, the registry alone brings back torch, the weights and the export.
    assert not ran_any(done.log, *BAKE_COMMANDS), ran(done.log)
    # The new dependency is in the new base.
    docker_engine.run("run", "--rm", "--entrypoint=python", base, "-c", "import six")
    bake_after, base_after = layers(registry, "backend_bake"), layers(registry, "backend_v1_base")
    reused = [layer for layer in base_after if layer in base_before]
    print(
        f"bake stage: {len(bake_after)} layers, all reused; base: {len(reused)} of "
        f"{len(base_after)} layers reused"
    )
    assert bake_after == bake_before  # torch and the models: not rebuilt, not pushed again
    # The Python image (its rootfs, the CA) and WORKDIR kept; from the requirements on, rebuilt
    assert base_after[:3] == base_before[:3] and base_after[3] != base_before[3]
    assert 3 <= len(reused) < len(base_after)
    assert done.pushed < 200e6  # the serving dependencies' layer, not torch (GBs)


def test_a_new_model_set_reuses_torch_and_v2_builds_green(docker_engine, registry, workspace):
    # The Python stand-in (its rootfs, the CA), the venv, WORKDIR, the torch requirements, torch
    torch_layers = layers(registry, "backend_bake")[:6]
    done = build("backend_v2", workspace, docker_engine, registry, fresh=False,
                 _MODELS="mobilenet_v3_large")  # fmt: skip
    assert not found(done.log)
    assert layers(registry, "backend_bake")[:6] == torch_layers
    assert done.pushed < 500e6
    code = image(registry, "backend_v2", done.build_id)
    served = docker_engine.run("run", "--rm", "--entrypoint=ls", code, "/opt/bundles").stdout
    assert "mobilenet_v3_large" in served.split() and "resnet18" not in served.split()


def test_v3_builds_an_image_per_model_sharing_the_run_time_layers(
    docker_engine, registry, workspace
):
    models = ["resnet18", "mobilenet_v3_large"]
    done = build("backend_v3", workspace, docker_engine, registry, fresh=False,
                 _MODELS=",".join(models))  # fmt: skip
    # torch is installed by no model's build (the bake image's cache), and the serving
    # dependencies once (the first model's; the second's base is cached from it).
    assert not ran_any(done.log, "requirements-torch.txt"), ran(done.log)
    assert len(ran_any(done.log, "requirements-backend.txt")) <= 1, ran(done.log)
    first, second = (layers(registry, f"backend_v3_{m}", done.build_id) for m in models)
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    print(f"v3: the two images share their first {shared} of {len(first)} layers")
    # Python (2), WORKDIR, the requirements, the serving dependencies, the runtime package and its
    # compiled files: stored once; then each its own bundle
    assert shared == 7
    assert done.pushed < 500e6


def test_the_frontend_files_build_green_and_the_second_finds_its_base(
    docker_engine, registry, workspace
):
    first = build("frontend_v1", workspace, docker_engine, registry)
    assert not found(first.log)
    again = build("frontend_v2", workspace, docker_engine, registry)  # the same file
    assert found(again.log) and again.pushed < 1e6

"""Static checks of the images: linters, and what the Dockerfiles promise each other.

Nothing here builds an image: it reads the Dockerfiles, the requirement files and the ignore
lists. The images are built and run for real by the container and Cloud Build tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent  # the venv's tools: hadolint, shellcheck
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))

sys.path.insert(0, str(DOCKER))
import export_requirements  # noqa: E402


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in the venv (uv sync)"
    return str(path)


def requirement_names(name: str) -> set[str]:
    """Give the package names pinned by docker/requirements-<name>.txt."""
    return {
        line.split("==")[0]
        for line in (DOCKER / f"requirements-{name}.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }


def instructions(text: str) -> list[str]:
    """Give a Dockerfile's instructions, one string each: continuations joined, no comments."""
    joined, pending = [], ""
    for line in text.splitlines():
        # Docker drops comment lines, even inside a continuation.
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return joined


def stages(dockerfile: Path) -> list[tuple[str, list[str]]]:
    """Give a Dockerfile's stages in order: (name, instructions from its FROM on)."""
    found: list[tuple[str, list[str]]] = []
    for instruction in instructions(dockerfile.read_text()):
        start = re.match(r"FROM\s+\S+(?:\s+AS\s+(\w+))?\s*$", instruction, flags=re.IGNORECASE)
        if start:
            found.append((start.group(1) or "", []))
        if found:
            found[-1][1].append(instruction)
    return found


def test_requirement_files_match_uv_lock():
    for path, content in export_requirements.render().items():
        assert path.read_text() == content, (
            f"{path.name} is stale: run `uv run python docker/export_requirements.py`"
        )


def test_requirements_leave_torch_to_the_torch_layer_and_serve_without_it():
    def gpu(names: set[str]) -> set[str]:
        return {n for n in names if n == "triton" or n.startswith(("nvidia-", "cuda-"))}

    # The serving process: ONNX Runtime, no torch, no exporter, no download client.
    backend = requirement_names("backend")
    never_served = {"torch", "torchvision", "onnx", "onnxscript", "huggingface-hub", "safetensors"}
    assert not backend & never_served
    assert not gpu(backend)
    assert {"onnxruntime", "flask", "h11", "numpy", "pillow"} <= backend
    assert "gunicorn" not in backend  # the backend serves with its own server (backend/server.py)
    # The bake image: the exporter and its checker; torch's own dependencies come from the lock,
    # since the CPU wheels install with --no-deps from requirements-torch.txt.
    bake = requirement_names("bake")
    assert not bake & {"torch", "torchvision"}
    assert not gpu(bake)
    assert {"sympy", "networkx", "filelock", "fsspec", "jinja2"} <= bake
    assert {"onnx", "onnxscript", "onnxruntime"} <= bake
    torch = (DOCKER / "requirements-torch.txt").read_text()
    assert "torch==2.13.0" in torch
    assert "torchvision==0.28.0" in torch


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(path):
    result = subprocess.run([tool("hadolint"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# The bake image is a build step (docker/backend-bake.Dockerfile): it runs during builds only,
# and only its bundles reach an image that serves.
SERVED_DOCKERFILES = [path for path in DOCKERFILES if path.name != "backend-bake.Dockerfile"]


@pytest.mark.parametrize("path", SERVED_DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_a_numeric_non_root_user(path):
    users = re.findall(r"^USER\s+(\S+)", path.read_text(), flags=re.MULTILINE)
    assert users, f"{path.name} sets no USER"
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"{path.name}: last USER {users[-1]}"


@pytest.mark.parametrize("component", ["backend", "frontend"])
def test_code_image_is_thin_and_built_from_a_given_base(component):
    text = (DOCKER / f"{component}.Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE_URI$", text, flags=re.MULTILINE)
    assert re.search(r"^FROM \$\{BASE_IMAGE_URI\}$", text, flags=re.MULTILINE)
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE)
    # Its own code only; the page also takes the one shared definition of the size limits.
    expected = {
        "backend": ["backend/"],
        "frontend": ["frontend/", "runtime/__init__.py runtime/limits.py runtime/timing.py"],
    }
    assert copies == expected[component], "the code image copies its own code only"
    assert re.search(r"^ENV PORT=8080$", text, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE 8080$", text, flags=re.MULTILINE)
    cmd = re.findall(r"^CMD (.+)$", text, flags=re.MULTILINE)
    assert len(cmd) == 1 and cmd[0].startswith("["), "exec-form CMD, so SIGTERM reaches the app"
    expected = {
        "backend": '["python", "-m", "backend"]',
        "frontend": '["python", "-m", "frontend"]',
    }
    assert cmd[0] == expected[component]


def test_frontend_base_installs_no_torch():
    text = (DOCKER / "frontend-base.Dockerfile").read_text()
    assert "torch" not in text.lower().replace("no torch", "")
    requirements = (DOCKER / "requirements-frontend.txt").read_text()
    assert not re.search(r"^(torch|torchvision|nvidia-)", requirements, flags=re.MULTILINE)


def test_backend_base_serves_only_the_bundles_of_a_bake_image_built_before_it():
    ((_, bake),) = stages(DOCKER / "backend-bake.Dockerfile")
    found = stages(DOCKER / "backend-base.Dockerfile")
    assert [name for name, _ in found] == ["bake", "runtime"], "the bake image, then runtime"
    (_, bake_image), (_, runtime) = found
    # The bake image is built before, by its own build (deployment/steps/base.sh): here it is
    # named only, so that the base's build has one cache image, the previous base.
    assert bake_image == ["FROM ${BAKE_IMAGE} AS bake"]

    # bake: torch, then the weights, then the export of those weights into /opt/bundles.
    def first(steps: list[str], needle: str) -> int:
        return next(i for i, step in enumerate(steps) if needle in step)

    torch_install = first(bake, "-r /tmp/requirements-torch.txt")
    fetch = first(bake, "python -m weights fetch")
    export = first(bake, "python -m bake ")
    assert bake[torch_install].startswith("RUN ") and "pip install" in bake[torch_install]
    assert torch_install < fetch < export
    assert "--dest /opt/bundles" in bake[export]

    # runtime: a fresh Python image, not the bake image, and nothing of torch or the weights.
    assert re.match(r"FROM \$\{PYTHON_IMAGE\} AS runtime$", runtime[0])
    text = "\n".join(runtime)
    for never in ("torch", "requirements-bake", "weights fetch", "WEIGHTS_DIR", "HF_HUB_OFFLINE"):
        assert never not in text, never
    # Every bundle is served unless a deploy sets MODELS: the image does not choose.
    assert not re.search(r"\bMODELS\b", text)
    copies_from = [step for step in runtime if re.match(r"COPY\s+--from=", step)]
    assert copies_from == ["COPY --from=bake /opt/bundles /opt/bundles"]
    assert re.search(r"^ENV\b.*\bBUNDLES_DIR=/opt/bundles(\s|$)", text, flags=re.MULTILINE)
    # After the bundles only the user is created: the bundles are the last heavy layer.
    bundles = runtime.index(copies_from[0])
    later = [step for step in runtime[bundles + 1 :] if step.startswith(("RUN", "COPY", "ADD"))]
    assert all("useradd" in step for step in later), later


@pytest.mark.parametrize("image", ["backend-bake", "backend-base", "frontend-base"])
def test_base_builds_with_or_without_buildkit_and_an_optional_pip_ca(image):
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    assert "--mount=" not in text, "a BuildKit-only feature: the classic builder rejects it"
    assert re.search(r'^ARG PIP_CERT=""$', text, flags=re.MULTILINE)
    # Each pip step treats an empty PIP_CERT as unset: pip's own CAs in production.
    installs = [run for run in text.split("\nRUN ")[1:] if "pip install" in run]
    assert installs
    for run in installs:
        assert 'if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi' in run


def test_backend_base_declares_each_arg_just_before_its_first_use():
    """Every RUN after an ARG is cached by its value: a new model set must not rebuild torch."""
    weights_args = ("MODELS", "WEIGHTS_MIRROR", "HF_ENDPOINT", "WEIGHTS_CATALOG")
    ((_, bake),) = stages(DOCKER / "backend-bake.Dockerfile")
    found = dict(stages(DOCKER / "backend-base.Dockerfile"))

    def first(pattern: str) -> int:
        return next(i for i, step in enumerate(bake) if re.match(pattern, step))

    torch_install = first(r"RUN .*pip install .*-r /tmp/requirements-torch\.txt")
    for weights_arg in weights_args:
        assert first(rf"ARG {weights_arg}\b") > torch_install, weights_arg
    assert first(r"ARG TORCH_INDEX_URL\b") < torch_install
    # An ARG is per stage: the runtime stage declares none of these, so neither a new model
    # set nor a new torch index reinstalls the serving dependencies.
    runtime_args = {m.group(1) for s in found["runtime"] if (m := re.match(r"ARG\s+(\w+)", s))}
    assert not runtime_args & {*weights_args, "TORCH_INDEX_URL"}, runtime_args


def test_dockerignore_sends_only_what_the_dockerfiles_copy():
    patterns = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allowlist: exclude everything, then include"
    included = [p[1:] for p in patterns if p.startswith("!")]
    sources = set()
    for dockerfile in DOCKERFILES:
        for instruction in instructions(dockerfile.read_text()):
            words = instruction.split()
            if words[0].upper() not in {"COPY", "ADD"}:
                continue
            assert not words[1].startswith("["), f"{dockerfile.name}: parse the JSON form too"
            flags = [w for w in words[1:] if w.startswith("--")]
            if any(flag.startswith("--from=") for flag in flags):
                continue  # from a stage or an image, not from the build context
            # COPY [--flag...] SOURCE... DEST: every word but the flags and the last is a source.
            sources |= set(words[1 + len(flags) : -1])
    # The parser sees each source of a COPY with several.
    assert {"runtime/__init__.py", "runtime/selection.py", "backend/"} <= sources
    for source in sources:
        assert any(
            source == inc or source.startswith(inc) or Path(source).match(inc) for inc in included
        ), f"COPY {source} is not in .dockerignore's allowlist"
    for never in ("tests", ".venv", ".git", "benchmarks"):
        assert not any(inc.startswith(never) for inc in included)


def test_gcloudignore_uploads_what_the_build_reads():
    lines = (ROOT / ".gcloudignore").read_text().splitlines()
    assert "/*" in lines, "an allowlist: exclude everything, then include"
    for needed in ("backend", "frontend", "weights", "runtime", "bake", "docker", "deployment"):
        assert f"!/{needed}/" in lines
    assert "__pycache__/" in lines


def _fetch_step() -> str:
    """The bake image's RUN that fetches the weights, as the shell runs it."""
    text = (DOCKER / "backend-bake.Dockerfile").read_text().replace("\\\n", " ")
    (run,) = [line for line in text.splitlines() if "weights fetch" in line]
    return run.removeprefix("RUN ")


@pytest.mark.parametrize("committed", [True, False], ids=["lock-committed", "no-lock-yet"])
def test_image_builds_fetch_frozen_once_the_lock_is_committed(tmp_path, committed):
    (tmp_path / "catalog.toml").write_text("")
    if committed:
        (tmp_path / "catalog.lock").write_text("{}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\necho "python $*" >> "$CALLS"\n')
    (bin_dir / "python").chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", _fetch_step()],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "CALLS": str(tmp_path / "calls"),
            "MODELS": "v1",
            "WEIGHTS_MIRROR": "",
            "HF_ENDPOINT": "",
            "WEIGHTS_CATALOG": str(tmp_path / "catalog.toml"),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    fetch, verify = (tmp_path / "calls").read_text().splitlines()
    assert fetch.startswith("python -m weights fetch") and "--models v1" in fetch
    assert verify.startswith("python -m weights verify")
    if committed:
        assert "--frozen" in fetch.split() and done.stderr == ""
    else:
        assert "--frozen" not in fetch.split()
        assert "no " + str(tmp_path / "catalog.lock") + " committed" in done.stderr
        assert "commit the pins" in done.stderr


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "deployment").rglob("*.sh")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_deployment_scripts_pass_shellcheck(path):
    result = subprocess.run([tool("shellcheck"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_builds_run_on_cloud_builds_network_where_credentials_are():
    # A gs:// weights file is read with the build account's credentials, from the metadata
    # server, which only the cloudbuild network reaches; both builds of base.sh (the stage and
    # the base) may fetch, so both pass it.
    text = (ROOT / "deployment/steps/base.sh").read_text()
    assert text.count("docker build ") == text.count('"${build_args[@]}"') == 2
    assert "build_args=(--network=cloudbuild)" in text

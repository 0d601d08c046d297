"""Static checks of the images and builds: schemas, linters, and the promises between files.

Nothing here builds an image or calls Google Cloud: it reads the Dockerfiles, the Cloud Build
files and the scripts, and checks what each promises the others (build arguments, tags,
ports, ignore lists), plus that the generated files are current.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DEPLOYMENT = ROOT / "deployment"
BIN = Path(sys.executable).parent  # the venv's tools: check-jsonschema, hadolint, shellcheck

sys.path.insert(0, str(DOCKER))
sys.path.insert(0, str(DEPLOYMENT))
import export_requirements  # noqa: E402
import render_cloudbuild  # noqa: E402

IMAGES = ["backend_v1", "backend_v2", "backend_v3", "frontend_v1", "frontend_v2"]
CLOUDBUILD_FILES = [DEPLOYMENT / f"cloudbuild_{image}.yaml" for image in IMAGES]
# v3 runs one image per model of the v2 set.
V3_MODELS = tomllib.loads((ROOT / "weights" / "catalog.toml").read_text())["sets"]["v2"]
REGISTRY = "${_REGISTRY}/${PROJECT_ID}/${_REPOSITORY}"
# REGISTRY with the substitutions' defaults, as the step scripts see it in the tests below.
REGISTRY_HOST = "northamerica-northeast1-docker.pkg.dev/test-project/baked-vision"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SHELL_SCRIPTS = sorted(
    [*DEPLOYMENT.glob("*.sh"), *DEPLOYMENT.glob("lib/*.sh"), DEPLOYMENT / "config.env"]
)
# Build arguments Docker itself understands, which no Dockerfile declares.
BUILDER_ARGS = {"BUILDKIT_INLINE_CACHE"}


@dataclass(frozen=True)
class BuiltImage:
    """One base and code image pair of a Cloud Build file, and the suffix of its step ids."""

    path: Path
    image: str  # backend_v2, or backend_v3_<model>
    model: str | None  # v3: the one model its base bakes

    @property
    def build(self) -> str:
        return self.path.stem.removeprefix("cloudbuild_")

    def step(self, name: str) -> str:
        """Give the id of one of this image's steps (step ids take no "_")."""
        return f"{name}-{self.model.replace('_', '-')}" if self.model else name

    def __str__(self) -> str:
        return self.image


def built_images(path: Path) -> list[BuiltImage]:
    """Give the images a Cloud Build file builds, in its order, read from its images list."""
    build = path.stem.removeprefix("cloudbuild_")
    names = [
        name.removeprefix(f"{REGISTRY}/").removesuffix(":${BUILD_ID}")
        for name in yaml.safe_load(path.read_text())["images"]
    ]
    # A code image is one whose base is listed too (a model's id may end in "_base" itself).
    found = []
    for image in names:
        if f"{image}_base" in names:
            model = image.removeprefix(f"{build}_") if image != build else None
            found.append(BuiltImage(path, image, model))
    return found


BUILT_IMAGES = [built for path in CLOUDBUILD_FILES for built in built_images(path)]


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in the venv (uv sync)"
    return str(path)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def steps_by_id(build: dict) -> dict[str, dict]:
    return {step["id"]: step for step in build["steps"]}


def declared_args(dockerfile: Path) -> set[str]:
    return set(re.findall(r"^ARG\s+(\w+)", dockerfile.read_text(), flags=re.MULTILINE))


def build_args_in(text: str) -> set[str]:
    """Give the names of the --build-arg flags in a step's args or script."""
    return set(re.findall(r"--build-arg[= ]\"?(\w+)", text)) - BUILDER_ARGS


def step_text(step: dict) -> str:
    return step.get("script") or " ".join(step.get("args", []))


def component_of(path: Path) -> str:
    return path.stem.removeprefix("cloudbuild_").split("_")[0]


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


def docker_builds(script: str) -> list[str]:
    """Give a step script's docker build commands in order, each on one line, single-spaced."""
    commands = [" ".join(command.split()) for command in instructions(script)]
    return [command for command in commands if command.startswith("docker build ")]


# --- generated files -------------------------------------------------------------------------


def test_cloudbuild_files_are_rendered_from_the_current_template():
    for component in render_cloudbuild.COMPONENTS:
        path = render_cloudbuild.output_path(component)
        assert path.read_text() == render_cloudbuild.render(component), (
            f"{path.name} is stale: run `uv run python deployment/render_cloudbuild.py`"
        )
    assert {render_cloudbuild.output_path(c) for c in render_cloudbuild.COMPONENTS} == set(
        CLOUDBUILD_FILES
    )


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
    assert {"onnxruntime", "flask", "gunicorn", "numpy", "pillow"} <= backend
    # The bake stage: the exporter and its checker; torch's own dependencies come from the lock,
    # since the CPU wheels install with --no-deps from requirements-torch.txt.
    bake = requirement_names("bake")
    assert not bake & {"torch", "torchvision"}
    assert not gpu(bake)
    assert {"sympy", "networkx", "filelock", "fsspec", "jinja2"} <= bake
    assert {"onnx", "onnxscript", "onnxruntime"} <= bake
    torch = (DOCKER / "requirements-torch.txt").read_text()
    assert "torch==2.13.0" in torch
    assert "torchvision==0.28.0" in torch


def test_the_template_renderer_rejects_an_unknown_placeholder():
    with pytest.raises(ValueError, match="no_such"):
        render_cloudbuild.render(render_cloudbuild.COMPONENTS[0], "x: {{no_such}}\n")
    # An image's own placeholders exist only inside the per-image block.
    with pytest.raises(ValueError, match="suffix"):
        render_cloudbuild.render(render_cloudbuild.COMPONENTS[0], "x: {{suffix}}\n")
    with pytest.raises(ValueError, match="never closed"):
        render_cloudbuild.render(render_cloudbuild.COMPONENTS[0], "{{#each_image}}\nx\n")


def test_the_template_renders_its_per_image_block_once_per_image():
    template = "{{#each_image}}\n  # said once\n  - id: x{{suffix}}  # {{image}}\n{{/each_image}}\n"
    v2, v3 = (c for c in render_cloudbuild.COMPONENTS if c.image in {"backend_v2", "backend_v3"})
    assert render_cloudbuild.render(v2, template) == "  # said once\n  - id: x  # backend_v2\n"
    lines = render_cloudbuild.render(v3, template).splitlines()
    assert lines[0] == "  # said once"
    assert lines[1:] == [f"  - id: x-{m.replace('_', '-')}  # backend_v3_{m}" for m in V3_MODELS]


# --- linters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CLOUDBUILD_FILES, ids=lambda p: p.name)
def test_cloudbuild_file_matches_the_cloud_build_schema(path):
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.cloudbuild", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(path):
    result = subprocess.run([tool("hadolint"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOYMENT)))
def test_script_passes_shellcheck(path):
    result = subprocess.run(
        [tool("shellcheck"), "--external-sources", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", CLOUDBUILD_FILES, ids=lambda p: p.name)
def test_cloudbuild_step_scripts_pass_shellcheck(path, tmp_path):
    for step in load(path)["steps"]:
        if "script" not in step:
            continue
        script = tmp_path / f"{step['id']}.sh"
        script.write_text(step["script"])
        result = subprocess.run([tool("shellcheck"), str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"step {step['id']}:\n{result.stdout}{result.stderr}"


def test_every_script_is_strict_and_has_usage():
    for path in SHELL_SCRIPTS:
        text = path.read_text()
        if path.name in {"common.sh", "cloud_run.sh", "config.env"}:  # sourced, never run
            continue
        assert text.startswith("#!/usr/bin/env bash\n"), path
        assert "set -euo pipefail" in text, path
        assert path.stat().st_mode & 0o111, f"{path} is not executable"
        if re.fullmatch(r"(submit_build|deploy)_(backend|frontend)_v\d+\.sh", path.name):
            # The per-component scripts are thin wrappers over the shared ones.
            assert re.search(r'exec "\$\(dirname .*\)/lib/(submit_build|deploy)\.sh"', text), path
            assert len(text.splitlines()) <= 6, f"{path} should stay a thin wrapper"
        else:
            assert "usage()" in text and "--help" in text, path


# --- Dockerfiles -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
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
        "frontend": ["frontend/", "runtime/__init__.py runtime/limits.py"],
    }
    assert copies == expected[component], "the code image copies its own code only"
    assert re.search(r"^ENV PORT=8080$", text, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE 8080$", text, flags=re.MULTILINE)
    cmd = re.findall(r"^CMD (.+)$", text, flags=re.MULTILINE)
    assert len(cmd) == 1 and cmd[0].startswith("["), "exec-form CMD, so SIGTERM reaches the app"
    expected = {
        "backend": '["gunicorn", "--config", "python:backend.gunicorn_conf"]',
        "frontend": '["python", "-m", "frontend"]',
    }
    assert cmd[0] == expected[component]


def test_frontend_base_installs_no_torch():
    text = (DOCKER / "frontend-base.Dockerfile").read_text()
    assert "torch" not in text.lower().replace("no torch", "")
    requirements = (DOCKER / "requirements-frontend.txt").read_text()
    assert not re.search(r"^(torch|torchvision|nvidia-)", requirements, flags=re.MULTILINE)


def test_backend_base_compiles_in_a_bake_stage_and_serves_only_bundles():
    found = stages(DOCKER / "backend-base.Dockerfile")
    assert [name for name, _ in found] == ["bake", "runtime"], "bake, then the image: runtime"
    (_, bake), (_, runtime) = found

    # bake: torch, then the weights, then the export of those weights into /opt/bundles.
    def first(steps: list[str], needle: str) -> int:
        return next(i for i, step in enumerate(steps) if needle in step)

    torch_install = first(bake, "-r /tmp/requirements-torch.txt")
    fetch = first(bake, "python -m weights fetch")
    export = first(bake, "python -m bake ")
    assert bake[torch_install].startswith("RUN ") and "pip install" in bake[torch_install]
    assert torch_install < fetch < export
    assert "--dest /opt/bundles" in bake[export]

    # runtime: a fresh Python image, not the bake stage, and nothing of torch or the weights.
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


@pytest.mark.parametrize("component", ["backend", "frontend"])
def test_base_builds_with_or_without_buildkit_and_an_optional_pip_ca(component):
    text = (DOCKER / f"{component}-base.Dockerfile").read_text()
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
    found = dict(stages(DOCKER / "backend-base.Dockerfile"))
    bake = found["bake"]

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


# --- Cloud Build files -----------------------------------------------------------------------


@pytest.mark.parametrize("built", BUILT_IMAGES, ids=str)
def test_build_args_are_exactly_the_dockerfiles_args(built):
    build = load(built.path)
    steps = steps_by_id(build)
    component = component_of(built.path)
    base_dockerfile = DOCKER / f"{component}-base.Dockerfile"
    code_dockerfile = DOCKER / f"{component}.Dockerfile"
    build_base, build_code = steps[built.step("build-base")], steps[built.step("build-code")]

    base_args = declared_args(base_dockerfile)
    assert build_args_in(step_text(build_base)) == base_args
    assert build_args_in(step_text(build_code)) == declared_args(code_dockerfile)
    assert f"--file {base_dockerfile.relative_to(ROOT)}" in build_base["script"]
    assert f"--file={code_dockerfile.relative_to(ROOT)}" in build_code["args"]
    # The base's content hash covers the same arguments, so no argument can change the base
    # without changing its tag.
    hash_script = steps[built.step("hash-base-inputs")]["script"]
    hashed = set(re.findall(r'--arg "(\w+)=', hash_script))
    assert hashed == base_args
    # Each argument has a substitution of the same name (Cloud Build's leading underscore),
    # whose default is the Dockerfile's own default (the production value), except a v3 base's
    # MODELS: its one model, written in the steps.
    substitutions = build["substitutions"]
    for name in base_args:
        value = built.model if name == "MODELS" and built.model else f"${{_{name}}}"
        assert f'"{name}={value}"' in build_base["script"], name
        assert f'--arg "{name}={value}"' in hash_script, name
        if value.startswith("${"):
            assert f"_{name}" in substitutions
        default = re.search(rf"^ARG {name}=(.*)$", base_dockerfile.read_text(), re.MULTILINE)
        if default and name != "MODELS":
            assert substitutions[f"_{name}"] == default.group(1).strip('"'), name
    if component == "backend" and built.model:
        assert "_MODELS" not in substitutions, "each v3 base has its model, not a set"
    elif component == "backend":
        assert substitutions["_MODELS"] == built.path.stem.rsplit("_", 1)[1]


@pytest.mark.parametrize("built", BUILT_IMAGES, ids=str)
def test_code_image_is_built_from_the_base_of_the_same_build(built):
    build = load(built.path)
    steps = steps_by_id(build)
    image = built.image
    base = f"{REGISTRY}/{image}_base"

    build_code = steps[built.step("build-code")]
    code_args = build_code["args"]
    assert f"--build-arg=BASE_IMAGE_URI={base}:${{BUILD_ID}}" in code_args
    assert f"--tag={REGISTRY}/{image}:${{BUILD_ID}}" in code_args
    assert build_code["waitFor"] == [built.step("build-base")]
    build_base = steps[built.step("build-base")]["script"]
    assert f'base="{base}"' in build_base
    assert 'docker tag "${base}:${tag}" "${base}:${BUILD_ID}"' in build_base
    images = build["images"]
    assert images.index(f"{base}:${{BUILD_ID}}") + 1 == images.index(
        f"{REGISTRY}/{image}:${{BUILD_ID}}"
    )
    assert built.build in build["tags"], "the deploy scripts find builds by this tag"


@pytest.mark.parametrize("built", BUILT_IMAGES, ids=str)
def test_base_is_reused_by_content_and_layers(built):
    path, image = built.path, built.image
    build = load(path)
    by_id = steps_by_id(build)
    component = component_of(path)
    state = f"state=.cloudbuild/{image}\n"
    # The base Dockerfile's stages before its last: an image holds only its final stage's
    # layers, so each of these is cached as an image of its own, <image>_<stage>:latest.
    earlier = [name for name, _ in stages(DOCKER / f"{component}-base.Dockerfile")][:-1]
    assert earlier == (["bake"] if component == "backend" else [])

    # The first step of each image pulls its previous base, and tolerates its absence on a
    # first build. The earlier stages' images are not pulled there: a build that finds its
    # base needs none.
    pull_step = by_id[built.step("pull-previous-base")]
    pull = pull_step["script"]
    assert pull_step["waitFor"] == ["-"]
    assert f'"{REGISTRY}/{image}_base:latest"' in pull
    assert pull.rstrip().endswith("|| exit 0")
    assert not any(f"_{stage}:latest" in pull for stage in earlier)
    # The base is looked up by the hash of its inputs and only built when absent; each image
    # keeps its tag and its answer in a directory of its own.
    hash_script = by_id[built.step("hash-base-inputs")]["script"]
    assert state in hash_script
    assert hash_script.rstrip().endswith('echo "base inputs tag: $(cat "${state}/base_tag")"')
    for needed in (f"docker/{component}-base.Dockerfile", f"docker/requirements-{component}.txt"):
        assert needed in hash_script
    if component == "backend":
        for needed in ("weights", "runtime", "bake"):
            assert re.search(rf"^\s*{needed} \\$", hash_script, flags=re.MULTILINE), needed
        for needed in ("docker/requirements-torch.txt", "docker/requirements-bake.txt"):
            assert needed in hash_script
    look_up = by_id[built.step("look-up-base")]
    assert look_up["waitFor"] == [built.step("hash-base-inputs")]
    assert state in look_up["script"]
    assert f'"{REGISTRY}/{image}_base:$(cat "${{state}}/base_tag")"' in look_up["script"]
    build_base = by_id[built.step("build-base")]["script"]
    assert state in build_base
    assert re.search(r'if \[\[ -f "\$\{state\}/base_found" \]\]; then\s+docker pull', build_base)
    # When it is built, each earlier stage is built first, on its own, from its previous image,
    # with the base's own build arguments, then the base from all these caches, with or without
    # BuildKit.
    builds = docker_builds(build_base)
    assert len(builds) == len(earlier) + 1
    otherwise = re.search(r"^(\s*)else\n(.*?)^\1fi$", build_base, flags=re.MULTILINE | re.DOTALL)
    assert otherwise and docker_builds(otherwise.group(2)) == builds, "built only when not found"
    # Only then is each earlier stage's previous image pulled (tolerantly: none on a first
    # build), before anything is built from it.
    when_built = otherwise.group(2)
    for stage in earlier:
        stage_pull = re.search(
            rf'^\s*docker pull "\$\{{{stage}\}}:latest" \|\| echo .*$', when_built, re.MULTILINE
        )
        assert stage_pull, f"pull {image}_{stage}:latest tolerantly before building the base"
        assert stage_pull.start() < when_built.index("docker build")
    *stage_builds, final = builds

    def build_arg_flags(command: str) -> list[str]:
        return re.findall(r'--build-arg "\w+=[^"]+"', command)

    for stage, command in zip(earlier, stage_builds, strict=True):
        assert f'{stage}="{REGISTRY}/{image}_{stage}"' in build_base
        assert f"--target {stage} " in command
        assert f'--cache-from "${{{stage}}}:latest"' in command
        assert "--build-arg BUILDKIT_INLINE_CACHE=1" in command
        assert command.endswith(f'--tag "${{{stage}}}:latest" .')
        assert build_arg_flags(command) == build_arg_flags(final)
    assert "--target" not in final, "the base is the Dockerfile's last stage"
    for cache in [*(f"${{{stage}}}" for stage in earlier), "${base}"]:
        assert f'--cache-from "{cache}:latest"' in final
    assert "--build-arg BUILDKIT_INLINE_CACHE=1" in final
    assert final.endswith('--tag "${base}:${tag}" .')
    assert "DOCKER_BUILDKIT" not in str(by_id[built.step("build-base")]), "no builder is required"
    # All three tags of the base are pushed; a stage only when it was built here, not when the
    # base found was only pulled.
    push = by_id[built.step("push-base")]["script"]
    assert state in push
    for tag in ('$(cat "${state}/base_tag")', "${BUILD_ID}", "latest"):
        assert f'docker push "${{base}}:{tag}"' in push
    for stage in earlier:
        assert f'{stage}="{REGISTRY}/{image}_{stage}"' in push
        assert re.search(
            r'^(\s*)if \[\[ ! -f "\$\{state\}/base_found" \]\]; then\n'
            rf'(\1  docker push "\$\{{\w+\}}:latest"\n)*'
            rf'\1  docker push "\$\{{{stage}\}}:latest"\n'
            rf'(\1  docker push "\$\{{\w+\}}:latest"\n)*'
            r"\1fi$",
            push,
            flags=re.MULTILINE,
        ), f"push {image}_{stage}:latest only when built"
        assert push.count(f'"${{{stage}}}:latest"') == 1
    if not earlier:
        assert "_bake" not in path.read_text()


@pytest.mark.parametrize("path", CLOUDBUILD_FILES, ids=lambda p: p.name)
def test_build_options_are_explicit(path):
    build = load(path)
    ids = [step["id"] for step in build["steps"]]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(-[a-z0-9]+)+", i) for i in ids), ids
    assert re.fullmatch(r"\d+s", build["timeout"])
    options = build["options"]
    assert options["automapSubstitutions"] is True
    if component_of(path) == "backend":
        assert options["machineType"] == "E2_HIGHCPU_8"
        assert int(build["timeout"][:-1]) >= 1800
        assert int(options["diskSizeGb"]) >= 50
    assert build["substitutions"]["_REGISTRY"] == "northamerica-northeast1-docker.pkg.dev"


@pytest.mark.parametrize("path", CLOUDBUILD_FILES, ids=lambda p: p.name)
def test_every_substitution_used_is_declared_and_every_declared_one_used(path):
    build = load(path)
    text = yaml.safe_dump({k: v for k, v in build.items() if k != "substitutions"})
    used = set(re.findall(r"\$\{?(_[A-Z0-9_]+)", text))
    assert used == set(build["substitutions"])
    assert all(re.fullmatch(r"_[A-Z0-9_]+", name) for name in build["substitutions"])
    builtins = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", text))
    assert builtins <= {"PROJECT_ID", "BUILD_ID"}, builtins


# --- v3: one base and one code image per model ------------------------------------------------


def test_v3_builds_one_backend_image_per_model_of_the_v2_set():
    path = DEPLOYMENT / "cloudbuild_backend_v3.yaml"
    build = load(path)
    assert [b.model for b in built_images(path)] == V3_MODELS
    assert build["images"] == [
        f"{REGISTRY}/backend_v3_{model}{kind}:${{BUILD_ID}}"
        for model in V3_MODELS
        for kind in ("_base", "")
    ]
    assert build["tags"] == ["baked-vision", "backend_v3"]
    # Six steps per model, nothing else, and no image of v2 (all four models in one).
    assert len(build["steps"]) == 6 * len(V3_MODELS)
    assert "backend_v2" not in path.read_text()
    # Artifact Registry image names take lowercase letters, digits, "_", "-", "." and "/".
    for name in build["images"]:
        image = name.removeprefix(f"{REGISTRY}/").split(":")[0]
        assert re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", image), image


def test_v3_bases_are_built_in_turn_each_caching_from_the_one_before():
    """The layers before MODELS are the same for every model: built once, shared by all."""
    path = DEPLOYMENT / "cloudbuild_backend_v3.yaml"
    by_id = steps_by_id(load(path))
    built = built_images(path)
    first, rest = built[0], built[1:]
    first_builds = docker_builds(by_id[first.step("build-base")]["script"])
    assert not [c for c in first_builds if "backend_v3_" in c.split("--build-arg")[0]]
    for previous, this in zip(built, rest, strict=False):
        step = by_id[this.step("build-base")]
        assert previous.step("build-base") in step["waitFor"]
        bake, base = docker_builds(step["script"])
        # Its own caches first, then the previous model's images of this very build.
        own_bake = bake.index('--cache-from "${bake}:latest"')
        shared_bake = bake.index(f'--cache-from "{REGISTRY}/{previous.image}_bake:latest"')
        assert own_bake < shared_bake
        for cache in (f"{previous.image}_bake:latest", f"{previous.image}_base:${{BUILD_ID}}"):
            assert f'--cache-from "{REGISTRY}/{cache}"' in base
        assert base.index('--cache-from "${base}:latest"') < base.index(previous.image)
        # The same Dockerfile, the same arguments but MODELS.
        assert f'--build-arg "MODELS={this.model}"' in base
        assert f"--file {'docker/backend-base.Dockerfile'} " in base
    # Pulls, hashes and look-ups of every model run at once, from the start.
    for this in built:
        assert by_id[this.step("hash-base-inputs")]["waitFor"] == ["-"]


def test_v3_submit_script_is_a_thin_wrapper_of_the_v3_build():
    text = (DEPLOYMENT / "submit_build_backend_v3.sh").read_text()
    assert 'lib/submit_build.sh" backend_v3 "$@"' in text


# --- the base look-up ------------------------------------------------------------------------

FAKE_DOCKER = """\
#!{python}
# A stand-in for docker: log the call; `manifest inspect` answers as FAKE_DOCKER_MANIFEST says.
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["manifest", "inspect"]:
    error = os.environ.get("FAKE_DOCKER_MANIFEST_ERROR", "")
    if error:
        sys.stderr.write(error.replace("REF", args[-1]))
        sys.exit(1)
    print('{{"schemaVersion": 2}}')
"""
LOOK_UP_ERRORS = {
    "missing": "no such manifest: REF\n",
    "denied": (
        "errors:\n"
        'denied: Permission "artifactregistry.repositories.downloadArtifacts" denied on '
        'resource "projects/test-project/locations/northamerica-northeast1/repositories/'
        'baked-vision" (or it may not exist)\n'
    ),
    "offline": 'Get "https://northamerica-northeast1-docker.pkg.dev/v2/": dial tcp: i/o timeout\n',
}


@pytest.fixture
def step_runner(tmp_path):
    """Run a Cloud Build step's script here, as Cloud Build would, with a fake docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable))
    fake.chmod(0o755)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    log = tmp_path / "docker.log"

    def run(path: Path, step_id: str, **env: str) -> subprocess.CompletedProcess:
        build = load(path)
        script = workspace / f"{step_id}.sh"
        script.write_text(steps_by_id(build)[step_id]["script"])
        log.write_text("")
        environment = {
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "FAKE_DOCKER_LOG": str(log),
            "PROJECT_ID": "test-project",
            "BUILD_ID": "b-1",
            **{name: str(value) for name, value in build["substitutions"].items()},
            **env,
        }
        done = subprocess.run(
            ["bash", str(script)],
            cwd=workspace,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        done.docker_calls = [json.loads(line) for line in log.read_text().splitlines()]
        return done

    run.workspace = workspace
    return run


def test_look_up_reads_the_manifest_with_registry_read_only():
    """`gcloud artifacts docker images describe` also needs Artifact Analysis permissions."""
    for built in BUILT_IMAGES:
        step = steps_by_id(load(built.path))[built.step("look-up-base")]
        assert step["name"] == "gcr.io/cloud-builders/docker"
        assert 'docker manifest inspect "${base}"' in step["script"]
        assert "gcloud" not in step["script"]
    assert "images describe" not in (DEPLOYMENT / "cloudbuild.template.yaml").read_text().replace(
        "`gcloud artifacts docker images\n  # describe`", ""
    )


@pytest.mark.parametrize("built", [BUILT_IMAGES[0], BUILT_IMAGES[-1]], ids=str)
def test_a_found_base_is_not_rebuilt(step_runner, built):
    state = step_runner.workspace / ".cloudbuild" / built.image
    state.mkdir(parents=True)
    (state / "base_tag").write_text("inputs-0123456789abcdef01234567\n")
    done = step_runner(built.path, built.step("look-up-base"))
    assert done.returncode == 0, done.stderr
    base = f"northamerica-northeast1-docker.pkg.dev/test-project/baked-vision/{built.image}_base"
    assert done.docker_calls == [["manifest", "inspect", f"{base}:inputs-0123456789abcdef01234567"]]
    assert (state / "base_found").exists()
    assert "the base is not rebuilt" in done.stdout


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        ("missing", "(no such manifest: "),
        ("denied", 'denied: Permission "artifactregistry.repositories.downloadArtifacts"'),
        ("offline", "dial tcp: i/o timeout"),
    ],
)
def test_a_failed_look_up_says_why_the_base_is_built(step_runner, failure, says):
    built = BUILT_IMAGES[0]
    state = step_runner.workspace / ".cloudbuild" / built.image
    state.mkdir(parents=True)
    (state / "base_tag").write_text("inputs-0123456789abcdef01234567\n")
    (state / "base_found").write_text("")  # left by an earlier look-up: must go
    done = step_runner(
        built.path, built.step("look-up-base"), FAKE_DOCKER_MANIFEST_ERROR=LOOK_UP_ERRORS[failure]
    )
    assert done.returncode == 0, done.stderr  # a failed look-up never fails the build
    assert not (state / "base_found").exists()
    log = done.stdout + done.stderr
    assert says in log
    if failure == "missing":
        assert "yet" in done.stdout and "the base is built" in done.stdout
        assert done.stderr == ""
    else:
        # Not "not found": the log says the look-up failed, and what the build needs to look.
        assert "could not look up" in done.stderr
        assert "roles/artifactregistry.reader" in done.stderr
        assert "errors:" not in log


# --- the Python image, pinned by digest ------------------------------------------------------

PINNED = "python:3.11-slim@sha256:" + "ab" * 32
REPINNED = "python:3.11-slim@sha256:" + "cd" * 32


@pytest.fixture
def inputs_workspace(step_runner):
    """Copy what the base-inputs hash reads into the step runner's workspace."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("docker", "weights", "runtime", "bake", "deployment/lib"):
        shutil.copytree(ROOT / part, step_runner.workspace / part, ignore=ignore)
    return step_runner


@pytest.mark.parametrize("path", [CLOUDBUILD_FILES[1], CLOUDBUILD_FILES[-1]], ids=lambda p: p.name)
def test_a_pinned_python_image_reaches_the_build_and_the_base_tag(inputs_workspace, path):
    run = inputs_workspace
    built = built_images(path)[0]
    tag_file = run.workspace / ".cloudbuild" / built.image / "base_tag"

    def base_tag(python_image: str) -> str:
        done = run(path, built.step("hash-base-inputs"), _PYTHON_IMAGE=python_image)
        assert done.returncode == 0, done.stderr
        return tag_file.read_text().strip()

    tags = {image: base_tag(image) for image in ("python:3.11-slim", PINNED, REPINNED)}
    assert all(re.fullmatch(r"inputs-[0-9a-f]{24}", tag) for tag in tags.values())
    assert len(set(tags.values())) == 3, "a new digest is a new base"
    assert base_tag(PINNED) == tags[PINNED], "the same digest, the same base"

    # The base is built from exactly that image, in every docker build of the step.
    done = run(path, built.step("build-base"), _PYTHON_IMAGE=PINNED)
    assert done.returncode == 0, done.stderr
    builds = [call for call in done.docker_calls if call[0] == "build"]
    assert len(builds) == len(stages(DOCKER / f"{component_of(path)}-base.Dockerfile"))
    for call in builds:
        assert call[call.index(f"PYTHON_IMAGE={PINNED}") - 1] == "--build-arg"
    *_, final = builds
    base = f"{REGISTRY_HOST}/{built.image}_base"
    assert "--target" not in final
    assert final[final.index("--tag") + 1] == f"{base}:{tags[PINNED]}"
    assert ["tag", f"{base}:{tags[PINNED]}", f"{base}:b-1"] in done.docker_calls


def test_a_pinned_python_image_is_a_valid_substitution_value():
    pinned = dataclasses.replace(
        render_cloudbuild.COMPONENTS[1],
        base_args={**render_cloudbuild.COMPONENTS[1].base_args, "PYTHON_IMAGE": PINNED},
    )
    build = yaml.safe_load(render_cloudbuild.render(pinned))
    assert build["substitutions"]["_PYTHON_IMAGE"] == PINNED
    # A FROM accepts a name with both a tag and a digest; the Dockerfiles take the image whole.
    for component in ("backend", "frontend"):
        text = (DOCKER / f"{component}-base.Dockerfile").read_text()
        froms = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
        assert froms and set(froms) == {"${PYTHON_IMAGE}"}, froms


# --- the weights fetch of the image build: frozen once the lock is committed ------------------


def _fetch_step() -> str:
    """The backend base's RUN that fetches the weights, as the shell runs it."""
    text = (DOCKER / "backend-base.Dockerfile").read_text().replace("\\\n", " ")
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

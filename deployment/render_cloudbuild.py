"""Render the four Cloud Build files from deployment/cloudbuild.template.yaml (or check them).

    uv run python deployment/render_cloudbuild.py          # rewrite deployment/cloudbuild_*.yaml
    uv run python deployment/render_cloudbuild.py --check  # exit 1 if any file is stale

One template, four files: the assignment wants one file per component, and copies would drift.
What differs between them is data, below: the image name, the base Dockerfile and its build
arguments (with their default values), the files the base is built from, and the stages of the
base Dockerfile before its final one (each cached as its own image).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT_DIR = ROOT / "deployment"
TEMPLATE = DEPLOYMENT_DIR / "cloudbuild.template.yaml"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
REGISTRY = "${_REGISTRY}/${PROJECT_ID}/${_REPOSITORY}"


@dataclass(frozen=True)
class Component:
    """One of the four builds: a component (backend or frontend) at a version (v1 or v2)."""

    component: str
    version: str
    # The base Dockerfile's ARGs and the default each gets from this build's substitutions.
    base_args: dict[str, str]
    # What the base is built from, besides its Dockerfile: the files it COPYs.
    base_copies: tuple[str, ...]
    # The base Dockerfile's stages before its final one, in build order: each is built with
    # --target and pushed as <image>_<stage>:latest, its layer cache (the template says why).
    # Each name is also the shell variable holding that image in the step scripts.
    stages: tuple[str, ...]
    machine_type: str
    machine_reason: str
    disk_size_gb: int
    timeout: str
    timeout_reason: str

    def __post_init__(self) -> None:
        for stage in self.stages:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", stage) or stage in {"base", "tag"}:
                raise ValueError(f"{self.image}: stage {stage!r} cannot name a shell variable")

    @property
    def image(self) -> str:
        return f"{self.component}_{self.version}"

    @property
    def base_dockerfile(self) -> str:
        return f"docker/{self.component}-base.Dockerfile"

    @property
    def code_dockerfile(self) -> str:
        return f"docker/{self.component}.Dockerfile"


def _backend(version: str) -> Component:
    return Component(
        component="backend",
        version=version,
        base_args={
            "PYTHON_IMAGE": "python:3.11-slim",
            "PIP_CERT": "",
            "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
            "MODELS": version,
            "WEIGHTS_MIRROR": "",
            "HF_ENDPOINT": "",
            "WEIGHTS_CATALOG": "",
        },
        # Everything the Dockerfile COPYs from the context, in either stage.
        base_copies=(
            "docker/requirements-torch.txt",
            "docker/requirements-bake.txt",
            "weights",
            "runtime",
            "bake",
            "docker/requirements-backend.txt",
        ),
        stages=("bake",),
        machine_type="E2_HIGHCPU_8",
        machine_reason=(
            "8 vCPUs and a 100 GB disk: pip unpacks torch, the bake stage exports and verifies "
            "each model on the CPU, and v2's ~1.5 GB of weights and of bundles are written, "
            "compressed and pushed (default: 2 vCPUs)."
        ),
        disk_size_gb=100,
        timeout="3600s",
        timeout_reason=(
            "A full base build (torch, dependencies, ~1.5 GB of weights, the ONNX export and its "
            "check, the pushes of the bake stage and the base) needs far more than the default "
            "10 minutes; a reused base takes a few."
        ),
    )


def _frontend(version: str) -> Component:
    return Component(
        component="frontend",
        version=version,
        base_args={"PYTHON_IMAGE": "python:3.11-slim", "PIP_CERT": ""},
        base_copies=("docker/requirements-frontend.txt",),
        stages=(),  # single-stage: the base is its only image
        machine_type="UNSPECIFIED",
        machine_reason=(
            "The default machine (e2-standard-2): no torch and no weights, so a bigger one "
            "would only cost more."
        ),
        disk_size_gb=100,
        timeout="1200s",
        timeout_reason="Installing Streamlit and pushing a ~500 MB base fits well within this.",
    )


COMPONENTS = tuple(make(v) for make in (_backend, _frontend) for v in ("v1", "v2"))


def _yaml_scalar(value: str) -> str:
    """Give a YAML scalar for a substitution value (quoted when YAML would misread it)."""
    if value and re.fullmatch(r"[A-Za-z0-9._/:@-]+", value) and not value[0].isdigit():
        return value
    return json.dumps(value)


def _comment(text: str) -> list[str]:
    """Give a YAML comment of `text`, wrapped to fit the files' line length."""
    return ["# " + line for line in textwrap.wrap(text, width=90)]


def _stage_builds(component: Component, build_args: list[str]) -> list[str]:
    """Give the commands that build the base's earlier stages, in order.

    Each is cached from its own previous image and those of the stages before it, which it may
    build on; tagged :latest, it is the next build's cache.
    """
    lines = []
    for n, stage in enumerate(component.stages):
        lines += [
            "docker build \\",
            f"  --file {component.base_dockerfile} \\",
            f"  --target {stage} \\",
            *(f'  --cache-from "${{{s}}}:latest" \\' for s in component.stages[: n + 1]),
            "  --build-arg BUILDKIT_INLINE_CACHE=1 \\",
            *(f"  {arg}" for arg in build_args),
            f'  --tag "${{{stage}}}:latest" \\',
            "  .",
        ]
    return lines


def _values(component: Component) -> dict[str, str | list[str]]:
    """Give the template's placeholders for one component; lists become one line each."""
    arg_names = list(component.base_args)
    build_args = [f'--build-arg "{name}=${{_{name}}}" \\' for name in arg_names]
    stages = component.stages
    # The header's list of images: each name padded like the template's {{image}}_base:latest.
    width = len(f"{component.image}_base:inputs-<hash>  ")
    stage_images = {s: f"{component.image}_{s}" for s in stages}
    return {
        "image": component.image,
        "component": component.component,
        "version": component.version,
        "base_dockerfile": component.base_dockerfile,
        "code_dockerfile": component.code_dockerfile,
        "base_inputs": [
            f"{path} \\" for path in (component.base_dockerfile, *component.base_copies)
        ],
        "hash_args": [f'--arg "{name}=${{_{name}}}" \\' for name in arg_names],
        "build_args": build_args,
        "cached_stages": ", ".join(stages) or f"none ({component.base_dockerfile} has one stage)",
        "stage_images_doc": [
            f"#   {f'{name}:latest'.ljust(width)}"
            f"the {s} stage of the last base built: its layer cache"
            for s, name in stage_images.items()
        ],
        "stage_vars": [f'{s}="{REGISTRY}/{name}"' for s, name in stage_images.items()],
        "pull_stages": [
            f'docker pull "${{{stage}}}:latest" || echo "no ${{{stage}}}:latest yet: built afresh"'
            for stage in stages
        ],
        "stage_builds": _stage_builds(component, build_args),
        "stage_cache_from": [f'--cache-from "${{{s}}}:latest" \\' for s in stages],
        "push_stages": (
            [
                "if [[ ! -f .cloudbuild/base_found ]]; then",
                *(f'  docker push "${{{s}}}:latest"' for s in stages),
                "fi",
            ]
            if stages
            else []
        ),
        "substitutions": [
            f"_{name}: {_yaml_scalar(value)}" for name, value in component.base_args.items()
        ],
        "machine_type": component.machine_type,
        "machine_reason": _comment(component.machine_reason),
        "disk_size_gb": str(component.disk_size_gb),
        "timeout": component.timeout,
        "timeout_reason": _comment(component.timeout_reason),
    }


def render(component: Component, template: str | None = None) -> str:
    """Give the Cloud Build file of one component.

    A placeholder alone on its line takes a list, one item per line at that line's indent;
    anywhere else it takes a string. An unknown placeholder is an error.
    """
    template = TEMPLATE.read_text() if template is None else template
    values = _values(component)
    out = []
    for line in template.splitlines():
        alone = re.fullmatch(r"(\s*)\{\{(\w+)\}\}", line)
        if alone and isinstance(values.get(alone.group(2)), list):
            out.extend(alone.group(1) + item for item in values[alone.group(2)])
            continue

        def substitute(match: re.Match[str]) -> str:
            value = values.get(match.group(1))
            if not isinstance(value, str):
                raise ValueError(f"{TEMPLATE.name}: no string for {{{{{match.group(1)}}}}}")
            return value

        out.append(PLACEHOLDER.sub(substitute, line))
    return "\n".join(out) + "\n"


def output_path(component: Component) -> Path:
    return DEPLOYMENT_DIR / f"cloudbuild_{component.image}.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)

    stale = []
    for component in COMPONENTS:
        path, content = output_path(component), render(component)
        if path.exists() and path.read_text() == content:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(content)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(
            f"stale: {names}; run: uv run python deployment/render_cloudbuild.py", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

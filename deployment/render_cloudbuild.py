"""Render the Cloud Build files from deployment/cloudbuild.template.yaml (or check them).

    uv run python deployment/render_cloudbuild.py          # rewrite deployment/cloudbuild_*.yaml
    uv run python deployment/render_cloudbuild.py --check  # exit 1 if any file is stale

One template, five files: the assignment wants one file per component, and copies would drift.
What differs between them is data, below: the image name, the base Dockerfile and its build
arguments (with their default values), the files the base is built from, the stages of the
base Dockerfile before its final one (each cached as its own image), and, for backend_v3, the
models: one base and one code image per model, each baked with that model alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT_DIR = ROOT / "deployment"
TEMPLATE = DEPLOYMENT_DIR / "cloudbuild.template.yaml"
CATALOG = ROOT / "weights" / "catalog.toml"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# A block of the template rendered once per image of the build (see render()).
BLOCK_START, BLOCK_END = "{{#each_image}}", "{{/each_image}}"
# A comment at the steps' own indent, inside a block: written before the first image's steps
# only, so a build of several images does not repeat every explanation per image.
BLOCK_COMMENT = re.compile(r"  #.*")
REGISTRY = "${_REGISTRY}/${PROJECT_ID}/${_REPOSITORY}"


def catalog_set(name: str) -> tuple[str, ...]:
    """Give the model ids of a set of weights/catalog.toml (read directly: no torchvision)."""
    with CATALOG.open("rb") as file:
        return tuple(tomllib.load(file)["sets"][name])


@dataclass(frozen=True)
class Component:
    """One build: a component (backend or frontend) at a version (v1, v2, v3)."""

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
    # Empty: the build makes one base and one code image, named after it (backend_v2). Else
    # one pair per model (backend_v3_<id>), each base built with MODELS=<id>, written in the
    # file instead of taken from the _MODELS substitution.
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for stage in self.stages:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", stage) or stage in {"base", "tag"}:
                raise ValueError(f"{self.image}: stage {stage!r} cannot name a shell variable")
        if self.models and "MODELS" not in self.base_args:
            raise ValueError(f"{self.image}: per-model images need a MODELS build argument")
        for model in self.models:
            # Artifact Registry image names take lowercase letters, digits, "_", "-" and ".".
            if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", model):
                raise ValueError(f"{self.image}: model id {model!r} cannot name an image")

    @property
    def image(self) -> str:
        """The build's name: its file, its submit script and its Cloud Build tag."""
        return f"{self.component}_{self.version}"

    @property
    def base_dockerfile(self) -> str:
        return f"docker/{self.component}-base.Dockerfile"

    @property
    def code_dockerfile(self) -> str:
        return f"docker/{self.component}.Dockerfile"

    @property
    def units(self) -> tuple[Unit, ...]:
        """The base + code image pairs this build makes, in build order."""
        if not self.models:
            return (Unit(self.image, "", {}),)
        return tuple(
            Unit(f"{self.image}_{model}", "-" + model.replace("_", "-"), {"MODELS": model})
            for model in self.models
        )


@dataclass(frozen=True)
class Unit:
    """One base image and the code image FROM it, within a build."""

    image: str  # the code image; its base is <image>_base
    suffix: str  # of its step ids (which take no "_"): "" or "-convnext-base"
    fixed_args: dict[str, str]  # build arguments written in the file, not substituted


def _backend(version: str, models: tuple[str, ...] = ()) -> Component:
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
        timeout="5400s" if models else "3600s",
        timeout_reason=(
            "A full base build (torch, dependencies, ~1.5 GB of weights, the ONNX export and its "
            "check, the pushes of the bake stage and the base) needs far more than the default "
            "10 minutes; a reused base takes a few."
            + (
                f" Here the same work is split over {len(models)} bases of one model each, "
                "every one with its own runtime stage build and pushes: half as long again."
                if models
                else ""
            )
        ),
        models=models,
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


# v3 serves the v2 models, one Cloud Run service each: one image per model of that set.
V3_MODELS = catalog_set("v2")

COMPONENTS = (
    _backend("v1"),
    _backend("v2"),
    _backend("v3", V3_MODELS),
    _frontend("v1"),
    _frontend("v2"),
)


def _yaml_scalar(value: str) -> str:
    """Give a YAML scalar for a substitution value (quoted when YAML would misread it)."""
    if value and re.fullmatch(r"[A-Za-z0-9._/:@-]+", value) and not value[0].isdigit():
        return value
    return json.dumps(value)


def _comment(text: str) -> list[str]:
    """Give a YAML comment of `text`, wrapped to fit the files' line length."""
    return ["# " + line for line in textwrap.wrap(text, width=90)]


def _table(rows: list[tuple[str, str]]) -> list[str]:
    """Give a two-column YAML comment; a row too wide for one line continues on the next."""
    width = max(len(name) for name, _ in rows) + 2
    lines = []
    for name, text in rows:
        line = f"#   {name.ljust(width)}{text}"
        if len(line) <= 99:
            lines.append(line)
        else:
            lines += [f"#   {name}", f"#   {' ' * width}{text}"]
    return lines


def _arg_values(component: Component, unit: Unit) -> dict[str, str]:
    """Give each base build argument's value in a step script: its substitution, or fixed."""
    return {name: unit.fixed_args.get(name, f"${{_{name}}}") for name in component.base_args}


def _stage_builds(component: Component, build_args: list[str], shared: list[str]) -> list[str]:
    """Give the commands that build the base's earlier stages, in order.

    Each is cached from its own previous image and those of the stages before it, which it may
    build on, then from the same stages in `shared` (another image's, of this build: one
    --cache-from line per stage, or none); tagged :latest, it is the next build's cache.
    """
    lines = []
    for n, stage in enumerate(component.stages):
        lines += [
            "docker build \\",
            f"  --file {component.base_dockerfile} \\",
            f"  --target {stage} \\",
            *(f'  --cache-from "${{{s}}}:latest" \\' for s in component.stages[: n + 1]),
            *(f"  {line}" for line in shared[: n + 1]),
            "  --build-arg BUILDKIT_INLINE_CACHE=1 \\",
            *(f"  {arg}" for arg in build_args),
            f'  --tag "${{{stage}}}:latest" \\',
            "  .",
        ]
    return lines


def _unit_values(
    component: Component, unit: Unit, previous: Unit | None
) -> dict[str, str | list[str]]:
    """Give the placeholders of one image's steps."""
    args = _arg_values(component, unit)
    build_args = [f'--build-arg "{name}={value}" \\' for name, value in args.items()]
    stages = component.stages
    stage_images = {s: f"{unit.image}_{s}" for s in stages}
    # After the first image, each base also caches from the one built before it in this build:
    # the layers before MODELS are the same for every model, so they are built once and shared.
    shared_stages = (
        [f'--cache-from "{REGISTRY}/{previous.image}_{s}:latest" \\' for s in stages]
        if previous
        else []
    )
    shared_base = (
        [f'--cache-from "{REGISTRY}/{previous.image}_base:${{BUILD_ID}}" \\'] if previous else []
    )
    return {
        "image": unit.image,
        "suffix": unit.suffix,
        "banner": (
            [f"# --- {unit.image} " + "-" * (88 - len(unit.image))] if component.models else []
        ),
        "hash_args": [f'--arg "{name}={value}" \\' for name, value in args.items()],
        "build_args": build_args,
        "build_base_wait": ", ".join(
            [
                f"pull-previous-base{unit.suffix}",
                f"look-up-base{unit.suffix}",
                *([f"build-base{previous.suffix}"] if previous else []),
            ]
        ),
        "stage_vars": [f'{s}="{REGISTRY}/{name}"' for s, name in stage_images.items()],
        "pull_stages": [
            f'docker pull "${{{stage}}}:latest" || echo "no ${{{stage}}}:latest yet: built afresh"'
            for stage in stages
        ],
        "stage_builds": _stage_builds(component, build_args, shared_stages),
        "stage_cache_from": [f'--cache-from "${{{s}}}:latest" \\' for s in stages],
        "shared_cache_from": shared_stages + shared_base,
        "push_stages": (
            [
                'if [[ ! -f "${state}/base_found" ]]; then',
                *(f'  docker push "${{{s}}}:latest"' for s in stages),
                "fi",
            ]
            if stages
            else []
        ),
    }


def _values(component: Component) -> dict[str, str | list[str]]:
    """Give the template's placeholders outside the per-image blocks; lists: one line each."""
    fixed = set().union(*(unit.fixed_args for unit in component.units))
    stages = component.stages
    # The header's images: "backend_v2" or, per model, "backend_v3_<model>".
    image = f"{component.image}_<model>" if component.models else component.image
    models = ", ".join(component.models)
    return {
        "build": component.image,
        "image": image,
        "service": (
            f"{component.component}-{component.version}-<model>"
            if component.models
            else f"{component.component}-{component.version}"
        ),
        "component": component.component,
        "summary": _comment(
            f"Cloud Build for {component.image}: per model ({models}), a "
            f"{component.component} base image holding that model alone, then the code image "
            "FROM it."
            if component.models
            else f"Cloud Build for {component.image}: the {component.component} base image, "
            "then the code image FROM it."
        ),
        "models_doc": (
            [
                "#",
                *_comment(
                    f"One base and one code image per model ({models}), from the same "
                    f"{component.base_dockerfile} with MODELS=<model>, so each Cloud Run service "
                    "pulls and stores its own model's bundle only. The bases are built one after "
                    "the other, each also caching from the one before it: everything before the "
                    "MODELS build argument (Python, torch, the exporter, the serving dependencies, "
                    "the runtime package) is built once and its layers are shared by every "
                    "model's images, in this build and in Artifact Registry; each image differs "
                    "from the bundles layer on. Each base has its own content tag (MODELS is one "
                    "of its inputs), so it is rebuilt only when its own inputs change. (BuildKit "
                    "reuses each layer from whichever cache holds it; docker's classic builder "
                    "follows one image's layers, so a base built right after another one in "
                    "the same build takes the shared layers from that one, and fetches and "
                    "exports its own model afresh rather than from its own previous "
                    "bake image.) The models are data, V3_MODELS in "
                    "deployment/render_cloudbuild.py (the catalog's v2 set): change it and render "
                    "again to build others; there is no _MODELS substitution here."
                ),
            ]
            if component.models
            else []
        ),
        "base_dockerfile": component.base_dockerfile,
        "code_dockerfile": component.code_dockerfile,
        "base_inputs": [
            f"{path} \\" for path in (component.base_dockerfile, *component.base_copies)
        ],
        "cached_stages": ", ".join(stages) or f"none ({component.base_dockerfile} has one stage)",
        "images_doc": _table(
            [
                (
                    f"{image}_base:inputs-<hash>",
                    "the base, named by a hash of all it is built from",
                ),
                (f"{image}_base:${{BUILD_ID}}", "the same base, tagged for this build"),
                (
                    f"{image}_base:latest",
                    "the newest base: the next changed base's layer cache",
                ),
                *(
                    (
                        f"{image}_{s}:latest",
                        f"the {s} stage of the last base built: its layer cache",
                    )
                    for s in stages
                ),
                (
                    f"{image}:${{BUILD_ID}}",
                    "the code image FROM this build's base: deployed",
                ),
            ]
        ),
        "substitutions": [
            f"_{name}: {_yaml_scalar(value)}"
            for name, value in component.base_args.items()
            if name not in fixed
        ],
        "fixed_args_doc": (
            [f"# ({', '.join(sorted(fixed))}: fixed per image, in the steps, not substituted.)"]
            if fixed
            else []
        ),
        "machine_type": component.machine_type,
        "machine_reason": _comment(component.machine_reason),
        "disk_size_gb": str(component.disk_size_gb),
        "timeout": component.timeout,
        "timeout_reason": _comment(component.timeout_reason),
    }


def _render_lines(lines: list[str], values: dict, template_name: str) -> list[str]:
    """Substitute the placeholders of lines holding no block."""
    out = []
    for line in lines:
        alone = re.fullmatch(r"(\s*)\{\{(\w+)\}\}", line)
        if alone and isinstance(values.get(alone.group(2)), list):
            out.extend(alone.group(1) + item for item in values[alone.group(2)])
            continue

        def substitute(match: re.Match[str]) -> str:
            value = values.get(match.group(1))
            if not isinstance(value, str):
                raise ValueError(f"{template_name}: no string for {{{{{match.group(1)}}}}}")
            return value

        out.append(PLACEHOLDER.sub(substitute, line))
    return out


def render(component: Component, template: str | None = None) -> str:
    """Give the Cloud Build file of one component.

    A placeholder alone on its line takes a list, one item per line at that line's indent;
    anywhere else it takes a string. An unknown placeholder is an error. The lines between
    {{#each_image}} and {{/each_image}} (each alone on its line) are written once per image
    of the build, with that image's placeholders; a comment among them at the steps' indent
    (two spaces) is written for the first image only.
    """
    template = TEMPLATE.read_text() if template is None else template
    values = _values(component)
    units = component.units
    out: list[str] = []
    block: list[str] | None = None
    for line in template.splitlines():
        if line.strip() == BLOCK_START:
            if block is not None:
                raise ValueError(f"{TEMPLATE.name}: {BLOCK_START} inside a block")
            block = []
        elif line.strip() == BLOCK_END:
            if block is None:
                raise ValueError(f"{TEMPLATE.name}: {BLOCK_END} without {BLOCK_START}")
            for n, unit in enumerate(units):
                unit_values = {
                    **values,
                    **_unit_values(component, unit, units[n - 1] if n else None),
                }
                lines = [ln for ln in block if n == 0 or not BLOCK_COMMENT.fullmatch(ln)]
                out.extend(_render_lines(lines, unit_values, TEMPLATE.name))
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.extend(_render_lines([line], values, TEMPLATE.name))
    if block is not None:
        raise ValueError(f"{TEMPLATE.name}: {BLOCK_START} never closed")
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

"""A local Cloud Build: run a cloudbuild file's steps in containers of their builder images.

What it does as Cloud Build does: built-in substitutions (PROJECT_ID, BUILD_ID, ...) and user
ones (`_NAME`, defaults from the file's `substitutions:`, overrides as `gcloud builds submit
--substitutions` passes them), `$$` for a literal `$`, an undefined `${_X}` or an unused override
failing the build unless `options.substitutionOption: ALLOW_LOOSE`, `automapSubstitutions`
(every substitution also in each step's environment), `entrypoint`/`args`/`script`, `env`,
`dir`, step and build `timeout`, and `images:` pushed at the end (the build fails if one is
missing). Each step runs with the Docker socket and /workspace mounted. Unknown keys fail.
What it simplifies: steps run one at a time in file order. Cloud Build lets a step wait only
for earlier ones (`waitFor`; `-` starts it with the build), so file order satisfies every
`waitFor`; steps it would run concurrently run one after another here.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.dockerd import Docker

KNOWN = {  # the fields Cloud Build's build resource has; any other fails the build
    "the build": {"steps", "timeout", "substitutions", "options", "images", "tags", "artifacts",
                  "availableSecrets", "logsBucket", "serviceAccount", "queueTtl"},
    "a step": {"name", "id", "waitFor", "entrypoint", "args", "script", "env", "dir", "timeout",
               "automapSubstitutions", "secretEnv", "volumes", "allowFailure", "allowExitCodes"},
    "options": {"machineType", "diskSizeGb", "logging", "substitutionOption", "env", "pool",
                "automapSubstitutions", "dynamicSubstitutions", "requestedVerifyOption",
                "sourceProvenanceHash", "logStreamingOption", "defaultLogsBucketBehavior",
                "volumes", "secretEnv"},
}  # fmt: skip
BUILTINS = ("REPO_NAME", "BRANCH_NAME", "TAG_NAME", "COMMIT_SHA", "SHORT_SHA", "REVISION_ID",
            "TRIGGER_NAME")  # fmt: skip
# $$ (a literal $), ${NAME} or $NAME: the three forms Cloud Build's substitution reads.
REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)")
USER_NAME = re.compile(r"_[A-Z0-9_]+")


class BuildFailed(RuntimeError):
    """The build stopped, as Cloud Build would report it."""


@dataclass
class Build:
    build_id: str
    log: str = ""
    pushed: int = 0  # bytes the registry grew by (set by the caller, who sees the registry)
    seconds: dict[str, float] = field(default_factory=dict)  # per step id, plus "images"


def seconds_of(duration: str) -> float:
    if not re.fullmatch(r"\d+(\.\d+)?s", duration):
        raise BuildFailed(f"timeout {duration!r} is not a duration like 600s")
    return float(duration[:-1])


def check_keys(where: str, given: dict) -> None:
    unknown = sorted(set(given) - KNOWN[where])
    if unknown:
        raise BuildFailed(f"invalid build: unknown field(s) {unknown} in {where}")


class Substitution:
    def __init__(self, values: dict[str, str], loose: bool) -> None:
        self.values, self.loose, self.used = values, loose, set()

    def __call__(self, text: str) -> str:
        def replace(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1) or match.group(2)
            if name in self.values:
                self.used.add(name)
                return self.values[name]
            if self.loose:
                return ""
            raise BuildFailed(
                f'invalid build: key in the template "{name}" is not a valid '
                "built-in substitution and is not defined (ALLOW_LOOSE allows it)"
            )

        return REFERENCE.sub(replace, str(text))


def run_build(config_path: Path, workspace: Path, docker: Docker, *, project="test-project",
              substitutions: dict[str, str] | None = None, build_id=None) -> Build:  # fmt: skip
    """Run one build of a cloudbuild file with `workspace` as its source; give its log."""
    config = yaml.safe_load(config_path.read_text())
    check_keys("the build", config)
    options = config.get("options", {})
    check_keys("options", options)
    build = Build(build_id or str(uuid.uuid4()))
    builtins = dict.fromkeys(BUILTINS, "")  # a build submitted from a directory, no trigger
    builtins.update(PROJECT_ID=project, BUILD_ID=build.build_id, PROJECT_NUMBER="123456789",
                    LOCATION="global", SERVICE_ACCOUNT_EMAIL=f"build@{project}.iam")  # fmt: skip
    overrides = dict(substitutions or {})
    for name in overrides:
        if not USER_NAME.fullmatch(name):
            raise BuildFailed(f"invalid substitution {name!r}: user substitutions start with _")
    user = {**config.get("substitutions", {}), **overrides}
    values = {name: str(value) for name, value in {**builtins, **user}.items()}
    loose = options.get("substitutionOption") == "ALLOW_LOOSE"
    sub = Substitution(values, loose)
    automap = options.get("automapSubstitutions", False)
    deadline = time.monotonic() + seconds_of(config.get("timeout", "600s"))
    steps = config["steps"]
    # Substitute everything first: a bad substitution fails the build before any step runs.
    planned, seen = [], set()
    for index, step in enumerate(steps):
        check_keys("a step", step)
        step_id = step.get("id", f"step-{index}")
        for waited in step.get("waitFor", []):
            if waited != "-" and waited not in seen:
                raise BuildFailed(f"invalid build: step {step_id} waits for unknown step {waited}")
        seen.add(step_id)
        planned.append({
            "id": step_id, "name": sub(step["name"]), "dir": sub(step.get("dir", "")),
            "args": [sub(arg) for arg in step.get("args", [])],
            "env": [sub(env) for env in options.get("env", []) + step.get("env", [])],
            "entrypoint": sub(step["entrypoint"]) if "entrypoint" in step else None,
            "script": step.get("script"),  # not substituted: automap hands them in as env
            "automap": step.get("automapSubstitutions", automap),
            "timeout": seconds_of(step["timeout"]) if "timeout" in step else None,
        })  # fmt: skip
        if step.get("script") and step.get("args"):
            raise BuildFailed(f"invalid build: step {step_id} has both script and args")
    images = [sub(image) for image in config.get("images", [])]
    unused = set(overrides) - sub.used
    if unused and not loose:
        raise BuildFailed(
            f"invalid build: key(s) {sorted(unused)} in the substitution data "
            "are not matched in the template"
        )
    for step in planned:
        run_step(step, workspace, docker, build, values, deadline)
    started = time.monotonic()
    for image in images:  # pushed when every step succeeded; a missing one fails the build
        if docker.run("image", "inspect", image, check=False).returncode != 0:
            raise BuildFailed(f"failed to push {image}: no such image was built")
        build.log += docker.run("push", "--quiet", image).stdout
    build.seconds["images"] = time.monotonic() - started
    return build


def run_step(step: dict, workspace: Path, docker: Docker, build: Build, values, deadline) -> None:
    name = f"cloudbuild-{build.build_id[:8]}-{step['id']}"
    command = ["run", "--rm", f"--name={name}", "--network=host",
               f"--volume={docker.socket}:/var/run/docker.sock", f"--volume={workspace}:/workspace",
               f"--workdir={(Path('/workspace') / step['dir']).as_posix()}"]  # fmt: skip
    env = {"PROJECT_ID": values["PROJECT_ID"], "BUILD_ID": build.build_id}
    if step["automap"]:
        env.update(values)
    env.update(entry.split("=", 1) for entry in step["env"])
    command += [f"--env={key}={value}" for key, value in env.items()]
    args = step["args"]
    if step["script"] is not None:
        script = step["script"]
        if not script.startswith("#!"):
            script = "#!/bin/sh\n" + script  # Cloud Build's default for a script with no #!
        scripts = workspace.parent / f"{workspace.name}-scripts"
        scripts.mkdir(exist_ok=True)
        (scripts / f"{step['id']}.sh").write_text(script)
        (scripts / f"{step['id']}.sh").chmod(0o755)
        command += [f"--volume={scripts}:/cloudbuild-scripts:ro", "--entrypoint="]
        args = [f"/cloudbuild-scripts/{step['id']}.sh"]
    elif step["entrypoint"] is not None:
        command.append(f"--entrypoint={step['entrypoint']}")
    limit = deadline - time.monotonic()
    if step["timeout"] is not None:
        limit = min(limit, step["timeout"])
    started = time.monotonic()
    try:
        result = docker.run(*command, step["name"], *args, check=False, timeout=max(limit, 0.1))
    except subprocess.TimeoutExpired as exc:
        docker.run("kill", name, check=False)
        raise BuildFailed(f"step {step['id']} timed out (TIMEOUT)\n{build.log}") from exc
    build.seconds[step["id"]] = time.monotonic() - started
    build.log += f"--- step {step['id']}\n{result.stdout}{result.stderr}"
    if result.returncode != 0:
        raise BuildFailed(
            f"step {step['id']} failed: exit {result.returncode}\n{build.log[-6000:]}"
        )

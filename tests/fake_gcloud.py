"""A fake `gcloud` for the deployment script tests, and helpers to read what it recorded.

The fake is a small program first on PATH: it appends its argv (one JSON list per line) to a
log and answers `describe`/`list` calls the way gcloud would, so each test asserts the exact
commands a script runs, and what it does with the answers. Its environment sets the canned
data:
  FAKE_GCLOUD_ABSENT          what does not exist (a service, "builds", "service-account",
                              "repository", "api", "gateway")
  FAKE_GCLOUD_FAIL            commands that fail, comma-separated, each as its leading words
                              ("api-gateway gateways update", "api-gateway api-configs delete c1")
  FAKE_GCLOUD_SPECS           a directory where `api-configs create` keeps a copy of its spec
  FAKE_GCLOUD_BUILD_MODELS    the models whose backend_v3 images `builds describe` lists
                              (default: the v2 set)
  FAKE_GCLOUD_GATEWAY_CONFIG  the config gateway baked-vision-v3 serves (default: GATEWAY_CONFIG)
  FAKE_GCLOUD_API_CONFIGS     the configs of the API, oldest first (default: GATEWAY_CONFIG);
                              `api-configs list` answers these, then those created since
  FAKE_GCLOUD_LATER_CONFIGS   configs created after this run's (another deploy's), listed last
  FAKE_GCLOUD_OTHER_GATEWAYS  "<api>/<config>" served by other gateways, comma-separated
The fake keeps what a run changes (the configs created, the gateway's config) in a state file
beside its log, reset for each run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT = ROOT / "deployment"
PROJECT = "test-project"
REGION = "northamerica-northeast1"
REGISTRY = f"{REGION}-docker.pkg.dev/{PROJECT}/baked-vision"
LATEST_BUILD = "1b2c3d4e-0000-4000-8000-00000000abcd"
BUILDER_ACCOUNT = "123456789-compute@developer.gserviceaccount.com"
# API Gateway names a gateway's config with the project's number, api-configs list with its id.
PROJECT_NUMBER = "123456789"
V2_MODELS = ("resnet152", "convnext_base", "swin_b", "vgg16")
GATEWAY_CONFIG = "baked-vision-20250101-000000"

FAKE_GCLOUD = textwrap.dedent(
    """\
    #!{python}
    # A stand-in for gcloud: log the call, answer reads from canned data.
    import json, os, sys

    args = sys.argv[1:]
    with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    STATE = os.path.join(os.path.dirname(os.environ["FAKE_GCLOUD_LOG"]), "gcloud-state.json")

    def listed(name, default=""):
        return [v for v in os.environ.get(name, default).split(",") if v]

    absent = set(listed("FAKE_GCLOUD_ABSENT"))
    words = [a for a in args if not a.startswith("-")]
    if any(" ".join(words).startswith(failing) for failing in listed("FAKE_GCLOUD_FAIL")):
        print(f"ERROR: (gcloud.{{'.'.join(words[:3])}}) failed as the test asked", file=sys.stderr)
        sys.exit(1)
    try:
        with open(STATE) as file:
            state = json.load(file)
    except FileNotFoundError:
        state = {{"created": []}}

    def save():
        with open(STATE, "w") as file:
            json.dump(state, file)

    def option(name):
        return next((a.split("=", 1)[1] for a in args if a.startswith(name + "=")), "")

    def config_name(api, config, project="{project}"):
        return f"projects/{{project}}/locations/global/apis/{{api}}/configs/{{config}}"

    def gateway_config():
        # The config gateway baked-vision-v3 serves, or None if there is no gateway.
        if "gateway" in state:
            return state["gateway"]
        if "gateway" in absent:
            return None
        return os.environ.get("FAKE_GCLOUD_GATEWAY_CONFIG", "{gateway_config}")

    if words[:3] == ["run", "services", "describe"]:
        service = words[3]
        if service in absent:
            print(f"ERROR: (gcloud.run.services.describe) Cannot find service [{{service}}]",
                  file=sys.stderr)
            sys.exit(1)
        url = f"https://{{service}}-abc123-nn.a.run.app"
        image = os.environ.get("FAKE_GCLOUD_IMAGE", "{registry}/{{image}}:deployed-{{service}}")
        image = image.format(image=service.replace("-", "_"), service=service)
        fields = option("--format")
        print(f"{{url}}\\t{{image}}" if "image" in fields else url)
    elif words[:2] == ["builds", "list"]:
        if "builds" not in absent:
            print("{latest_build}")
    elif words[:2] == ["builds", "describe"]:
        build = words[2]
        images = [
            {{"name": f"{registry}/backend_v3_{{model}}{{kind}}:{{build}}", "digest": "sha256:0"}}
            for model in listed("FAKE_GCLOUD_BUILD_MODELS", "{v2_models}")
            for kind in ("_base", "")
        ]
        print(json.dumps({{"id": build, "status": "SUCCESS", "results": {{"images": images}}}}))
    elif words[:2] == ["builds", "get-default-service-account"]:
        print("projects/{project}/serviceAccounts/{builder}")
    elif words[:3] == ["iam", "service-accounts", "describe"]:
        sys.exit(1 if "service-account" in absent else 0)
    elif words[:3] == ["artifacts", "repositories", "describe"]:
        sys.exit(1 if "repository" in absent else 0)
    elif words[:3] == ["api-gateway", "apis", "describe"]:
        sys.exit(1 if "api" in absent else 0)
    elif words[:3] == ["api-gateway", "gateways", "describe"]:
        # Asked for its hostname only once it has been created or updated.
        if "defaultHostname" in option("--format"):
            print(f"{{words[3]}}-abc123.ue.gateway.dev")
        elif gateway_config() is None:
            print(f"ERROR: (gcloud.api-gateway.gateways.describe) NOT_FOUND: {{words[3]}}",
                  file=sys.stderr)
            sys.exit(1)
        elif "apiConfig" in option("--format"):
            print(config_name(option("--api") or "baked-vision", gateway_config(),
                              "{project_number}"))
    elif words[:3] == ["api-gateway", "gateways", "list"]:
        # Every gateway of the project, whatever its API and region.
        served = [f"baked-vision/{{gateway_config()}}"] if gateway_config() else []
        for entry in served + listed("FAKE_GCLOUD_OTHER_GATEWAYS"):
            api, config = entry.split("/")
            print(config_name(api, config, "{project_number}"))
    elif words[:3] in (["api-gateway", "gateways", "create"],
                       ["api-gateway", "gateways", "update"]):
        state["gateway"] = option("--api-config")
        save()
    elif words[:3] == ["api-gateway", "api-configs", "list"]:
        configs = listed("FAKE_GCLOUD_API_CONFIGS", "{gateway_config}") + state["created"]
        for config in configs + listed("FAKE_GCLOUD_LATER_CONFIGS"):
            print(config_name(option("--api"), config))
    elif words[:3] == ["api-gateway", "api-configs", "create"]:
        state["created"].append(words[3])
        save()
        # Keep the uploaded spec: the script deletes its own copy when it ends.
        keep = os.environ.get("FAKE_GCLOUD_SPECS")
        spec = option("--openapi-spec")
        if keep:
            with open(spec) as source, open(os.path.join(keep, words[3]), "w") as kept:
                kept.write(source.read())
    """
).format(
    python=sys.executable,
    registry=REGISTRY,
    latest_build=LATEST_BUILD,
    project=PROJECT,
    project_number=PROJECT_NUMBER,
    builder=BUILDER_ACCOUNT,
    v2_models=",".join(V2_MODELS),
    gateway_config=GATEWAY_CONFIG,
)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]

    def calls_to(self, *words: str) -> list[list[str]]:
        """Give the gcloud calls whose leading words are `words`."""
        return [call for call in self.calls if call[: len(words)] == list(words)]

    def only_call_to(self, *words: str) -> list[str]:
        matching = self.calls_to(*words)
        assert len(matching) == 1, f"expected one `gcloud {' '.join(words)}`, got {self.calls}"
        return matching[0]


def fake_gcloud(tmp_path: Path) -> Callable[..., Result]:
    """Give a function running a deployment script with the fake gcloud first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(0o755)
    log = tmp_path / "gcloud.log"

    def run(script: str, *args: str, **env: str) -> Result:
        log.write_text("")
        (tmp_path / "gcloud-state.json").unlink(missing_ok=True)
        environment = {
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(tmp_path),
            "FAKE_GCLOUD_LOG": str(log),
            "PROJECT_ID": PROJECT,
            **env,
        }
        done = subprocess.run(
            [str(DEPLOYMENT / script), *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return Result(done.returncode, done.stdout, done.stderr, calls)

    return run


def flag(call: list[str], name: str) -> str:
    """Give the value of `--name=value` in a call (exactly one occurrence)."""
    values = [a.split("=", 1)[1] for a in call if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} in {call}"
    return values[0]


def env_vars(call: list[str]) -> dict[str, str]:
    """Give --set-env-vars as a dict, read as gcloud does (`^DELIM^` sets another delimiter)."""
    value, delimiter = flag(call, "set-env-vars"), ","
    if match := re.match(r"\^([^^]+)\^", value):
        value, delimiter = value[match.end() :], match.group(1)
    return dict(pair.split("=", 1) for pair in value.split(delimiter))


def dry_run_commands(stdout: str) -> list[list[str]]:
    """Give the commands a --dry-run printed, as argv lists."""
    return [
        shlex.split(line.removeprefix("[dry-run] "))
        for line in stdout.splitlines()
        if line.startswith("[dry-run] ")
    ]

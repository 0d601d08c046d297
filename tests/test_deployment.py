"""`python3 -m deployment`: the plan, real gcloud's parser, failures, and the Cloud Build files.

gcloud's own argument parser runs offline: a command it parses stops at "no active account"
(no credentials here), one it cannot parse stops at the parser. The deployment is run against
a fake gcloud on PATH that records what it is asked and answers from a table; the Cloud Build
files themselves are run for real in tests/test_cloudbuild_scenarios.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from deployment import spec
from runtime.timing import TIMING

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = ROOT / "deployment"
VARIANTS = ["v1", "v2", "v3"]
PARSED = "do not currently have an active account"  # gcloud got past its parser

FAKE_GCLOUD = r"""#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
line = " ".join(args)
for rule in json.load(open(os.environ["FAKE_GCLOUD_RULES"])):
    if all(part in line for part in rule["when"]):
        sys.stdout.write(rule.get("out", ""))
        sys.stderr.write(rule.get("err", ""))
        sys.exit(rule.get("exit", 0))
"""


def deployment(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployment", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def plan(*args: str) -> list[list[str]]:
    """The gcloud commands `plan` prints, as argument lists."""
    result = deployment("plan", *args, "--project", "my-project")
    assert result.returncode == 0, result.stderr
    return [
        shlex.split(line.split("  # ")[0])[1:]
        for line in result.stdout.splitlines()
        if line.startswith("gcloud ")
    ]


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    """Put a fake gcloud first on PATH; give (set its answers, read what it was asked)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log, rules = tmp_path / "gcloud.log", tmp_path / "rules.json"
    log.touch()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_GCLOUD_LOG": str(log),
        "FAKE_GCLOUD_RULES": str(rules),
    }

    def answer(*table: dict) -> dict[str, str]:
        defaults = [
            {"when": ["builds list"], "out": "build-7\n"},
            {"when": ["run services describe"], "out": "https://svc-abc.a.run.app\n"},
            {"when": ["gateways describe", "defaultHostname"], "out": "gw-1.ue.gateway.dev\n"},
        ]
        rules.write_text(json.dumps([*table, *defaults]))
        return env

    def asked() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    return answer, asked


# --- the plan ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("access", [[], ["--private"], ["--public-access", "no-iam-check"]])
def test_every_run_deploy_says_who_may_call_it(variant, access):
    commands = plan(variant, *access)
    deploys = [c for c in commands if c[:2] == ["run", "deploy"]]
    grants = {
        (c[3], c[-3]) for c in commands if c[:3] == ["run", "services", "add-iam-policy-binding"]
    }
    assert deploys
    for command in deploys:
        service = command[2]
        flags = {f for f in command if "invoker-iam-check" in f or "allow-unauth" in f}
        private = service.startswith("backend") and ("--private" in access or variant == "v3")
        if private:  # the same two flags wherever a service is private
            assert flags == {"--no-allow-unauthenticated", "--invoker-iam-check"}, service
            assert (service, "--member=allUsers") not in grants
        elif "no-iam-check" in access:
            assert flags == {"--no-invoker-iam-check"}, service
            assert (service, "--member=allUsers") not in grants
        else:  # allUsers is a grant of its own, which fails loudly when refused
            assert flags == {"--invoker-iam-check"}, service
            assert (service, "--member=allUsers") in grants
    if "--private" in access and variant != "v3":
        frontend = next(c for c in deploys if c[2].startswith("frontend"))
        assert "BACKEND_AUTH=id_token" in next(f for f in frontend if f.startswith("--set-env"))
        member = "--member=serviceAccount:baked-vision-frontend@my-project.iam.gserviceaccount.com"
        assert (f"backend-{variant}", member) in grants


@pytest.mark.parametrize("variant", VARIANTS)
def test_deadlines_in_the_plan_come_from_the_timing_budget(variant):
    deploys = [c for c in plan(variant) if c[:2] == ["run", "deploy"]]
    for command in deploys:
        probe = next(f for f in command if f.startswith("--startup-probe="))
        assert f"periodSeconds={TIMING.probe_s},timeoutSeconds={TIMING.probe_s}" in probe
        assert f"failureThreshold={TIMING.startup_probes}" in probe
        if command[2].startswith("backend"):
            assert f"--timeout={TIMING.request_timeout_s}" in command
    from deployment.gateway import DEADLINE_S

    assert DEADLINE_S == TIMING.gateway_deadline_s == TIMING.request_timeout_s


def test_builds_run_as_the_build_account_which_has_only_what_it_needs():
    commands = plan("v1")
    account = "baked-vision-build@my-project.iam.gserviceaccount.com"
    for submit in (c for c in commands if c[:2] == ["builds", "submit"]):
        assert f"--service-account=projects/my-project/serviceAccounts/{account}" in submit
        config = yaml.safe_load(
            (ROOT / next(f for f in submit if f.startswith("--config="))[9:]).read_text()
        )
        assert config["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    roles = {
        next(f for f in c if f.startswith("--role="))
        for c in commands
        if f"--member=serviceAccount:{account}" in c
    }
    assert roles == {
        "--role=roles/logging.logWriter",
        "--role=roles/storage.objectViewer",
        "--role=roles/artifactregistry.writer",
    }
    act_as = [c for c in commands if c[:3] == ["iam", "service-accounts", "add-iam-policy-binding"]]
    assert any(account in c and "--role=roles/iam.serviceAccountUser" in c for c in act_as)


@pytest.mark.slow
def test_every_planned_command_passes_real_gclouds_parser(tmp_path):
    if not shutil.which("gcloud"):
        pytest.fail("gcloud is not installed: scripts/install-system-packages.sh installs it")
    commands = {tuple(c) for v in VARIANTS for a in ([], ["--private"]) for c in plan(v, *a)}
    # What finding 1 was: a comma inside a value, without another delimiter.
    models = deployment("build", "backend_v3", "--models", "small", "--dry-run", "--project", "p")
    commands |= {tuple(shlex.split(models.stdout.strip())[1:])}
    assert any("resnet18,mobilenet_v3_large" in " ".join(c) for c in commands)
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}

    def parse(command: tuple[str, ...]) -> str:
        done = subprocess.run(
            ["gcloud", *command], capture_output=True, text=True, env=env, timeout=60
        )
        parsed = PARSED in done.stderr or done.returncode == 0  # (config get-value: local)
        return "" if parsed else f"{shlex.join(command)}\n{done.stderr}"

    # One command of each shape (the words and the flags' names): gcloud takes ~1 s each.
    shapes = {
        (c[:3], frozenset(a.split("=")[0] for a in c if a.startswith("--"))): c for c in commands
    }
    with ThreadPoolExecutor(4) as pool:
        refused = [error for error in pool.map(parse, sorted(shapes.values())) if error]
    assert not refused, "\n".join(refused)
    # and the check would catch the old form
    old = subprocess.run(
        ["gcloud", "builds", "submit", ".", "--substitutions=_REGISTRY=r,_MODELS=a,b"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert "Bad syntax for dict arg" in old.stderr


def test_substitutions_keep_commas_and_at_signs():
    from deployment.ops import substitutions_flag

    values = {"_MODELS": "a,b", "_PYTHON_IMAGE": "python:3.11-slim@sha256:ab", "_X": "a|b"}
    flag = substitutions_flag(values)
    delimiter = re.match(r"--substitutions=\^(.)\^", flag).group(1)
    pairs = flag.split("^", 2)[2].split(delimiter)
    assert dict(pair.split("=", 1) for pair in pairs) == values


# --- running it -------------------------------------------------------------------------------
def test_deploy_runs_the_plan_it_prints(fake_gcloud):
    answer, asked = fake_gcloud
    result = deployment("deploy", "v1", "--project", "p", env=answer())
    assert result.returncode == 0, result.stderr
    printed, _, ran_text = result.stdout.partition("\nRunning:\n")
    shown = [
        shlex.split(line.split("  # ")[0])[1:]
        for line in ran_text.splitlines()
        if line.startswith("gcloud ")
    ]
    assert asked() == shown  # every command printed before it ran, none unprinted
    planned = [line.split("  # ")[0] for line in printed.splitlines() if line.startswith("gcloud")]
    assert len(planned) == len(shown)
    assert "page: https://svc-abc.a.run.app" in ran_text


def test_a_refused_allusers_grant_fails_the_deploy_and_says_what_to_do(fake_gcloud):
    answer, asked = fake_gcloud
    refusal = (
        "ERROR: (gcloud.run.services.add-iam-policy-binding) FAILED_PRECONDITION: One or more "
        "users named in the policy do not belong to a permitted customer.\n"
    )
    env = answer(
        {"when": ["add-iam-policy-binding", "--member=allUsers"], "exit": 1, "err": refusal}
    )
    result = deployment("deploy", "v1", "--only", "backend", "--project", "p", env=env)
    assert result.returncode == 1
    assert "permitted customer" in result.stderr
    assert "--public-access no-iam-check" in result.stderr
    # the fix it names works: no allUsers binding at all
    before = len(asked())
    result = deployment(
        "deploy",
        "v1",
        "--only",
        "backend",
        "--project",
        "p",
        "--public-access",
        "no-iam-check",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not any("--member=allUsers" in c for c in asked()[before:])


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        (
            "PERMISSION_DENIED: Cloud Run Admin API has not been used in project p",
            "setup --project p",
        ),
        ("RESOURCE_EXHAUSTED: Quota exceeded for quota metric", "quotas?project=p"),
        (
            "PERMISSION_DENIED: Permission 'iam.serviceAccounts.actAs' denied",
            "roles/iam.serviceAccountUser",
        ),
    ],
)
def test_a_failure_stops_with_the_command_that_fixes_it(fake_gcloud, error, fix):
    answer, asked = fake_gcloud
    env = answer({"when": ["run deploy"], "exit": 1, "err": f"ERROR: {error}\n"})
    result = deployment("deploy", "v2", "--project", "p", env=env)
    assert result.returncode == 1
    assert "failed: gcloud run deploy backend-v2" in result.stderr and fix in result.stderr
    assert [c[:2] for c in asked()].count(["run", "deploy"]) == 1  # nothing after it ran


def test_v3_refuses_a_build_without_a_model_before_changing_anything(fake_gcloud):
    answer, asked = fake_gcloud
    env = answer({"when": ["images describe", "backend_v3_vgg16"], "exit": 1, "err": "NOT_FOUND\n"})
    result = deployment("deploy", "v3", "--project", "p", "--build-id", "b1", env=env)
    assert result.returncode == 1 and "backend_v3_vgg16:b1" in result.stderr
    assert not any(c[:2] == ["run", "deploy"] for c in asked())


def test_v3_publishes_the_gateway_and_prunes_unused_configs(fake_gcloud):
    answer, asked = fake_gcloud
    configs = "".join(
        f"projects/p/locations/global/apis/baked-vision/configs/baked-vision-2026010{i}-000000\n"
        for i in range(1, 5)
    )
    env = answer(
        {"when": ["gateways describe", "apiConfig"], "out": configs.splitlines()[2] + "\n"},
        {"when": ["gateways list"], "out": configs.splitlines()[2] + "\n"},
        {"when": ["api-configs list"], "out": configs},
    )
    result = deployment("deploy", "v3", "--project", "p", "--only", "backend", env=env)
    assert result.returncode == 0, result.stderr
    commands = asked()
    assert any(c[:3] == ["api-gateway", "gateways", "update"] for c in commands)
    deleted = [c[3] for c in commands if c[:3] == ["api-gateway", "api-configs", "delete"]]
    assert deleted == [
        "baked-vision-20260101-000000",
        "baked-vision-20260102-000000",
        "baked-vision-20260104-000000",
    ]
    assert "rollback: gcloud api-gateway gateways update" in result.stdout
    create = next(c for c in commands if c[:3] == ["api-gateway", "api-configs", "create"])
    uploaded = json.loads(Path(create[6].removeprefix("--openapi-spec=")).read_text())
    validate(uploaded)  # a valid Swagger 2.0 document, routing every model to its service
    assert {p for p in uploaded["paths"] if p.startswith("/model/")} == {
        f"/model/{m}/predict" for m in spec.models_of("v2")
    }


def test_deliverables_are_written_from_what_is_deployed(fake_gcloud, tmp_path):
    answer, _ = fake_gcloud
    image = "r/p/baked-vision/backend_v1:b-42"
    env = answer(
        {
            "when": ["describe backend-v1", "value(status.url"],
            "out": f"https://b1.run.app\t{image}\n",
        },
        {"when": ["describe", "-v2"], "exit": 1, "err": "ERROR: NOT_FOUND: service\n"},
    )
    output = tmp_path / "deliverables.yaml"
    result = deployment("deliverables", "--project", "p", "--output", str(output), env=env)
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load(output.read_text())
    assert written["backend_v1"] == {"build_id": "b-42", "service_url": "https://b1.run.app"}
    assert written["backend_v2"] == {"build_id": "", "service_url": ""}


def test_an_old_python_is_told_what_it_needs():
    code = (
        "import sys, runpy; sys.version_info = (3, 9, 18); "
        "runpy.run_module('deployment', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "needs Python 3.11 or newer" in result.stderr


# --- the files users run ----------------------------------------------------------------------
def test_scripts_are_posix_sh_wrappers_that_any_mac_runs():
    """No bash 4 on macOS (3.2): the user-side scripts are POSIX sh, checked by dash."""
    scripts = sorted(DEPLOYMENT.glob("*.sh"))
    assert {s.name for s in scripts} >= {
        f"{verb}_{c}.sh"
        for verb, cs in (
            ("submit_build", ["backend_v1", "backend_v2", "frontend_v1", "frontend_v2"]),
            ("deploy", ["backend_v1", "backend_v2", "frontend_v1", "frontend_v2"]),
        )
        for c in cs
    }
    dash = shutil.which("dash") or pytest.fail("dash is missing (Debian's /bin/sh)")
    for script in scripts:
        assert script.read_text().startswith("#!/bin/sh\n"), script
        assert subprocess.run([dash, "-n", str(script)]).returncode == 0, script
        helped = subprocess.run([dash, str(script), "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and "usage: python3 -m deployment" in helped.stdout, script


CLOUDBUILD = sorted(DEPLOYMENT.glob("cloudbuild_*.yaml"))


def test_the_deliverable_cloud_build_files_are_there_and_thin():
    names = {p.name for p in CLOUDBUILD}
    assert names == {
        f"cloudbuild_{c}.yaml"
        for c in ["backend_v1", "backend_v2", "backend_v3", "frontend_v1", "frontend_v2"]
    }
    for path in CLOUDBUILD:
        assert len(path.read_text().splitlines()) <= 60, path  # one screen


@pytest.mark.parametrize("path", CLOUDBUILD, ids=lambda p: p.name)
def test_cloud_build_file_substitutions_and_build_args_agree(path):
    config = yaml.safe_load(path.read_text())
    text = path.read_text().split("\nsubstitutions:")[0]
    used = set(re.findall(r"(?<!\$)\$\{(_[A-Z_]+)\}", text))
    assert used == set(config["substitutions"]), "each substitution declared is used, and back"
    assert config["timeout"].endswith("s") and config["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert all(re.fullmatch(r"[a-z-]+", step["id"]) for step in config["steps"])
    # Google's mirror of Docker Hub: no anonymous pull limits; the Dockerfiles' default is the same
    python = config["substitutions"]["_PYTHON_IMAGE"]
    assert python.startswith("mirror.gcr.io/")
    base_files = set(re.findall(r"docker/[\w-]+-(?:base|bake)\.Dockerfile", text))
    for dockerfile in base_files:
        assert f"ARG PYTHON_IMAGE={python}\n" in (ROOT / dockerfile).read_text()
    # --build-arg=NAME=${_NAME}: each name an ARG of the Dockerfiles base.sh builds (the base's
    # and, for the backend, the bake image's: base.sh passes both the same arguments)
    declared = set()
    for dockerfile in base_files:
        declared |= set(re.findall(r"^ARG (\w+)", (ROOT / dockerfile).read_text(), re.M))
    passed = set(re.findall(r"--build-arg=\"?(\w+)=", text)) - {"BASE_IMAGE_URI"}
    assert passed <= declared, (base_files, passed - declared)
    assert {f"_{a}" for a in passed if a != "MODELS"} <= set(config["substitutions"])
    for step in config["steps"]:
        for arg in step.get("args", []):
            for relative in re.findall(
                r"(?:deployment|docker)/[\w./-]+\.(?:sh|Dockerfile|txt)", arg
            ):
                assert (ROOT / relative).exists(), relative


def test_v3_builds_the_catalogs_v2_set_by_default():
    config = yaml.safe_load((DEPLOYMENT / "cloudbuild_backend_v3.yaml").read_text())
    assert config["substitutions"]["_MODELS"].split(",") == spec.models_of("v2")


def test_a_users_catalog_is_read_on_top_of_the_built_in_one(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text(
        '[sets]\nv3 = ["flowers", "resnet18"]\n'
        '[models.flowers]\narchitecture = "resnet18"\nfile = "flowers.pt"\n'
    )
    assert spec.models_of("v3", mine) == ["flowers", "resnet18"]  # its set, a built-in id in it
    assert spec.models_of("flowers,v1", mine) == ["flowers", *spec.models_of("v1")]
    with pytest.raises(ValueError, match=r"unknown model 'tulips'.*flowers"):
        spec.models_of("tulips", mine)


def test_the_spec_agrees_with_itself():
    spec.check()


@pytest.mark.parametrize("path", CLOUDBUILD, ids=lambda p: p.name)
def test_cloud_build_file_matches_cloud_builds_schema(path):
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.cloudbuild", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""The deployment scripts, run for real against a fake `gcloud` that records every call.

The fake (tests/fake_gcloud.py) is a small program first on PATH: it appends its argv (one JSON
list per line) to a log and answers `describe`/`list` calls the way gcloud would, so each test
asserts the exact commands a script runs, and what it does with the answers.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fake_gcloud import (
    BUILDER_ACCOUNT,
    DEPLOYMENT,
    LATEST_BUILD,
    PROJECT,
    REGION,
    REGISTRY,
    ROOT,
    dry_run_commands,
    env_vars,
    fake_gcloud,
    flag,
)

FRONTEND_ACCOUNT = f"baked-vision-frontend@{PROJECT}.iam.gserviceaccount.com"
IMAGES = ["backend_v1", "backend_v2", "frontend_v1", "frontend_v2"]
RUNNABLE = [
    *(f"submit_build_{image}.sh" for image in IMAGES),
    *(f"deploy_{image}.sh" for image in IMAGES),
    "setup_gcp.sh",
    "fill_deliverables.sh",
]


@pytest.fixture
def gcloud(tmp_path):
    """Run a deployment script with the fake gcloud first on PATH; give its Result."""
    return fake_gcloud(tmp_path)


# --- every script ----------------------------------------------------------------------------


@pytest.mark.parametrize("script", RUNNABLE)
def test_help_prints_usage_and_calls_nothing(gcloud, script):
    result = gcloud(script, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")
    assert "--dry-run" in result.stdout
    assert result.calls == []


@pytest.mark.parametrize("script", RUNNABLE)
def test_unknown_flag_exits_2_with_a_message_on_stderr(gcloud, script):
    result = gcloud(script, "--frobnicate")
    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr
    assert result.stdout == ""
    assert result.calls == []


@pytest.mark.parametrize("script", RUNNABLE)
def test_missing_project_is_a_clear_error(gcloud, script):
    result = gcloud(script, PROJECT_ID="")
    assert result.returncode == 1
    assert "error: PROJECT_ID is not set" in result.stderr
    assert "config.env" in result.stderr
    assert result.calls == []


@pytest.mark.parametrize("script", ["deploy_backend_v1.sh", "submit_build_frontend_v2.sh"])
def test_missing_config_file_is_a_clear_error(gcloud, script, tmp_path):
    result = gcloud(script, DEPLOY_CONFIG=str(tmp_path / "nope.env"))
    assert result.returncode == 1
    assert f"config file not found: {tmp_path / 'nope.env'}" in result.stderr
    assert result.calls == []


@pytest.mark.parametrize(
    "script", ["deploy_backend_v2.sh", "deploy_frontend_v1.sh", "setup_gcp.sh"]
)
def test_dry_run_prints_every_command_and_runs_none(gcloud, script):
    result = gcloud(script, "--dry-run", "--private" if "deploy" in script else "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.calls == []
    commands = dry_run_commands(result.stdout)
    assert commands and all(command[0] == "gcloud" for command in commands)


def test_shared_config_sets_the_assignment_region_and_a_valid_repository():
    config = (DEPLOYMENT / "config.env").read_text()
    assert 'REGION="${REGION:-northamerica-northeast1}"' in config
    repository = re.search(r'REPOSITORY="\$\{REPOSITORY:-([^}]*)\}"', config).group(1)
    # Artifact Registry repository ids: lowercase letters, digits and hyphens.
    assert re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", repository)


# --- submit_build_*.sh -----------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_submit_build_sends_the_repository_with_its_cloudbuild_file(gcloud, image):
    result = gcloud(f"submit_build_{image}.sh")
    assert result.returncode == 0, result.stderr
    call = result.only_call_to("builds", "submit")
    assert call[2] == str(ROOT)
    assert flag(call, "config") == str(DEPLOYMENT / f"cloudbuild_{image}.yaml")
    assert flag(call, "project") == PROJECT
    assert flag(call, "region") == "global"
    assert flag(call, "substitutions") == (
        f"_REGISTRY={REGION}-docker.pkg.dev,_REPOSITORY=baked-vision"
    )
    assert "--async" not in call
    assert len(result.calls) == 1


def test_submit_build_async_and_extra_substitutions(gcloud):
    result = gcloud(
        "submit_build_backend_v1.sh",
        "--async",
        EXTRA_SUBSTITUTIONS="_MODELS=small",
        REPOSITORY="other-repo",
    )
    assert result.returncode == 0, result.stderr
    call = result.only_call_to("builds", "submit")
    assert "--async" in call
    assert flag(call, "substitutions").endswith(",_REPOSITORY=other-repo,_MODELS=small")


def test_submit_build_dry_run_prints_the_same_command(gcloud):
    real = gcloud("submit_build_frontend_v1.sh").only_call_to("builds", "submit")
    dry = gcloud("submit_build_frontend_v1.sh", "--dry-run")
    assert dry.calls == []
    assert dry_run_commands(dry.stdout) == [["gcloud", *real]]


# --- deploy_backend_*.sh ---------------------------------------------------------------------


@pytest.mark.parametrize(("version", "memory", "cpu"), [("v1", "1536Mi", "1"), ("v2", "3Gi", "2")])
def test_deploy_backend_runs_the_latest_build_with_its_sizing(gcloud, version, memory, cpu):
    result = gcloud(f"deploy_backend_{version}.sh")
    assert result.returncode == 0, result.stderr

    lookup = result.only_call_to("builds", "list")
    assert flag(lookup, "filter") == f"status=SUCCESS AND tags=backend_{version}"
    assert flag(lookup, "sort-by") == "~createTime"
    assert flag(lookup, "limit") == "1"

    deploy = result.only_call_to("run", "deploy")
    assert deploy[2] == f"backend-{version}"
    assert flag(deploy, "image") == f"{REGISTRY}/backend_{version}:{LATEST_BUILD}"
    assert flag(deploy, "region") == REGION
    assert flag(deploy, "project") == PROJECT
    assert flag(deploy, "port") == "8080"
    assert flag(deploy, "memory") == memory
    assert flag(deploy, "cpu") == cpu
    assert flag(deploy, "concurrency") == "8"
    assert "--cpu-boost" in deploy
    probe = dict(kv.split("=") for kv in flag(deploy, "startup-probe").split(","))
    assert probe["httpGet.path"] == "/ready"  # not /readyz: Cloud Run keeps paths ending in z
    assert probe["httpGet.port"] == "8080"
    budget = int(probe["periodSeconds"]) * int(probe["failureThreshold"])
    assert budget == 30  # ~9x the slowest start measured (benchmarks/RESULTS.md)
    assert int(probe["timeoutSeconds"]) <= int(probe["periodSeconds"])
    # A first request to a starting instance waits for the start, then its own work (up to 15 s
    # for room in the pixel budget, an image URL's 8 s deadline, the decode and the forward
    # pass): it never times out within the budget.
    assert budget + 25 <= int(flag(deploy, "timeout")) == 60
    assert env_vars(deploy) == {
        "MODELS": version,
        "GUNICORN_THREADS": "8",
        "GOOGLE_CLOUD_PROJECT": PROJECT,  # full trace names in the logs
    }
    assert "--allow-unauthenticated" in deploy
    assert "--no-allow-unauthenticated" not in deploy


def test_timeouts_that_do_not_fit_are_refused_before_deploying(gcloud):
    result = gcloud("deploy_backend_v1.sh", STARTUP_BUDGET_SECONDS="55")
    assert result.returncode == 1
    assert "STARTUP_BUDGET_SECONDS=55" in result.stderr
    assert "BACKEND_REQUEST_TIMEOUT_SECONDS=60" in result.stderr
    assert result.calls_to("run", "deploy") == []
    # 55 s of start and 25 s of the request's own work (lib/cloud_run.sh) fit in 80 s.
    longer = gcloud("deploy_backend_v1.sh", STARTUP_BUDGET_SECONDS="55",
                    BACKEND_REQUEST_TIMEOUT_SECONDS="80")  # fmt: skip
    assert longer.returncode == 0, longer.stderr
    assert flag(longer.only_call_to("run", "deploy"), "timeout") == "80"


def test_every_deadline_in_front_of_a_starting_backend_waits_for_its_start():
    """The v3 gateway and the page wait at least as long as a first request may take."""
    import importlib.util

    from frontend.config import FrontendConfig

    spec = importlib.util.spec_from_file_location("gateway", DEPLOYMENT / "gateway.py")
    gateway = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gateway)

    config = (DEPLOYMENT / "config.env").read_text()

    def default(name: str) -> int:
        return int(re.search(rf'{name}="\$\{{{name}:-(\d+)\}}"', config).group(1))

    first_request = default("STARTUP_BUDGET_SECONDS") + 10
    assert first_request <= default("BACKEND_REQUEST_TIMEOUT_SECONDS")
    assert default("BACKEND_REQUEST_TIMEOUT_SECONDS") <= gateway.DEADLINE_S
    assert FrontendConfig.timeout_s >= first_request


@pytest.mark.parametrize("script", ["deploy_frontend_v1.sh", "deploy_backend_v2.sh"])
def test_where_allusers_is_forbidden_public_services_skip_the_invoker_check(gcloud, script):
    result = gcloud(script, PUBLIC_ACCESS="no-iam-check")
    assert result.returncode == 0, result.stderr
    deploy = result.only_call_to("run", "deploy")
    assert "--no-invoker-iam-check" in deploy
    assert "--allow-unauthenticated" not in deploy


def test_an_unknown_public_access_is_refused(gcloud):
    result = gcloud("deploy_frontend_v1.sh", PUBLIC_ACCESS="everyone")
    assert result.returncode == 1
    assert "PUBLIC_ACCESS='everyone'" in result.stderr and "no-iam-check" in result.stderr
    assert result.calls_to("run", "deploy") == []


def test_deploy_port_is_the_port_the_images_expose(gcloud):
    deploy = gcloud("deploy_backend_v1.sh").only_call_to("run", "deploy")
    for dockerfile in ("backend.Dockerfile", "frontend.Dockerfile"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert f"EXPOSE {flag(deploy, 'port')}" in text
        assert f"ENV PORT={flag(deploy, 'port')}" in text


def test_deploy_backend_pins_a_given_build_and_follows_the_thread_count(gcloud):
    result = gcloud("deploy_backend_v2.sh", "--build-id", "my-build", BACKEND_THREADS="4")
    assert result.returncode == 0, result.stderr
    assert result.calls_to("builds", "list") == []
    deploy = result.only_call_to("run", "deploy")
    assert flag(deploy, "image") == f"{REGISTRY}/backend_v2:my-build"
    assert flag(deploy, "concurrency") == "4"
    assert env_vars(deploy)["GUNICORN_THREADS"] == "4"


def test_deploy_backend_private_refuses_unauthenticated_calls(gcloud):
    result = gcloud("deploy_backend_v1.sh", "--private", "--build-id=b1")
    assert result.returncode == 0, result.stderr
    deploy = result.only_call_to("run", "deploy")
    assert "--no-allow-unauthenticated" in deploy
    assert "--allow-unauthenticated" not in deploy


def test_deploy_without_any_build_says_to_submit_one(gcloud):
    result = gcloud("deploy_backend_v1.sh", FAKE_GCLOUD_ABSENT="builds")
    assert result.returncode == 1
    assert "no successful build of backend_v1" in result.stderr
    assert "submit_build_backend_v1.sh" in result.stderr
    assert result.calls_to("run", "deploy") == []


def test_deploy_build_id_needs_a_value(gcloud):
    result = gcloud("deploy_backend_v1.sh", "--build-id")
    assert result.returncode == 2
    assert "--build-id needs a build id" in result.stderr


def test_deploy_dry_run_prints_the_same_deploy_command(gcloud):
    real = gcloud("deploy_backend_v2.sh", "--build-id", "b7").only_call_to("run", "deploy")
    dry = gcloud("deploy_backend_v2.sh", "--build-id", "b7", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.calls == []
    assert dry_run_commands(dry.stdout) == [["gcloud", *real]]


# --- deploy_frontend_*.sh --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_deploy_frontend_points_at_the_deployed_backend(gcloud, version):
    result = gcloud(f"deploy_frontend_{version}.sh")
    assert result.returncode == 0, result.stderr

    describe = result.only_call_to("run", "services", "describe")
    assert describe[3] == f"backend-{version}"
    assert flag(describe, "format") == "value(status.url)"
    assert flag(describe, "region") == REGION

    deploy = result.only_call_to("run", "deploy")
    assert deploy[2] == f"frontend-{version}"
    assert flag(deploy, "image") == f"{REGISTRY}/frontend_{version}:{LATEST_BUILD}"
    assert flag(deploy, "port") == "8080"
    assert env_vars(deploy) == {
        "SERVING_URL": f"https://backend-{version}-abc123-nn.a.run.app",
        "FRONTEND_MODE": version,
    }
    assert "httpGet.path=/_stcore/health" in flag(deploy, "startup-probe")
    assert "--cpu-boost" in deploy
    assert "--session-affinity" in deploy
    assert "--allow-unauthenticated" in deploy
    assert not [a for a in deploy if a.startswith("--service-account")]
    assert result.calls_to("run", "services", "add-iam-policy-binding") == []


def test_deploy_frontend_private_runs_as_the_only_invoker_of_the_backend(gcloud):
    result = gcloud("deploy_frontend_v2.sh", "--private")
    assert result.returncode == 0, result.stderr

    binding = result.only_call_to("run", "services", "add-iam-policy-binding")
    assert binding[3] == "backend-v2"
    assert flag(binding, "member") == f"serviceAccount:{FRONTEND_ACCOUNT}"
    assert flag(binding, "role") == "roles/run.invoker"
    assert flag(binding, "region") == REGION

    deploy = result.only_call_to("run", "deploy")
    assert flag(deploy, "service-account") == FRONTEND_ACCOUNT
    assert env_vars(deploy) == {
        "SERVING_URL": "https://backend-v2-abc123-nn.a.run.app",
        "FRONTEND_MODE": "v2",
        "BACKEND_AUTH": "id_token",
    }
    # The page itself stays public; only the backend is private.
    assert "--allow-unauthenticated" in deploy
    # The account existed: nothing created.
    assert result.calls_to("iam", "service-accounts", "create") == []
    # The binding is in place before the frontend that relies on it starts.
    assert result.calls.index(binding) < result.calls.index(deploy)


def test_deploy_frontend_private_creates_its_service_account_when_missing(gcloud):
    result = gcloud("deploy_frontend_v1.sh", "--private", FAKE_GCLOUD_ABSENT="service-account")
    assert result.returncode == 0, result.stderr
    create = result.only_call_to("iam", "service-accounts", "create")
    assert create[3] == "baked-vision-frontend"
    assert flag(create, "project") == PROJECT


def test_deploy_frontend_needs_its_backend_first(gcloud):
    result = gcloud("deploy_frontend_v1.sh", FAKE_GCLOUD_ABSENT="backend-v1")
    assert result.returncode != 0
    assert result.calls_to("run", "deploy") == []


def test_deploy_frontend_extra_env_is_added(gcloud):
    result = gcloud("deploy_frontend_v2.sh", FRONTEND_EXTRA_ENV="APP_MODE=v2")
    deploy = result.only_call_to("run", "deploy")
    assert env_vars(deploy)["APP_MODE"] == "v2"
    assert "SERVING_URL" in env_vars(deploy)


# --- setup_gcp.sh ----------------------------------------------------------------------------


def test_setup_enables_the_apis_and_creates_a_missing_repository(gcloud):
    result = gcloud("setup_gcp.sh", FAKE_GCLOUD_ABSENT="repository,service-account")
    assert result.returncode == 0, result.stderr

    enable = result.only_call_to("services", "enable")
    assert {
        "run.googleapis.com",
        "cloudbuild.googleapis.com",
        "artifactregistry.googleapis.com",
        "apigateway.googleapis.com",
        "servicecontrol.googleapis.com",
        "servicemanagement.googleapis.com",
    } <= set(enable)

    create = result.only_call_to("artifacts", "repositories", "create")
    assert create[3] == "baked-vision"
    assert flag(create, "repository-format") == "docker"
    assert flag(create, "location") == REGION

    _assert_build_account_grants(result, BUILDER_ACCOUNT)
    result.only_call_to("iam", "service-accounts", "create")


def _assert_build_account_grants(result, account: str) -> None:
    """What a build needs on a fresh organisation project, where its account has no role."""
    # The project role Cloud Build's legacy account holds: read the uploaded source
    # (gs://PROJECT_cloudbuild), write build logs. Unconditional, on this project only.
    [builder] = result.calls_to("projects", "add-iam-policy-binding")
    assert builder[2] == PROJECT
    assert flag(builder, "member") == f"serviceAccount:{account}"
    assert flag(builder, "role") == "roles/cloudbuild.builds.builder"
    assert flag(builder, "condition") == "None"
    # Pull the caches and push the images: on the repository alone, not the project.
    writer = result.only_call_to("artifacts", "repositories", "add-iam-policy-binding")
    assert writer[3] == "baked-vision" and flag(writer, "location") == REGION
    assert flag(writer, "member") == f"serviceAccount:{account}"
    assert flag(writer, "role") == "roles/artifactregistry.writer"


def test_setup_dry_run_shows_each_grant_of_the_build_account(gcloud):
    result = gcloud(
        "setup_gcp.sh", "--dry-run", CLOUD_BUILD_SERVICE_ACCOUNT="b@p.iam.gserviceaccount.com"
    )
    assert result.returncode == 0 and result.calls == []
    grants = [c for c in dry_run_commands(result.stdout) if "add-iam-policy-binding" in c]
    roles = sorted(flag(c, "role") for c in grants)
    assert roles == ["roles/artifactregistry.writer", "roles/cloudbuild.builds.builder"]
    assert all(flag(c, "member") == "serviceAccount:b@p.iam.gserviceaccount.com" for c in grants)


def test_setup_is_idempotent(gcloud):
    result = gcloud("setup_gcp.sh")
    assert result.returncode == 0, result.stderr
    assert result.calls_to("artifacts", "repositories", "create") == []
    assert result.calls_to("iam", "service-accounts", "create") == []


def test_setup_uses_a_configured_build_service_account(gcloud):
    result = gcloud("setup_gcp.sh", CLOUD_BUILD_SERVICE_ACCOUNT="builder@p.iam.gserviceaccount.com")
    assert result.calls_to("builds", "get-default-service-account") == []
    _assert_build_account_grants(result, "builder@p.iam.gserviceaccount.com")


# --- fill_deliverables.sh --------------------------------------------------------------------


def test_fill_deliverables_writes_each_services_build_and_url(gcloud, tmp_path):
    output = tmp_path / "deliverables.yaml"
    result = gcloud("fill_deliverables.sh", "--output", str(output))
    assert result.returncode == 0, result.stderr
    filled = yaml.safe_load(output.read_text())
    assert list(filled) == ["backend_v1", "frontend_v1", "backend_v2", "frontend_v2"]
    for image, entry in filled.items():
        service = image.replace("_", "-")
        assert entry == {
            "build_id": f"deployed-{service}",
            "service_url": f"https://{service}-abc123-nn.a.run.app",
        }
    assert len(result.calls_to("run", "services", "describe")) == 4


def test_fill_deliverables_leaves_undeployed_services_empty(gcloud, tmp_path):
    output = tmp_path / "deliverables.yaml"
    result = gcloud("fill_deliverables.sh", f"--output={output}", FAKE_GCLOUD_ABSENT="frontend-v2")
    assert result.returncode == 0, result.stderr
    assert "frontend-v2 is not deployed" in result.stderr
    filled = yaml.safe_load(output.read_text())
    assert filled["frontend_v2"] == {"build_id": "", "service_url": ""}
    assert filled["backend_v2"]["build_id"] == "deployed-backend-v2"


def test_fill_deliverables_asks_cloud_build_when_an_image_is_pinned_by_digest(gcloud, tmp_path):
    output = tmp_path / "deliverables.yaml"
    result = gcloud(
        "fill_deliverables.sh",
        "--output",
        str(output),
        FAKE_GCLOUD_IMAGE=f"{REGISTRY}/{{image}}@sha256:{'0' * 64}",
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(output.read_text())["backend_v1"]["build_id"] == LATEST_BUILD
    assert len(result.calls_to("builds", "list")) == 4


def test_fill_deliverables_dry_run_writes_nothing(gcloud, tmp_path):
    output = tmp_path / "deliverables.yaml"
    result = gcloud("fill_deliverables.sh", "--output", str(output), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.calls == []
    assert not output.exists()
    assert len(dry_run_commands(result.stdout)) == 4


def test_committed_deliverables_have_the_assignments_structure():
    deliverables = yaml.safe_load((ROOT / "deliverables.yaml").read_text())
    assert list(deliverables) == ["backend_v1", "frontend_v1", "backend_v2", "frontend_v2"]
    for entry in deliverables.values():
        assert set(entry) == {"build_id", "service_url"}


# --- deployment/lib/base_tag.sh --------------------------------------------------------------


def base_tag(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOYMENT / "lib" / "base_tag.sh"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_base_tag_names_the_inputs_not_the_moment(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    first = base_tag("--arg", "A=1", "--arg", "B=2", "Dockerfile", "pkg", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert re.fullmatch(r"inputs-[0-9a-f]{24}\n", first.stdout)

    # Argument order does not matter; caches next to the code do not count.
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    same = base_tag("--arg", "B=2", "--arg", "A=1", "Dockerfile", "pkg", cwd=tmp_path)
    assert same.stdout == first.stdout

    # Any changed argument, byte or file gives a new tag.
    assert base_tag("--arg", "A=1", "--arg", "B=3", "Dockerfile", "pkg", cwd=tmp_path).stdout != (
        first.stdout
    )
    (tmp_path / "pkg" / "b.py").write_text("")
    added = base_tag("--arg", "A=1", "--arg", "B=2", "Dockerfile", "pkg", cwd=tmp_path)
    assert added.stdout != first.stdout
    (tmp_path / "pkg" / "b.py").unlink()
    (tmp_path / "pkg" / "a.py").write_text("a = 2\n")
    changed = base_tag("--arg", "A=1", "--arg", "B=2", "Dockerfile", "pkg", cwd=tmp_path)
    assert changed.stdout not in (first.stdout, added.stdout)


def test_base_tag_refuses_bad_input(tmp_path):
    assert base_tag("--frobnicate", "x", cwd=tmp_path).returncode == 2
    assert base_tag("--arg", "novalue", "x", cwd=tmp_path).returncode == 2
    assert base_tag(cwd=tmp_path).returncode == 2
    missing = base_tag("no-such-file", cwd=tmp_path)
    assert missing.returncode == 1
    assert "no such input: no-such-file" in missing.stderr

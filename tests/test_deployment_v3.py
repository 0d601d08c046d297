"""deployment/deploy_v3.sh against the fake `gcloud`: one private backend per model, each from
its own model's image of one backend_v3 build, the gateway's account allowed to invoke each,
the routing table published to API Gateway, and the configs no gateway uses deleted."""

from __future__ import annotations

import json
import re
import sys

import pytest
from openapi_spec_validator import validate

from tests.fake_gcloud import (
    DEPLOYMENT,
    GATEWAY_CONFIG,
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

V2 = ["resnet152", "convnext_base", "swin_b", "vgg16"]
SIZES = {"resnet152": "1536Mi", "convnext_base": "1536Mi", "swin_b": "1536Mi", "vgg16": "2Gi"}
GATEWAY_ACCOUNT = f"baked-vision-gateway@{PROJECT}.iam.gserviceaccount.com"
GATEWAY_REGION = "us-east4"
GATEWAY_URL = "https://baked-vision-v3-abc123.ue.gateway.dev"


def service(model: str) -> str:
    return f"backend-v3-{model.replace('_', '-')}"


def service_url(model: str) -> str:
    """The URL the fake gcloud reports for a model's service."""
    return f"https://{service(model)}-abc123-nn.a.run.app"


def image(model: str, build: str = LATEST_BUILD) -> str:
    """A model's own image in a backend_v3 build."""
    return f"{REGISTRY}/backend_v3_{model}:{build}"


@pytest.fixture
def gcloud(tmp_path):
    """Run deploy_v3.sh (with this Python for its helpers) against the fake gcloud."""
    run = fake_gcloud(tmp_path)
    specs = tmp_path / "specs"
    specs.mkdir()

    def deploy_v3(*args: str, **env: str):
        return run(
            "deploy_v3.sh",
            *args,
            PYTHON=sys.executable,
            FAKE_GCLOUD_SPECS=str(specs),
            TMPDIR=str(tmp_path),  # where the script renders its spec (kept by a dry run)
            **env,
        )

    deploy_v3.specs = specs
    deploy_v3.run = run  # any other script, with the same fake
    return deploy_v3


def uploaded_spec(gcloud, result) -> dict:
    """The OpenAPI document the api-configs create call uploaded."""
    config_id = result.only_call_to("api-gateway", "api-configs", "create")[3]
    return json.loads((gcloud.specs / config_id).read_text())


# --- the backends ------------------------------------------------------------------------------


def test_one_private_backend_per_v2_model_each_from_its_own_image(gcloud):
    result = gcloud()
    assert result.returncode == 0, result.stderr

    # The newest successful v3 build; its images are checked before any service changes.
    lookup = result.only_call_to("builds", "list")
    assert flag(lookup, "filter") == "status=SUCCESS AND tags=backend_v3"
    describe = result.only_call_to("builds", "describe")
    assert describe[2] == LATEST_BUILD
    assert flag(describe, "format") == "json"
    assert flag(describe, "region") == "global"
    deploys = result.calls_to("run", "deploy")
    assert result.calls.index(describe) < result.calls.index(deploys[0])
    assert [d[2] for d in deploys] == [service(m) for m in V2]
    assert len({flag(d, "image") for d in deploys}) == len(V2), "an image per service"
    # v2's image, every model in one, is never run.
    assert not [call for call in result.calls if "backend_v2" in " ".join(call)]
    for model, deploy in zip(V2, deploys, strict=True):
        assert flag(deploy, "image") == image(model)
        assert flag(deploy, "region") == REGION
        assert flag(deploy, "memory") == SIZES[model]
        assert flag(deploy, "cpu") == "1"
        assert env_vars(deploy) == {
            "MODELS": model,
            "LISTED_MODELS": ",".join(V2),
            "GUNICORN_THREADS": "8",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
        }
        assert "model=" + model in flag(deploy, "labels").split(",")
        assert "--no-allow-unauthenticated" in deploy
        assert "--allow-unauthenticated" not in deploy


def test_backends_share_the_v2_backends_cloud_run_settings(gcloud, tmp_path):
    v3 = gcloud().calls_to("run", "deploy")[0]
    (tmp_path / "v2").mkdir()
    v2 = fake_gcloud(tmp_path / "v2")("deploy_backend_v2.sh").only_call_to("run", "deploy")
    shared = ("port", "concurrency", "startup-probe", "timeout", "min-instances", "max-instances")
    for name in shared:
        assert flag(v3, name) == flag(v2, name), name
    assert "--cpu-boost" in v3


def test_the_v2_set_is_the_catalogs(gcloud):
    from weights.catalog import load_catalog

    assert load_catalog().select("v2") == V2
    small = load_catalog().select("small")
    models = [*small, "vgg16"]  # in order, without repeats
    result = gcloud("--models", "small,vgg16,resnet18", FAKE_GCLOUD_BUILD_MODELS=",".join(models))
    assert result.returncode == 0, result.stderr
    deploys = result.calls_to("run", "deploy")
    assert [d[2] for d in deploys] == [service(m) for m in models]
    assert [flag(d, "image") for d in deploys] == [image(m) for m in models]
    assert {env_vars(d)["LISTED_MODELS"] for d in deploys} == {",".join(models)}


def test_the_v3_build_makes_the_image_of_each_v2_model():
    """The Cloud Build file and the deploy script agree on the images' names."""
    build = (DEPLOYMENT / "cloudbuild_backend_v3.yaml").read_text()
    for model in V2:
        assert f"/backend_v3_{model}:${{BUILD_ID}}\n" in build
    assert "tags: [baked-vision, backend_v3]" in build


def test_a_model_outside_the_build_is_refused_before_any_deploy(gcloud):
    result = gcloud("--models", "resnet18,vgg16", "--build-id", "b3")
    assert result.returncode == 1
    assert "build b3 has no image of resnet18" in result.stderr
    # It says which models the build has, whose ids may end in "_base".
    assert "(its models: resnet152 convnext_base swin_b vgg16)" in result.stderr
    assert result.calls_to("run", "deploy") == []
    assert result.calls_to("iam", "service-accounts", "create") == []


def test_submit_build_backend_v3_submits_the_v3_build(gcloud):
    result = gcloud.run("submit_build_backend_v3.sh", "--async")
    assert result.returncode == 0, result.stderr
    call = result.only_call_to("builds", "submit")
    assert call[2] == str(ROOT)
    assert flag(call, "config") == str(DEPLOYMENT / "cloudbuild_backend_v3.yaml")
    assert flag(call, "project") == PROJECT
    assert "--async" in call
    assert gcloud.run("submit_build_backend_v3.sh", "--help").stdout.startswith("Usage:")


def test_sizes_come_from_the_config(gcloud):
    result = gcloud(
        "--models=resnet18,vgg16",
        "--build-id",
        "b9",
        BACKEND_V3_SIZES="vgg16=4Gi/2",
        BACKEND_V3_DEFAULT_SIZE="1Gi/1",
        BACKEND_EXTRA_ENV="LOG_LEVEL=DEBUG,ORT_SPINNING=0",
        FAKE_GCLOUD_BUILD_MODELS="resnet18,vgg16",
    )
    assert result.returncode == 0, result.stderr
    assert result.calls_to("builds", "list") == []
    resnet18, vgg16 = result.calls_to("run", "deploy")
    assert result.only_call_to("builds", "describe")[2] == "b9"
    assert flag(resnet18, "image") == image("resnet18", "b9")
    assert flag(vgg16, "image") == image("vgg16", "b9")
    assert (flag(vgg16, "memory"), flag(vgg16, "cpu")) == ("4Gi", "2")
    assert (flag(resnet18, "memory"), flag(resnet18, "cpu")) == ("1Gi", "1")
    assert env_vars(vgg16)["LOG_LEVEL"] == "DEBUG"
    assert env_vars(vgg16)["ORT_SPINNING"] == "0"


def test_a_malformed_size_is_a_clear_error(gcloud):
    result = gcloud("--build-id=b1", BACKEND_V3_SIZES="resnet152=lots")
    assert result.returncode == 1
    assert "size of resnet152 is 'lots'" in result.stderr
    assert result.calls_to("run", "deploy") == []


# --- the gateway's account -----------------------------------------------------------------


def test_the_gateway_account_alone_invokes_each_backend(gcloud):
    result = gcloud()
    assert result.returncode == 0, result.stderr
    bindings = result.calls_to("run", "services", "add-iam-policy-binding")
    assert [b[3] for b in bindings] == [service(m) for m in V2]
    for binding in bindings:
        assert flag(binding, "member") == f"serviceAccount:{GATEWAY_ACCOUNT}"
        assert flag(binding, "role") == "roles/run.invoker"
        assert flag(binding, "region") == REGION
    # The account existed: nothing created. Each binding follows its service's deploy.
    assert result.calls_to("iam", "service-accounts", "create") == []
    last_deploy = result.calls.index(result.calls_to("run", "deploy")[-1])
    assert all(result.calls.index(b) > last_deploy for b in bindings)


def test_a_missing_gateway_account_is_created_first(gcloud):
    result = gcloud(FAKE_GCLOUD_ABSENT="service-account")
    assert result.returncode == 0, result.stderr
    create = result.only_call_to("iam", "service-accounts", "create")
    assert create[3] == "baked-vision-gateway"
    assert flag(create, "project") == PROJECT
    assert result.calls.index(create) < result.calls.index(result.calls_to("run", "deploy")[0])


# --- the gateway ---------------------------------------------------------------------------


def test_the_uploaded_spec_routes_every_model_to_its_service(gcloud):
    result = gcloud()
    assert result.returncode == 0, result.stderr
    spec = uploaded_spec(gcloud, result)
    validate(spec)  # raises on an invalid Swagger 2.0 document
    for model in V2:
        for path, method in [(f"/model/{model}/predict", "post"), (f"/models/{model}", "get")]:
            backend = spec["paths"][path][method]["x-google-backend"]
            assert backend["address"] == service_url(model)
    assert spec["paths"]["/models"]["get"]["x-google-backend"]["address"] == service_url(V2[0])
    # Each URL was read from Cloud Run, after the service was deployed.
    describes = result.calls_to("run", "services", "describe")
    assert [d[3] for d in describes] == [service(m) for m in V2]
    assert {flag(d, "format") for d in describes} == {"value(status.url)"}


def test_a_first_deploy_creates_the_api_and_the_gateway(gcloud):
    result = gcloud(FAKE_GCLOUD_ABSENT="api,gateway")
    assert result.returncode == 0, result.stderr

    api = result.only_call_to("api-gateway", "apis", "create")
    assert api[3] == "baked-vision"
    assert flag(api, "project") == PROJECT

    config = result.only_call_to("api-gateway", "api-configs", "create")
    assert re.fullmatch(r"baked-vision-\d{8}-\d{6}", config[3])
    assert flag(config, "api") == "baked-vision"
    assert flag(config, "backend-auth-service-account") == GATEWAY_ACCOUNT
    assert flag(config, "openapi-spec").endswith(".json")

    gateway = result.only_call_to("api-gateway", "gateways", "create")
    assert gateway[3] == "baked-vision-v3"
    assert flag(gateway, "api") == "baked-vision"
    assert flag(gateway, "api-config") == config[3]
    assert flag(gateway, "location") == GATEWAY_REGION
    assert result.calls_to("api-gateway", "gateways", "update") == []

    order = [result.calls.index(c) for c in (api, config, gateway)]
    assert order == sorted(order)
    assert f"API gateway: {GATEWAY_URL}" in result.stdout


def test_a_later_deploy_updates_the_gateway_to_a_new_config(gcloud):
    result = gcloud(GATEWAY_REGION="europe-west1")
    assert result.returncode == 0, result.stderr
    assert result.calls_to("api-gateway", "apis", "create") == []
    assert result.calls_to("api-gateway", "gateways", "create") == []
    update = result.only_call_to("api-gateway", "gateways", "update")
    config = result.only_call_to("api-gateway", "api-configs", "create")
    assert flag(update, "api-config") == config[3]
    assert flag(update, "location") == "europe-west1"
    hostname = result.calls_to("api-gateway", "gateways", "describe")[-1]
    assert flag(hostname, "format") == "value(defaultHostname)"
    assert result.calls_to("run", "deploy")[-1][2] == service(V2[-1]), "no frontend unasked"
    assert "--with-frontend" in result.stdout


# --- the API's configs: the unused ones deleted, the previous one kept -----------------------

OLD_CONFIGS = [f"baked-vision-2025{month:02}01-000000" for month in (2, 3, 4, 5)]


def deletions(result) -> list[list[str]]:
    return result.calls_to("api-gateway", "api-configs", "delete")


def test_a_deploy_deletes_the_configs_no_gateway_uses_but_the_previous_one(gcloud):
    first, second, staged, previous = OLD_CONFIGS
    result = gcloud(
        FAKE_GCLOUD_API_CONFIGS=",".join(OLD_CONFIGS),
        FAKE_GCLOUD_GATEWAY_CONFIG=previous,
        # Another gateway of this API serves `staged`; one of another API has a config that
        # happens to be called like `second`, which does not save this API's `second`.
        FAKE_GCLOUD_OTHER_GATEWAYS=f"baked-vision/{staged},other-api/{second}",
    )
    assert result.returncode == 0, result.stderr
    new = result.only_call_to("api-gateway", "api-configs", "create")[3]
    deleted = deletions(result)
    assert [call[3] for call in deleted] == [first, second]
    for call in deleted:
        assert flag(call, "api") == "baked-vision"
        assert flag(call, "project") == PROJECT
        assert "--quiet" in call  # no prompt
    assert new not in str(deleted) and previous not in str(deleted)

    # What the gateway served is read before the update, what every gateway serves (any API,
    # any region: no --location) after it, and only then does anything go.
    before = next(
        call
        for call in result.calls_to("api-gateway", "gateways", "describe")
        if flag(call, "format") == "value(apiConfig)"
    )
    update = result.only_call_to("api-gateway", "gateways", "update")
    in_use = result.only_call_to("api-gateway", "gateways", "list")
    assert not [a for a in in_use if a.startswith("--location")]
    assert flag(in_use, "format") == "value(apiConfig)"
    listing = result.only_call_to("api-gateway", "api-configs", "list")
    assert flag(listing, "api") == "baked-vision"
    assert flag(listing, "sort-by") == "createTime"
    assert flag(listing, "format") == "value(name)"
    order = [result.calls.index(c) for c in (before, update, in_use, listing, *deleted)]
    assert order == sorted(order)
    assert f"Previous API config, kept for a rollback: {previous}" in result.stderr
    assert f"--api-config={previous}" in result.stderr


def test_a_config_newer_than_this_deploys_is_another_deploys_and_kept(gcloud):
    result = gcloud(
        FAKE_GCLOUD_API_CONFIGS=f"{OLD_CONFIGS[0]},{GATEWAY_CONFIG}",
        FAKE_GCLOUD_LATER_CONFIGS="baked-vision-29991231-235959",
    )
    assert result.returncode == 0, result.stderr
    assert [call[3] for call in deletions(result)] == [OLD_CONFIGS[0]]


def test_a_first_deploy_deletes_the_configs_left_by_failed_ones(gcloud):
    result = gcloud(
        FAKE_GCLOUD_ABSENT="api,gateway", FAKE_GCLOUD_API_CONFIGS=",".join(OLD_CONFIGS[:2])
    )
    assert result.returncode == 0, result.stderr
    gateway = result.only_call_to("api-gateway", "gateways", "create")
    assert [call[3] for call in deletions(result)] == OLD_CONFIGS[:2]
    assert result.calls.index(gateway) < result.calls.index(deletions(result)[0])
    assert "kept for a rollback" not in result.stderr


def test_a_deploy_deletes_nothing_when_every_config_is_in_use(gcloud):
    result = gcloud()  # the API has one config, the one the gateway serves
    assert result.returncode == 0, result.stderr
    assert deletions(result) == []
    assert f"kept for a rollback: {GATEWAY_CONFIG}" in result.stderr


def test_a_failed_gateway_update_deletes_no_config(gcloud):
    result = gcloud(
        FAKE_GCLOUD_API_CONFIGS=",".join(OLD_CONFIGS),
        FAKE_GCLOUD_FAIL="api-gateway gateways update",
    )
    assert result.returncode == 1
    assert deletions(result) == []
    assert result.calls_to("api-gateway", "api-configs", "list") == []
    assert "API gateway:" not in result.stdout


@pytest.mark.parametrize("listing", ["api-gateway gateways list", "api-gateway api-configs list"])
def test_a_failed_listing_deletes_nothing_and_warns(gcloud, listing):
    result = gcloud(FAKE_GCLOUD_API_CONFIGS=",".join(OLD_CONFIGS), FAKE_GCLOUD_FAIL=listing)
    assert result.returncode == 0, result.stderr  # the deploy itself succeeded
    assert deletions(result) == []
    assert "warning: some unused API configs of baked-vision were not deleted" in result.stderr
    assert f"API gateway: {GATEWAY_URL}" in result.stdout


def test_a_failed_deletion_warns_and_the_others_still_go(gcloud):
    result = gcloud(
        FAKE_GCLOUD_API_CONFIGS=",".join(OLD_CONFIGS),
        FAKE_GCLOUD_GATEWAY_CONFIG=OLD_CONFIGS[-1],
        FAKE_GCLOUD_FAIL=f"api-gateway api-configs delete {OLD_CONFIGS[0]}",
    )
    assert result.returncode == 0, result.stderr
    assert [call[3] for call in deletions(result)] == OLD_CONFIGS[:3]
    assert "warning: some unused API configs" in result.stderr


def test_dry_run_shows_the_clean_up_and_deletes_nothing(gcloud):
    dry = gcloud("--dry-run", FAKE_GCLOUD_API_CONFIGS=",".join(OLD_CONFIGS))
    assert dry.returncode == 0, dry.stderr
    assert dry.calls == []
    commands = [c[1:] for c in dry_run_commands(dry.stdout)]
    words = [c[:3] for c in commands]
    for step in (["gateways", "describe"], ["gateways", "list"], ["api-configs", "list"]):
        assert ["api-gateway", *step] in words, step
    (delete,) = [c for c in commands if c[:3] == ["api-gateway", "api-configs", "delete"]]
    assert delete[3].startswith("<") and "but the previous one" in delete[3]
    assert words.index(["api-gateway", "gateways", "create"]) < words.index(delete[:3])


def test_gateway_region_default_is_one_api_gateway_supports():
    config = (DEPLOYMENT / "config.env").read_text()
    assert f'GATEWAY_REGION="${{GATEWAY_REGION:-{GATEWAY_REGION}}}"' in config


# --- the frontend --------------------------------------------------------------------------


def test_with_frontend_points_the_page_at_the_gateway(gcloud):
    result = gcloud("--with-frontend", "--frontend-build-id", "f1")
    assert result.returncode == 0, result.stderr
    frontend = result.calls_to("run", "deploy")[-1]
    assert frontend[2] == "frontend-v3"
    assert flag(frontend, "image") == f"{REGISTRY}/frontend_v2:f1"
    assert env_vars(frontend) == {"FRONTEND_MODE": "v3", "API_GATEWAY": GATEWAY_URL}
    assert "--allow-unauthenticated" in frontend
    assert "httpGet.path=/_stcore/health" in flag(frontend, "startup-probe")
    gateway = result.only_call_to("api-gateway", "gateways", "update")
    assert result.calls.index(gateway) < result.calls.index(frontend)


# --- dry run and mistakes ------------------------------------------------------------------


def test_dry_run_prints_the_commands_and_runs_none(gcloud):
    real = gcloud("--build-id", "b7", "--with-frontend", "--frontend-build-id", "f7")
    dry = gcloud("--build-id", "b7", "--with-frontend", "--frontend-build-id", "f7", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.calls == []
    commands = dry_run_commands(dry.stdout)
    assert commands and all(c[0] == "gcloud" for c in commands)
    # The backends' deploys and bindings are exactly the real ones.
    for words in (["run", "deploy"], ["run", "services", "add-iam-policy-binding"]):
        printed = [c[1:] for c in commands if c[1 : 1 + len(words)] == words]
        assert printed[: len(V2)] == real.calls_to(*words)[: len(V2)]
    # What would be created is shown (the describes answer "absent" in a dry run).
    printed = {tuple(c[1:4]) for c in commands}
    assert ("api-gateway", "api-configs", "create") in printed
    assert ("api-gateway", "gateways", "create") in printed
    assert ("iam", "service-accounts", "create") in printed
    assert "https://<hostname of baked-vision-v3>" in dry.stdout


def test_dry_run_renders_the_spec_with_placeholder_addresses(gcloud):
    dry = gcloud("--dry-run", "--models", "resnet152")
    assert dry.returncode == 0, dry.stderr
    commands = dry_run_commands(dry.stdout)
    create = next(c for c in commands if c[1:4] == ["api-gateway", "api-configs", "create"])
    with open(flag(create, "openapi-spec")) as file:
        spec = json.load(file)
    validate(spec)
    address = spec["paths"]["/model/resnet152/predict"]["post"]["x-google-backend"]["address"]
    assert address == "https://backend-v3-resnet152.dry-run.invalid"


def test_help_prints_usage_and_calls_nothing(gcloud):
    result = gcloud("-h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: deploy_v3.sh")
    for option in ("--models", "--build-id", "--with-frontend", "--dry-run"):
        assert option in result.stdout
    assert result.calls == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--frobnicate"], "unknown option: --frobnicate"),
        (["--models"], "--models needs a value"),
        (["--build-id="], "--build-id needs a value"),
        (["--models", "v9"], "unknown model or set 'v9'"),
        (["--models", ","], "selects no model"),
    ],
)
def test_command_line_mistakes_exit_2(gcloud, args, complaint):
    result = gcloud(*args)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert result.stdout == ""
    assert result.calls == []


def test_missing_project_is_a_clear_error(gcloud):
    result = gcloud(PROJECT_ID="")
    assert result.returncode == 1
    assert "error: PROJECT_ID is not set" in result.stderr
    assert "config.env" in result.stderr
    assert result.calls == []


def test_without_a_backend_build_it_says_to_submit_one(gcloud):
    result = gcloud(FAKE_GCLOUD_ABSENT="builds")
    assert result.returncode == 1
    assert "no successful build of backend_v3" in result.stderr
    assert "submit_build_backend_v3.sh" in result.stderr
    assert result.calls_to("run", "deploy") == []

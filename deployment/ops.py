"""The steps of a deployment, each a sequence of gcloud commands (deployment/gcloud.py).

setup   once per project, idempotent: APIs, the image repository, the source bucket, the
        service accounts and the few roles each needs
build   one Cloud Build build: deployment/cloudbuild_<image>.yaml
deploy  a variant's services from the images of one build each
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path

from deployment import spec
from deployment.gateway import openapi_spec
from deployment.gcloud import Failed, Gcloud
from deployment.spec import PORT, Project, Size, Variant
from runtime.timing import TIMING

PUBLIC_ACCESS = ("allUsers", "no-iam-check")


def _where(project: Project) -> list[str]:
    return [f"--project={project.id}", f"--region={project.region}"]


# --- setup ------------------------------------------------------------------------------------
def setup(gcloud: Gcloud, project: Project) -> None:
    p = f"--project={project.id}"
    gcloud.change("services", "enable", *spec.APIS, p)
    if not gcloud.exists(
        "artifacts",
        "repositories",
        "describe",
        project.repository,
        p,
        f"--location={project.region}",
    ):
        gcloud.change(
            "artifacts",
            "repositories",
            "create",
            project.repository,
            p,
            f"--location={project.region}",
            "--repository-format=docker",
            "--description=Baked Vision: base and code images",
        )
    bucket = project.source_bucket
    if not gcloud.exists("storage", "buckets", "describe", bucket, p):
        gcloud.change(
            "storage",
            "buckets",
            "create",
            bucket,
            p,
            f"--location={project.region}",
            "--uniform-bucket-level-access",
        )
    for role, name in project.accounts.items():
        if not gcloud.exists("iam", "service-accounts", "describe", project.account(role), p):
            gcloud.change(
                "iam",
                "service-accounts",
                "create",
                name,
                p,
                f"--display-name=Baked Vision {role}",
            )
    # The build's account: write its logs, read the uploaded source, push and pull images.
    # Nothing more (not roles/cloudbuild.builds.builder, which can run any build).
    build = f"serviceAccount:{project.account('build')}"
    gcloud.change(
        "projects",
        "add-iam-policy-binding",
        project.id,
        f"--member={build}",
        "--role=roles/logging.logWriter",
        "--condition=None",
        "--quiet",
    )
    gcloud.change(
        "storage",
        "buckets",
        "add-iam-policy-binding",
        bucket,
        f"--member={build}",
        "--role=roles/storage.objectViewer",
    )
    gcloud.change(
        "artifacts",
        "repositories",
        "add-iam-policy-binding",
        project.repository,
        p,
        f"--location={project.region}",
        f"--member={build}",
        "--role=roles/artifactregistry.writer",
        "--quiet",
    )
    # You submit builds and deploy services that run as these accounts: acting as an account
    # needs iam.serviceAccounts.actAs on it (Owners have it; anyone else gets it here).
    me = gcloud.read("config", "get-value", "account", placeholder="<your account>")
    if me in ("", "(unset)"):
        raise Failed("gcloud has no account: log in first (gcloud auth login)")
    member = f"serviceAccount:{me}" if me.endswith("gserviceaccount.com") else f"user:{me}"
    for role in project.accounts:
        gcloud.change(
            "iam",
            "service-accounts",
            "add-iam-policy-binding",
            project.account(role),
            p,
            f"--member={member}",
            "--role=roles/iam.serviceAccountUser",
            "--quiet",
        )


# --- build ------------------------------------------------------------------------------------
def substitutions_flag(values: dict[str, str]) -> str:
    """--substitutions with a delimiter found in no value: a comma or an @ survives it."""
    text = "".join(f"{k}{v}" for k, v in values.items())
    delimiter = next(d for d in "|~;#!^%" if d not in text)
    return f"--substitutions=^{delimiter}^" + delimiter.join(f"{k}={v}" for k, v in values.items())


def build(
    gcloud: Gcloud,
    project: Project,
    image: str,
    *,
    models: str = "",
    catalog: str = "",
    extra: dict[str, str] | None = None,
    wait: bool = True,
) -> None:
    if image not in spec.BUILDS:
        raise Failed(f"unknown image {image!r}: one of {', '.join(spec.BUILDS)}")
    values = {"_REGISTRY": f"{project.region}-docker.pkg.dev", "_REPOSITORY": project.repository}
    variant = spec.BUILDS[image]
    if variant == "v3" or (variant and models):
        # The builder has no Python to read the catalog: v3's file loops over model ids.
        chosen = models or spec.VARIANTS["v3"].model_set
        ids = spec.models_of(chosen, _catalog_path(catalog))
        values["_MODELS"] = ",".join(ids) if variant == "v3" else chosen
    if catalog:
        values["_WEIGHTS_CATALOG"] = f"/build/{_catalog_in_context(catalog)}"
    values.update(extra or {})
    config = "cloudbuild_frontend_v1.yaml" if image == "frontend" else f"cloudbuild_{image}.yaml"
    gcloud.change(
        "builds",
        "submit",
        _local(spec.ROOT),
        f"--project={project.id}",
        f"--region={project.build_region}",
        f"--config={_local(spec.ROOT / 'deployment' / config)}",
        f"--service-account=projects/{project.id}/serviceAccounts/{project.account('build')}",
        f"--gcs-source-staging-dir={project.source_bucket}/source",
        substitutions_flag(values),
        *([] if wait else ["--async"]),
    )


def _local(path: Path) -> str:
    """A path as the user would type it: relative when under the working directory."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def _catalog_in_context(catalog: str) -> str:
    relative = Path(catalog).resolve().relative_to(spec.ROOT, walk_up=True)
    if relative.parts[:1] != ("weights",) or ".." in relative.parts:
        raise Failed(
            f"--catalog {catalog}: the image build copies weights/ only; put the file there"
        )
    return relative.as_posix()


def _catalog_path(catalog: str) -> Path:
    return Path(catalog) if catalog else spec.CATALOG


def latest_build(gcloud: Gcloud, project: Project, image: str) -> str:
    found = gcloud.read(
        "builds",
        "list",
        f"--project={project.id}",
        f"--region={project.build_region}",
        f"--filter=status=SUCCESS AND tags={image}",
        "--sort-by=~createTime",
        "--limit=1",
        "--format=value(id)",
        placeholder=f"<newest {image} build>",
    )
    if not found:
        raise Failed(
            f"no successful build of {image} in {project.id}: "
            f"python3 -m deployment build {image} --project {project.id}"
        )
    return found


# --- deploy -----------------------------------------------------------------------------------
def _env(values: dict[str, str]) -> str:
    """--set-env-vars with a delimiter no value has (LISTED_MODELS has commas)."""
    return substitutions_flag(values).replace("--substitutions=", "--set-env-vars=")


def _access(access: str) -> list[str]:
    """Deploy flags for who may call a service; `private` or a PUBLIC_ACCESS mode."""
    if access == "private":  # only the accounts granted roles/run.invoker
        return ["--no-allow-unauthenticated", "--invoker-iam-check"]
    if access == "no-iam-check":  # anyone, with no IAM policy naming allUsers
        return ["--no-invoker-iam-check"]
    return ["--invoker-iam-check"]  # allUsers: granted after the deploy, see _open


def _open(gcloud: Gcloud, service: str, project: Project, access: str) -> None:
    if access == "allUsers":  # a refused grant fails here, not silently inside the deploy
        grant_invoker(gcloud, project, service, "allUsers")


def grant_invoker(gcloud: Gcloud, project: Project, service: str, member: str) -> None:
    gcloud.change(
        "run",
        "services",
        "add-iam-policy-binding",
        service,
        *_where(project),
        f"--member={member}",
        "--role=roles/run.invoker",
        "--quiet",
    )


def deploy_service(
    gcloud: Gcloud,
    project: Project,
    service: str,
    image: str,
    size: Size,
    *,
    account: str,
    env: dict[str, str],
    access: str,
    labels: str,
    probe: str,
    extra: tuple[str, ...] = (),
) -> None:
    startup = (
        f"httpGet.path={probe},httpGet.port={PORT},periodSeconds=1,timeoutSeconds=1,"
        f"failureThreshold={TIMING.startup_s}"
    )
    gcloud.change(
        "run",
        "deploy",
        service,
        *_where(project),
        f"--image={image}",
        f"--service-account={project.account(account)}",
        f"--port={PORT}",
        f"--memory={size.memory}",
        f"--cpu={size.cpu}",
        f"--concurrency={size.concurrency}",
        "--cpu-boost",
        f"--startup-probe={startup}",
        "--min-instances=0",
        f"--max-instances={spec.MAX_INSTANCES}",
        _env(env),
        f"--labels={labels}",
        *extra,
        *_access(access),
        "--quiet",
    )
    _open(gcloud, service, project, access)


def deploy_backends(
    gcloud: Gcloud, project: Project, variant: Variant, build_id: str, access: str
) -> dict[str, str]:
    """Deploy the variant's backend services; give service -> model (v3) or "" (v1, v2)."""
    models = spec.models_of(variant.model_set) if variant.per_model else []
    services = spec.backend_services(variant, models)
    for model in models:  # v3: refuse a build that lacks a model before anything changes
        image = project.image(f"backend_v3_{model}", build_id)
        try:
            gcloud.read(
                "artifacts",
                "docker",
                "images",
                "describe",
                image,
                "--format=value(image_summary.digest)",
                placeholder="<digest>",
            )
        except Failed as error:
            raise Failed(
                f"{error}\nbuild {build_id} has no image of {model} ({image}): choose another "
                f"--build-id, or build it: python3 -m deployment build backend_v3"
            ) from None
    for service, model in services.items():
        image = f"backend_v3_{model}" if model else variant.backend_image
        env = {"MODELS": model or variant.model_set, "GUNICORN_THREADS": str(spec.THREADS)}
        if model:
            env["LISTED_MODELS"] = ",".join(models)
        env["GOOGLE_CLOUD_PROJECT"] = project.id  # Cloud Run does not set it; the logs need it
        deploy_service(
            gcloud,
            project,
            service,
            project.image(image, build_id),
            spec.backend_size(variant, model),
            account="backend",
            env=env,
            access="private" if model else access,
            probe="/ready",
            labels=f"app=baked-vision,component=backend,variant={variant.name}",
            extra=(f"--timeout={TIMING.request_timeout_s}",),
        )
    return services


def service_url(gcloud: Gcloud, project: Project, service: str) -> str:
    return gcloud.read(
        "run",
        "services",
        "describe",
        service,
        *_where(project),
        "--format=value(status.url)",
        placeholder=f"https://<host of {service}>",
    )


def deploy_frontend(
    gcloud: Gcloud,
    project: Project,
    variant: Variant,
    build_id: str,
    backend_url: str,
    access: str,
    private_backend: str = "",
) -> None:
    env = {"SERVING_URL": backend_url}
    if private_backend:  # the page proves who it is with an ID token for the backend's URL
        grant_invoker(
            gcloud, project, private_backend, f"serviceAccount:{project.account('frontend')}"
        )
        env["BACKEND_AUTH"] = "id_token"
    # Streamlit keeps a session on one instance over a websocket that lives as long as the
    # request: session affinity, and the longest timeout Cloud Run has.
    deploy_service(
        gcloud,
        project,
        f"frontend-{variant.name}",
        project.image(spec.FRONTEND_IMAGE, build_id),
        spec.FRONTEND_SIZE,
        account="frontend",
        env=env,
        access=access,
        probe="/_stcore/health",
        labels=f"app=baked-vision,component=frontend,variant={variant.name}",
        extra=("--session-affinity", "--timeout=3600"),
    )


def deploy(
    gcloud: Gcloud,
    project: Project,
    variant: Variant,
    *,
    backend_build: str = "",
    frontend_build: str = "",
    private: bool = False,
    public_access: str = "allUsers",
    parts: tuple[str, ...] = ("backend", "frontend"),
) -> None:
    """Deploy a variant. `private`: the backends refuse every caller but the page (v3: always)."""
    if public_access not in PUBLIC_ACCESS:
        raise Failed(f"--public-access {public_access}: one of {', '.join(PUBLIC_ACCESS)}")
    backend_access = "private" if private else public_access
    backend_url = ""
    if "backend" in parts:
        image = "backend_v3" if variant.per_model else variant.backend_image
        build_id = backend_build or latest_build(gcloud, project, image)
        services = deploy_backends(gcloud, project, variant, build_id, backend_access)
        if variant.per_model:
            backend_url = publish_gateway(gcloud, project, services)
            print(f"gateway: {backend_url}", file=gcloud.out)
    if "frontend" not in parts:
        return
    backend = "" if variant.per_model else f"backend-{variant.name}"
    if not backend_url:
        backend_url = (
            service_url(gcloud, project, backend) if backend else gateway_url(gcloud, project)
        )
    deploy_frontend(
        gcloud,
        project,
        variant,
        frontend_build or latest_build(gcloud, project, "frontend"),
        backend_url,
        public_access,
        backend if private else "",
    )
    print(f"page: {service_url(gcloud, project, f'frontend-{variant.name}')}", file=gcloud.out)


# --- v3: API Gateway --------------------------------------------------------------------------
def gateway_url(gcloud: Gcloud, project: Project) -> str:
    host = gcloud.read(
        "api-gateway",
        "gateways",
        "describe",
        project.gateway,
        f"--project={project.id}",
        f"--location={project.gateway_region}",
        "--format=value(defaultHostname)",
        placeholder="<gateway host>",
    )
    return f"https://{host}"


def publish_gateway(gcloud: Gcloud, project: Project, services: dict[str, str]) -> str:
    """Route each model to its service through a new API config; give the gateway's URL."""
    p, where = f"--project={project.id}", f"--location={project.gateway_region}"
    gateway = project.account("gateway")
    routes = {}
    for service, model in services.items():
        grant_invoker(gcloud, project, service, f"serviceAccount:{gateway}")
        routes[model] = service_url(gcloud, project, service)
    document = openapi_spec(routes, next(iter(routes)), title=project.api)
    spec_file = Path(tempfile.mkdtemp(prefix="baked-vision-")) / "openapi.json"
    spec_file.write_text(json.dumps(document, indent=2))
    print(f"# the gateway's routes (OpenAPI): {spec_file}", file=gcloud.out)
    if not gcloud.exists("api-gateway", "apis", "describe", project.api, p):
        gcloud.change("api-gateway", "apis", "create", project.api, p)
    # Configs are immutable: each deploy adds one, named by the time.
    config = f"{project.api}-{_utc_stamp()}"
    gcloud.change(
        "api-gateway",
        "api-configs",
        "create",
        config,
        p,
        f"--api={project.api}",
        f"--openapi-spec={spec_file}",
        f"--backend-auth-service-account={gateway}",
    )
    served = ""
    if gcloud.exists("api-gateway", "gateways", "describe", project.gateway, p, where):
        served = gcloud.read(
            "api-gateway",
            "gateways",
            "describe",
            project.gateway,
            p,
            where,
            "--format=value(apiConfig)",
            placeholder="",
        )
    verb = "update" if served else "create"
    gcloud.change(
        "api-gateway",
        "gateways",
        verb,
        project.gateway,
        p,
        where,
        f"--api={project.api}",
        f"--api-config={config}",
    )
    _prune_configs(gcloud, project, keep={config, served.rsplit("/", 1)[-1]})
    if served:
        print(
            f"rollback: gcloud api-gateway gateways update {project.gateway} {p} {where} "
            f"--api={project.api} --api-config={served.rsplit('/', 1)[-1]}",
            file=gcloud.out,
        )
    return gateway_url(gcloud, project)


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")


def _prune_configs(gcloud: Gcloud, project: Project, keep: set[str]) -> None:
    """Delete configs no gateway uses, older than this deploy's: an API holds 100 at most."""
    p = f"--project={project.id}"
    in_use = gcloud.read(
        "api-gateway", "gateways", "list", p, "--format=value(apiConfig)", placeholder=""
    )
    names = gcloud.read(
        "api-gateway",
        "api-configs",
        "list",
        p,
        f"--api={project.api}",
        "--sort-by=createTime",
        "--format=value(name)",
        placeholder="",
    )
    keep |= {line.rsplit("/", 1)[-1] for line in in_use.splitlines()}
    new = max(keep)  # names carry the UTC time: a newer one is another deploy's, about to be used
    for name in (line.rsplit("/", 1)[-1] for line in names.splitlines() if line):
        if name not in keep and name < new:
            gcloud.change(
                "api-gateway", "api-configs", "delete", name, p, f"--api={project.api}", "--quiet"
            )


# --- deliverables.yaml ------------------------------------------------------------------------
def deliverables(gcloud: Gcloud, project: Project, output: Path) -> str:
    """Write each assignment service's build id and URL; give the text."""
    lines = [
        "# Assignment deliverables: each Cloud Run service's build and URL, written by",
        "# `python3 -m deployment deliverables`; empty: not deployed.",
    ]
    for name in ("backend_v1", "frontend_v1", "backend_v2", "frontend_v2"):
        service = spec.service_name(name)
        found = gcloud.exists("run", "services", "describe", service, *_where(project))
        url = image = ""
        if found:
            answer = gcloud.read(
                "run",
                "services",
                "describe",
                service,
                *_where(project),
                "--format=value(status.url,spec.template.spec.containers[0].image)",
                placeholder="",
            )
            url, _, image = answer.partition("\t")
        build_id = image.rsplit(":", 1)[-1] if ":" in image else ""
        lines += [f"{name}:", f'  build_id: "{build_id}"', f'  service_url: "{url}"']
    text = "\n".join(lines) + "\n"
    if not gcloud.dry_run:
        output.write_text(text)
    return text

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


def _where(project: Project) -> str:
    return f"--project={project.id} --region={project.region}"


# --- setup ------------------------------------------------------------------------------------
def setup(gcloud: Gcloud, project: Project) -> None:
    p, at = f"--project={project.id}", f"--location={project.region}"
    gcloud.change(f"services enable {' '.join(spec.APIS)} {p}")
    if not gcloud.exists(f"artifacts repositories describe {project.repository} {p} {at}"):
        gcloud.change(
            f"artifacts repositories create {project.repository} {p} {at}"
            " --repository-format=docker",
            "--description=Baked Vision: base and code images",
        )
    bucket = project.source_bucket
    if not gcloud.exists(f"storage buckets describe {bucket} {p}"):
        gcloud.change(f"storage buckets create {bucket} {p} {at} --uniform-bucket-level-access")
    for role, name in project.accounts.items():
        if not gcloud.exists(f"iam service-accounts describe {project.account(role)} {p}"):
            label = f"--display-name=Baked Vision {role}"
            gcloud.change(f"iam service-accounts create {name} {p}", label)
    # The build's account: write its logs, read the uploaded source, push and pull images.
    # Nothing more (not roles/cloudbuild.builds.builder, which can run any build).
    build = f"--member=serviceAccount:{project.account('build')}"
    gcloud.change(
        f"projects add-iam-policy-binding {project.id} {build} --role=roles/logging.logWriter"
        " --condition=None --quiet"
    )
    viewer = "--role=roles/storage.objectViewer"
    gcloud.change(f"storage buckets add-iam-policy-binding {bucket} {build} {viewer}")
    gcloud.change(
        f"artifacts repositories add-iam-policy-binding {project.repository} {p} {at} {build}"
        " --role=roles/artifactregistry.writer --quiet"
    )
    # You submit builds and deploy services that run as these accounts: acting as an account
    # needs iam.serviceAccounts.actAs on it (Owners have it; anyone else gets it here).
    me = gcloud.read("config get-value account", placeholder="<your-account>")
    if me in ("", "(unset)"):
        raise Failed("gcloud has no account: log in first (gcloud auth login)")
    member = f"serviceAccount:{me}" if me.endswith("gserviceaccount.com") else f"user:{me}"
    for role in project.accounts:
        gcloud.change(
            f"iam service-accounts add-iam-policy-binding {project.account(role)} {p}"
            " --role=roles/iam.serviceAccountUser --quiet",
            f"--member={member}",
        )


# --- build ------------------------------------------------------------------------------------
def substitutions_flag(values: dict[str, str], flag: str = "--substitutions") -> str:
    """A gcloud dict flag with a delimiter found in no value: a comma or an @ survives it."""
    text = "".join(f"{k}{v}" for k, v in values.items())
    delimiter = next(d for d in "|~;#!^%" if d not in text)
    return f"{flag}=^{delimiter}^" + delimiter.join(f"{k}={v}" for k, v in values.items())


def build(
    gcloud: Gcloud, project: Project, image: str, *, models: str = "", catalog: str = "",
    extra: dict[str, str] | None = None, wait: bool = True,
) -> None:  # fmt: skip
    if image not in spec.BUILDS:
        raise Failed(f"unknown image {image!r}: one of {', '.join(spec.BUILDS)}")
    values = {"_REGISTRY": f"{project.region}-docker.pkg.dev", "_REPOSITORY": project.repository}
    variant = spec.BUILDS[image]
    if variant == "v3":  # the builder has no Python to read the catalog: give it the ids
        chosen = models or spec.VARIANTS["v3"].model_set
        values["_MODELS"] = ",".join(spec.models_of(chosen, _catalog_path(catalog)))
    elif variant and models:
        spec.models_of(models, _catalog_path(catalog))  # an unknown model fails here, not later
        values["_MODELS"] = models
    if catalog:
        values["_WEIGHTS_CATALOG"] = f"/build/{_catalog_in_context(catalog)}"
    values.update(extra or {})
    config = "cloudbuild_frontend_v1.yaml" if image == "frontend" else f"cloudbuild_{image}.yaml"
    account = f"projects/{project.id}/serviceAccounts/{project.account('build')}"
    gcloud.change(
        f"builds submit {_local(spec.ROOT)} --project={project.id} --region={project.build_region}"
        f" --config={_local(spec.ROOT / 'deployment' / config)} --service-account={account}"
        f" --gcs-source-staging-dir={project.source_bucket}/source" + ("" if wait else " --async"),
        substitutions_flag(values),
    )


def _local(path: Path) -> str:
    """A path as the user would type it: relative when under the working directory."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def _catalog_in_context(catalog: str) -> str:
    relative = Path(os.path.relpath(Path(catalog).resolve(), spec.ROOT))
    if relative.parts[:1] != ("weights",):
        raise Failed(f"--catalog {catalog}: the image build copies weights/ only; put it there")
    return relative.as_posix()


def _catalog_path(catalog: str) -> Path:
    return Path(catalog) if catalog else spec.CATALOG


def latest_build(gcloud: Gcloud, project: Project, image: str) -> str:
    found = gcloud.read(
        f"builds list --project={project.id} --region={project.build_region}"
        " --sort-by=~createTime --limit=1 --format=value(id)",
        f"--filter=status=SUCCESS AND tags={image}",
        placeholder=f"<newest-{image}-build>",
    )
    if not found:
        raise Failed(
            f"no successful build of {image} in {project.id}: "
            f"python3 -m deployment build {image} --project {project.id}"
        )
    return found


# --- deploy -----------------------------------------------------------------------------------
def grant_invoker(gcloud: Gcloud, project: Project, service: str, member: str) -> None:
    gcloud.change(
        f"run services add-iam-policy-binding {service} {_where(project)} --member={member}"
        " --role=roles/run.invoker --quiet"
    )


def deploy_service(
    gcloud: Gcloud, project: Project, service: str, image: str, size: Size, *, account: str,
    env: dict[str, str], access: str, labels: str, probe: str, extra: str,
) -> None:  # fmt: skip
    """One Cloud Run service. `access`: "private" (only accounts granted roles/run.invoker),
    "no-iam-check" (anyone, Cloud Run's invoker check off), or "allUsers" (anyone, by a grant
    of its own after the deploy, which fails loudly where the organisation forbids it)."""
    flags = {
        "private": "--no-allow-unauthenticated --invoker-iam-check",
        "no-iam-check": "--no-invoker-iam-check",
        "allUsers": "--invoker-iam-check",
    }[access]
    gcloud.change(
        f"run deploy {service} {_where(project)} --image={image}"
        f" --service-account={project.account(account)} --port={PORT} --memory={size.memory}"
        f" --cpu={size.cpu} --concurrency={size.concurrency} --cpu-boost"
        f" --startup-probe=httpGet.path={probe},httpGet.port={PORT},periodSeconds={TIMING.probe_s},"
        f"timeoutSeconds={TIMING.probe_s},failureThreshold={TIMING.startup_probes}"
        " --min-instances=0"
        f" --max-instances={spec.MAX_INSTANCES} --labels={labels} {extra} {flags} --quiet",
        substitutions_flag(env, "--set-env-vars"),
    )
    if access == "allUsers":
        grant_invoker(gcloud, project, service, "allUsers")


def deploy_backends(
    gcloud: Gcloud, project: Project, variant: Variant, build_id: str, access: str
) -> dict[str, str]:
    """Deploy the variant's backend services; give service -> model (v3) or "" (v1, v2)."""
    models = spec.models_of(variant.model_set) if variant.per_model else []
    for model in models:  # v3: refuse a build that lacks a model before anything changes
        image = project.image(f"backend_v3_{model}", build_id)
        try:
            gcloud.read(
                f"artifacts docker images describe {image} --format=value(image_summary.digest)",
                placeholder="<digest>",
            )
        except Failed as error:
            raise Failed(
                f"{error}\nbuild {build_id} has no image of {model} ({image}): choose another "
                f"--build-id, or build it: python3 -m deployment build backend_v3"
            ) from None
    services = spec.backend_services(variant, models)
    for service, model in services.items():
        env = {"MODELS": model or variant.model_set, "REQUEST_THREADS": str(spec.THREADS)}
        if model:  # GET /models lists the whole set, whichever service answers it
            env["LISTED_MODELS"] = ",".join(models)
        env["GOOGLE_CLOUD_PROJECT"] = project.id  # Cloud Run does not set it; the logs need it
        deploy_service(
            gcloud, project, service,
            project.image(f"backend_v3_{model}" if model else variant.backend_image, build_id),
            spec.backend_size(variant, model), account="backend", env=env,
            access="private" if model else access, probe="/ready",
            labels=f"app=baked-vision,component=backend,variant={variant.name}",
            extra=f"--timeout={TIMING.request_timeout_s}",
        )  # fmt: skip
    return services


def service_url(gcloud: Gcloud, project: Project, service: str) -> str:
    return gcloud.read(
        f"run services describe {service} {_where(project)} --format=value(status.url)",
        placeholder=f"https://<host-of-{service}>",
    )


def deploy(
    gcloud: Gcloud, project: Project, variant: Variant, *, backend_build: str = "",
    frontend_build: str = "", private: bool = False, public_access: str = "allUsers",
    parts: tuple[str, ...] = ("backend", "frontend"),
) -> None:  # fmt: skip
    """Deploy a variant. `private`: the backends refuse every caller but the page (v3: always)."""
    if public_access not in PUBLIC_ACCESS:
        raise Failed(f"--public-access {public_access}: one of {', '.join(PUBLIC_ACCESS)}")
    backend_url = ""
    if "backend" in parts:
        image = "backend_v3" if variant.per_model else variant.backend_image
        build_id = backend_build or latest_build(gcloud, project, image)
        access = "private" if private else public_access
        services = deploy_backends(gcloud, project, variant, build_id, access)
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
    env = {"SERVING_URL": backend_url}
    if private and backend:  # the page proves who it is with an ID token for the backend's URL
        grant_invoker(gcloud, project, backend, f"serviceAccount:{project.account('frontend')}")
        env["BACKEND_AUTH"] = "id_token"
    service = f"frontend-{variant.name}"
    # Streamlit keeps a session on one instance over a websocket that lives as long as the
    # request: session affinity, and the longest timeout Cloud Run has.
    build_id = frontend_build or latest_build(gcloud, project, "frontend")
    deploy_service(
        gcloud, project, service, project.image(spec.FRONTEND_IMAGE, build_id),
        spec.FRONTEND_SIZE, account="frontend", env=env, access=public_access,
        probe="/_stcore/health", extra="--session-affinity --timeout=3600",
        labels=f"app=baked-vision,component=frontend,variant={variant.name}",
    )  # fmt: skip
    print(f"page: {service_url(gcloud, project, service)}", file=gcloud.out)


# --- v3: API Gateway --------------------------------------------------------------------------
def gateway_url(gcloud: Gcloud, project: Project) -> str:
    host = gcloud.read(
        f"api-gateway gateways describe {project.gateway} --project={project.id}"
        f" --location={project.gateway_region} --format=value(defaultHostname)",
        placeholder="<gateway-host>",
    )
    return f"https://{host}"


def publish_gateway(gcloud: Gcloud, project: Project, services: dict[str, str]) -> str:
    """Route each model to its service through a new API config; give the gateway's URL."""
    p, api = f"--project={project.id}", f"--api={project.api}"
    gateway = f"{project.gateway} {p} --location={project.gateway_region}"
    account = project.account("gateway")
    routes = {}
    for service, model in services.items():
        grant_invoker(gcloud, project, service, f"serviceAccount:{account}")
        routes[model] = service_url(gcloud, project, service)
    spec_file = Path(tempfile.mkdtemp(prefix="baked-vision-")) / "openapi.json"
    document = openapi_spec(routes, next(iter(routes)), title=project.api)
    spec_file.write_text(json.dumps(document, indent=2))
    print(f"# the gateway's routes (OpenAPI): {spec_file}", file=gcloud.out)
    if not gcloud.exists(f"api-gateway apis describe {project.api} {p}"):
        gcloud.change(f"api-gateway apis create {project.api} {p}")
    # Configs are immutable: each deploy adds one, named by the time.
    config = f"{project.api}-{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}"
    gcloud.change(
        f"api-gateway api-configs create {config} {p} {api} --openapi-spec={spec_file}"
        f" --backend-auth-service-account={account}"
    )
    served = ""
    if gcloud.exists(f"api-gateway gateways describe {gateway}"):
        served = gcloud.read(
            f"api-gateway gateways describe {gateway} --format=value(apiConfig)", placeholder=""
        ).rsplit("/", 1)[-1]
    verb = "update" if served else "create"
    gcloud.change(f"api-gateway gateways {verb} {gateway} {api} --api-config={config}")
    # An API holds 100 configs at most: delete those no gateway uses, older than this one
    # (a newer one is another deploy's, about to be used), but the one served before.
    in_use = gcloud.read(f"api-gateway gateways list {p} --format=value(apiConfig)", placeholder="")
    keep = {config, served} | {line.rsplit("/", 1)[-1] for line in in_use.splitlines()}
    names = gcloud.read(
        f"api-gateway api-configs list {p} {api} --sort-by=createTime --format=value(name)",
        placeholder="",
    )
    for name in (line.rsplit("/", 1)[-1] for line in names.splitlines() if line):
        if name not in keep and name < config:
            gcloud.change(f"api-gateway api-configs delete {name} {p} {api} --quiet")
    if served:
        rollback = f"gcloud api-gateway gateways update {gateway} {api} --api-config={served}"
        print(f"rollback: {rollback}", file=gcloud.out)
    return gateway_url(gcloud, project)


# --- deliverables.yaml ------------------------------------------------------------------------
def deliverables(gcloud: Gcloud, project: Project, output: Path) -> str:
    """Write each assignment service's build id and URL; give the text."""
    lines = [
        "# Assignment deliverables: each Cloud Run service's build and URL, written by",
        "# `python3 -m deployment deliverables`; empty: not deployed.",
    ]
    for name in ("backend_v1", "frontend_v1", "backend_v2", "frontend_v2"):
        describe = f"run services describe {spec.service_name(name)} {_where(project)}"
        url = image = ""
        if gcloud.exists(describe):
            answer = gcloud.read(
                f"{describe} --format=value(status.url,spec.template.spec.containers[0].image)",
                placeholder="",
            )
            url, _, image = answer.partition("\t")
        build_id = image.rsplit(":", 1)[-1] if ":" in image else ""
        lines += [f"{name}:", f'  build_id: "{build_id}"', f'  service_url: "{url}"']
    text = "\n".join(lines) + "\n"
    if not gcloud.dry_run:
        output.write_text(text)
    return text

#!/usr/bin/env bash
# Deploy v3: one private Cloud Run backend service per model, behind Google API Gateway.
# Cloud Run settings come from lib/cloud_run.sh (the same as v1/v2's), the routing table from
# deployment/gateway.py (the same one local_v3.py serves through nginx).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/cloud_run.sh"

# gateway.py and the model-set lookup below use the standard library only (tomllib: 3.11+,
# as the project requires), so any python3 runs them: `uv run` would first install the
# project's environment, torch included, on the deploying machine just to print some JSON.
PYTHON="${PYTHON:-python3}"
CATALOG="${WEIGHTS_CATALOG:-${REPO_ROOT}/weights/catalog.toml}"
# v3 runs the v2 backend image: its base bakes every v2 model, and MODELS=<id> makes each
# service load only its own. One build serves all the services (no build per model), and the
# v2 and v3 deployments of one build run identical bytes.
V3_IMAGE=backend_v2
V3_FRONTEND_IMAGE=frontend_v2  # one page for every version: FRONTEND_MODE picks its mode
SPEC_DIR=""

usage() {
  cat <<USAGE
Usage: deploy_v3.sh [--models SET_OR_IDS] [--build-id ID] [--with-frontend]
                    [--frontend-build-id ID] [--dry-run] [-h|--help]

For each model of SET_OR_IDS (default: v2; a set of weights/catalog.toml, model ids, or both,
comma-separated): deploy Cloud Run service backend-v3-<id> in \$REGION from the image
${V3_IMAGE}:<build id>, which bakes every v2 model, with MODELS=<id>; its size comes from
\$BACKEND_V3_SIZES. The services refuse unauthenticated calls: only the gateway's service
account \$GATEWAY_SERVICE_ACCOUNT (created if missing) may invoke them. Then render the
routing table (deployment/gateway.py openapi) and publish it as a new config of API
\$GATEWAY_API on gateway \$GATEWAY_ID in \$GATEWAY_REGION (creating the API and the gateway
if missing), and print the gateway's URL.

  --models SET_OR_IDS      models to serve, one service each (default: v2)
  --build-id ID            run the ${V3_IMAGE} image of this build (default: the newest
                           successful one)
  --with-frontend          also deploy frontend-v3 (FRONTEND_MODE=v3, API_GATEWAY=<gateway>)
  --frontend-build-id ID   its ${V3_FRONTEND_IMAGE} build (default: the newest successful one)
  --dry-run                print every gcloud command instead of running it (URLs that would
                           be read from Google Cloud are placeholders); the rendered spec
                           is kept and its path printed
  -h, --help               show this help

Creating an API config that uses a service account needs iam.serviceAccounts.actAs on it
(Owner and Editor have it; otherwise roles/iam.serviceAccountUser). Needs python3 (3.11+).
Settings come from deployment/config.env (or \$DEPLOY_CONFIG), overridable from the
environment: PROJECT_ID, REGION, REPOSITORY, BACKEND_V3_SIZES, BACKEND_V3_DEFAULT_SIZE,
BACKEND_THREADS, MAX_INSTANCES, GATEWAY_REGION, GATEWAY_API, GATEWAY_ID,
GATEWAY_SERVICE_ACCOUNT, *_EXTRA_ENV; PYTHON (default: python3), WEIGHTS_CATALOG.
USAGE
}

# The model ids of a selection, in order and without repeats, one per line, resolved as
# weights.catalog's Catalog.select does. The catalog file is read directly: weights.catalog
# imports torchvision, which the deploying machine need not have. Exits 2 on an unknown name.
resolve_models() {
  "${PYTHON}" - "${CATALOG}" "$1" <<'PY'
import sys

try:
    import tomllib
except ImportError:
    sys.exit(f"error: {sys.executable} is Python {sys.version.split()[0]}: 3.11+ is needed")
path, selection = sys.argv[1:]
with open(path, "rb") as file:
    catalog = tomllib.load(file)
sets, models = catalog.get("sets", {}), catalog.get("models", {})
ids = []
for name in (n.strip() for n in selection.split(",")):
    if name in sets:
        ids.extend(sets[name])
    elif name in models:
        ids.append(name)
    elif name:
        print(f"error: unknown model or set {name!r} (sets: {', '.join(sets)};"
              f" models: {', '.join(models)})", file=sys.stderr)
        sys.exit(2)
if not ids:
    print("error: --models selects no model", file=sys.stderr)
    sys.exit(2)
print("\n".join(dict.fromkeys(ids)))
PY
}

backend_service() {
  echo "backend-v3-$(service_name "$1")"
}

# The MEMORY/CPU of a model's service: its BACKEND_V3_SIZES entry, else the default size.
model_size() {
  local model="$1" entry size="${BACKEND_V3_DEFAULT_SIZE}" entries
  IFS=, read -ra entries <<<"${BACKEND_V3_SIZES}"
  for entry in "${entries[@]}"; do
    if [[ "${entry%%=*}" == "${model}" ]]; then
      size="${entry#*=}"
    fi
  done
  [[ "${size}" =~ ^[0-9]+(Mi|Gi)/[0-9.]+$ ]] ||
    die "size of ${model} is '${size}':" \
      "BACKEND_V3_SIZES entries are MODEL=MEMORY/CPU, e.g. vgg16=3Gi/1"
  echo "${size}"
}

deploy_model_backend() {
  local model="$1" image_uri="$2" listed="$3" size
  size="$(model_size "${model}")"
  # LISTED_MODELS holds commas, so the variables are separated by ";" instead, in gcloud's
  # ^DELIM^ syntax (gcloud topic escaping). GET /models, routed to one of these services,
  # then lists every model behind the gateway, not just that service's.
  local env=(
    "MODELS=${model}"
    "LISTED_MODELS=${listed}"
    "GUNICORN_THREADS=${BACKEND_THREADS}"
    "GOOGLE_CLOUD_PROJECT=${PROJECT_ID}"
  )
  if [[ -n "${BACKEND_EXTRA_ENV}" ]]; then
    env+=("${BACKEND_EXTRA_ENV//,/;}")
  fi
  local joined
  joined="$(IFS=';' && echo "${env[*]}")"
  deploy_backend_service "$(backend_service "${model}")" "${image_uri}" \
    "${size%/*}" "${size#*/}" "^;^${joined}" \
    "app=baked-vision,component=backend,version=v3,model=${model}" \
    --no-allow-unauthenticated
}

# image_of_build IMAGE BUILD_ID VAR: VAR=the URI of IMAGE from that build, else from its
# newest successful build.
image_of_build() {
  local component="$1" build="$2" out="$3"
  if [[ -z "${build}" ]]; then
    latest_build_id "${component}" build
    if [[ -z "${build}" ]]; then
      die "no successful build of ${component} in project ${PROJECT_ID}:" \
        "run deployment/submit_build_${component}.sh first"
    fi
  fi
  # Pinned by build id: a tag no later build reuses, so the service runs exactly that build.
  printf -v "${out}" '%s' "$(image_uri "${component}" "${build}")"
}

# Render the routing table to an OpenAPI 2.0 file (a .json name: gcloud tells the format by it).
render_spec() {
  local spec="$1"
  shift
  SPEC_DIR="$(dirname "${spec}")"
  if [[ "${DRY_RUN}" != true ]]; then
    trap 'rm -rf "${SPEC_DIR}"' EXIT
  fi
  "${PYTHON}" "${DEPLOYMENT_DIR}/gateway.py" openapi --title "${GATEWAY_API}" "$@" >"${spec}" ||
    die "could not render the gateway spec"
  if [[ "${DRY_RUN}" == true ]]; then
    echo "The OpenAPI spec it would upload (placeholder addresses): ${spec}" >&2
  fi
}

publish_gateway() {
  local spec="$1" account="$2" config_id="$3"
  # The API is global; it only names the configs.
  if ! exists gcloud api-gateway apis describe "${GATEWAY_API}" --project="${PROJECT_ID}"; then
    run gcloud api-gateway apis create "${GATEWAY_API}" \
      --project="${PROJECT_ID}" \
      --display-name="Baked Vision v3"
  fi
  # A config is immutable: every deploy uploads a new one. The gateway signs each backend call
  # with an ID token of this account, whose audience is the backend's address.
  run gcloud api-gateway api-configs create "${config_id}" \
    --project="${PROJECT_ID}" \
    --api="${GATEWAY_API}" \
    --openapi-spec="${spec}" \
    --backend-auth-service-account="${account}"
  local verb=create
  if exists gcloud api-gateway gateways describe "${GATEWAY_ID}" \
    --project="${PROJECT_ID}" --location="${GATEWAY_REGION}"; then
    verb=update
  fi
  run gcloud api-gateway gateways "${verb}" "${GATEWAY_ID}" \
    --project="${PROJECT_ID}" \
    --location="${GATEWAY_REGION}" \
    --api="${GATEWAY_API}" \
    --api-config="${config_id}"
}

# set_option NAME VALUE: an option's value into the variable main() reads.
set_option() {
  [[ -n "$2" ]] || usage_error "$1 needs a value"
  case "$1" in
    --models) selection="$2" ;;
    --build-id) build_id="$2" ;;
    --frontend-build-id) frontend_build_id="$2" ;;
  esac
}

main() {
  local selection=v2 build_id="" with_frontend=false frontend_build_id=""
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=true ;;
      --with-frontend) with_frontend=true ;;
      --models | --build-id | --frontend-build-id)
        [[ $# -ge 2 ]] || usage_error "$1 needs a value"
        set_option "$1" "$2"
        shift ;;
      --models=* | --build-id=* | --frontend-build-id=*) set_option "${1%%=*}" "${1#*=}" ;;
      *) usage_error "unknown option: $1" ;;
    esac
    shift
  done
  load_config
  require_config BACKEND_THREADS BACKEND_V3_SIZES BACKEND_V3_DEFAULT_SIZE GATEWAY_REGION \
    GATEWAY_API GATEWAY_ID GATEWAY_SERVICE_ACCOUNT
  command -v "${PYTHON}" >/dev/null || die "${PYTHON} not found: deploy_v3.sh needs Python 3.11+"
  [[ -f "${CATALOG}" ]] || die "model catalog not found: ${CATALOG}"

  local models_text models=()
  models_text="$(resolve_models "${selection}")" || exit "$?"
  mapfile -t models <<<"${models_text}"
  local listed
  listed="$(IFS=, && echo "${models[*]}")"

  local image
  image_of_build "${V3_IMAGE}" "${build_id}" image
  echo "Deploying ${image} in ${REGION}, one service per model: ${models[*]}" >&2

  # Created first: a new account takes a moment to become visible to IAM bindings.
  local account="${GATEWAY_SERVICE_ACCOUNT}@${PROJECT_ID}.iam.gserviceaccount.com"
  ensure_service_account "${GATEWAY_SERVICE_ACCOUNT}" \
    "Baked Vision API gateway (invokes the v3 backends)"

  local model
  for model in "${models[@]}"; do
    deploy_model_backend "${model}" "${image}" "${listed}"
  done

  local routes=() service url
  for model in "${models[@]}"; do
    service="$(backend_service "${model}")"
    grant_invoker "${service}" "${account}"
    query url "https://${service}.dry-run.invalid" \
      gcloud run services describe "${service}" \
      --project="${PROJECT_ID}" \
      --region="${REGION}" \
      --format='value(status.url)'
    [[ -n "${url}" ]] || die "service ${service} has no URL"
    routes+=(--route "${model}=${url}")
  done

  # Unique per deploy (API configs are immutable); ids take lowercase letters, digits and -.
  local config_id spec
  config_id="${GATEWAY_API}-$(date -u +%Y%m%d-%H%M%S)"
  spec="$(mktemp -d)/openapi-${config_id}.json"
  # The first model answers GET /models (a v2 selection starts with the catalog's default).
  render_spec "${spec}" "${routes[@]}"
  publish_gateway "${spec}" "${account}" "${config_id}"

  local host
  query host "<hostname of ${GATEWAY_ID}>" \
    gcloud api-gateway gateways describe "${GATEWAY_ID}" \
    --project="${PROJECT_ID}" \
    --location="${GATEWAY_REGION}" \
    --format='value(defaultHostname)'
  [[ -n "${host}" ]] || die "gateway ${GATEWAY_ID} has no hostname"
  local gateway_url="https://${host}"

  if [[ "${with_frontend}" == true ]]; then
    local frontend_image
    image_of_build "${V3_FRONTEND_IMAGE}" "${frontend_build_id}" frontend_image
    # The gateway itself is public, so the page calls it without a token.
    deploy_frontend_service frontend-v3 "${frontend_image}" \
      "$(join_env "FRONTEND_MODE=v3" "API_GATEWAY=${gateway_url}" "${FRONTEND_EXTRA_ENV}")" \
      "app=baked-vision,component=frontend,version=v3"
  fi

  echo "API gateway: ${gateway_url}"
  echo "  try: curl ${gateway_url}/models"
  if [[ "${with_frontend}" != true ]]; then
    echo "  page: deploy_v3.sh --with-frontend, or any frontend with" \
      "FRONTEND_MODE=v3 API_GATEWAY=${gateway_url}"
  fi
}

main "$@"

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
# v3 runs one image per model, all from one build of deployment/cloudbuild_backend_v3.yaml
# (tagged backend_v3): backend_v3_<id>, whose base bakes that model alone, so each service pulls
# and stores its own model only.
V3_BUILD=backend_v3
V3_FRONTEND_IMAGE=frontend_v2  # one page for every version: FRONTEND_MODE picks its mode
SPEC_DIR=""

usage() {
  cat <<USAGE
Usage: deploy_v3.sh [--models SET_OR_IDS] [--build-id ID] [--with-frontend]
                    [--frontend-build-id ID] [--dry-run] [-h|--help]

For each model of SET_OR_IDS (default: v2; a set of weights/catalog.toml, model ids, or both,
comma-separated): deploy Cloud Run service backend-v3-<id> in \$REGION from the image
${V3_BUILD}_<id>:<build id>, which bakes that model alone (one build of
deployment/cloudbuild_backend_v3.yaml holds every model's image: submit_build_${V3_BUILD}.sh);
its size comes from \$BACKEND_V3_SIZES. The services refuse unauthenticated calls: only the
gateway's service account \$GATEWAY_SERVICE_ACCOUNT (created if missing) may invoke them.
Then render the routing table (deployment/gateway.py openapi) and publish it as a new config
of API \$GATEWAY_API on gateway \$GATEWAY_ID in \$GATEWAY_REGION (creating the API and the
gateway if missing), delete the API's configs that no gateway uses but the one the gateway
served before (kept for a rollback), and print the gateway's URL.

  --models SET_OR_IDS      models to serve, one service each (default: v2); each must
                           have its image in the build
  --build-id ID            run the images of this ${V3_BUILD} build (default: the newest
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
environment: PROJECT_ID, REGION, REPOSITORY, BUILD_REGION, BACKEND_V3_SIZES,
BACKEND_V3_DEFAULT_SIZE, BACKEND_THREADS, MAX_INSTANCES, GATEWAY_REGION, GATEWAY_API,
GATEWAY_ID, GATEWAY_SERVICE_ACCOUNT, *_EXTRA_ENV; PYTHON (default: python3), WEIGHTS_CATALOG.
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

# build_or_latest NAME BUILD_ID VAR: VAR=BUILD_ID, or if empty the id of the newest
# successful build tagged NAME (the Cloud Build files tag each build with their name).
build_or_latest() {
  # (No local may share the caller's variable name: it would take the value instead.)
  local name="$1" found="$2" out="$3"
  if [[ -z "${found}" ]]; then
    latest_build_id "${name}" found
    if [[ -z "${found}" ]]; then
      die "no successful build of ${name} in project ${PROJECT_ID}:" \
        "run deployment/submit_build_${name}.sh first"
    fi
  fi
  printf -v "${out}" '%s' "${found}"
}

# The image of a model's backend in a v3 build, pinned by build id: a tag no later build
# reuses, so the service runs exactly that build.
model_image() {
  image_uri "${V3_BUILD}_$1" "$2"
}

# check_build_images BUILD MODEL...: insist that BUILD pushed the image of each MODEL (its
# results.images). A model outside the build's set would otherwise fail only at its own
# service's deploy, after the services before it had changed.
check_build_images() {
  local build="$1" described pushed model missing=() built=()
  shift
  query described "" gcloud builds describe "${build}" \
    --project="${PROJECT_ID}" \
    --region="${BUILD_REGION}" \
    --format=json
  if [[ "${DRY_RUN}" == true ]]; then
    return 0
  fi
  pushed="$("${PYTHON}" -c '
import json, sys
for image in json.load(sys.stdin).get("results", {}).get("images", []):
    print(image.get("name", ""))
' <<<"${described}")" || die "could not read the images of build ${build}"
  for model in "$@"; do
    grep -qxF "$(model_image "${model}" "${build}")" <<<"${pushed}" || missing+=("${model}")
  done
  if ((${#missing[@]})); then
    # The models it has: its code images, backend_v3_<id>:<build>, those whose base is there
    # too (an id may end in "_base").
    local prefix="${REGISTRY}/${PROJECT_ID}/${REPOSITORY}/${V3_BUILD}_" name
    while IFS= read -r name; do
      [[ "${name}" == "${prefix}"*":${build}" ]] || continue
      name="${name#"${prefix}"}"
      name="${name%":${build}"}"
      if grep -qxF "${prefix}${name}_base:${build}" <<<"${pushed}"; then
        built+=("${name}")
      fi
    done <<<"${pushed}"
    die "build ${build} has no image of ${missing[*]} (its models: ${built[*]:-none}):" \
      "choose --models among them, or build those models (deployment/README.md, v3)"
  fi
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

# publish_gateway SPEC ACCOUNT CONFIG_ID VAR: upload SPEC as config CONFIG_ID and point the
# gateway at it; VAR=the config the gateway served before (its full name; empty: new gateway).
publish_gateway() {
  local spec="$1" account="$2" config_id="$3" out="$4"
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
  # Its config now, before the update: the one a rollback goes back to. (A dry run shows the
  # gateway as absent, so its plan shows the create.)
  local describe=(
    gcloud api-gateway gateways describe "${GATEWAY_ID}"
    --project="${PROJECT_ID}"
    --location="${GATEWAY_REGION}"
    --format='value(apiConfig)'
  )
  local verb=create served=""
  if [[ "${DRY_RUN}" == true ]]; then
    print_command "${describe[@]}"
  elif served="$("${describe[@]}" 2>/dev/null)"; then
    verb=update
  else
    served=""
  fi
  run gcloud api-gateway gateways "${verb}" "${GATEWAY_ID}" \
    --project="${PROJECT_ID}" \
    --location="${GATEWAY_REGION}" \
    --api="${GATEWAY_API}" \
    --api-config="${config_id}"
  printf -v "${out}" '%s' "${served}"
}

# A config's "<api>/configs/<id>": names compared that way match whether they spell the
# project by id or by number.
config_key() {
  echo "${1#*/apis/}"
}

# prune_api_configs NEW PREVIOUS: delete the configs of API $GATEWAY_API that no gateway (of
# any API, in any region) uses, except NEW (this deploy's), PREVIOUS (the one the gateway served
# before it: kept for a rollback) and any created after NEW (another deploy's, about to be
# used). API Gateway allows 100 configs per API, and every deploy adds one. Returns non-zero
# when a listing or a deletion fails; deletes nothing it could not check.
prune_api_configs() {
  local new="$1" previous="$2" in_use configs name key status=0
  query in_use "" gcloud api-gateway gateways list \
    --project="${PROJECT_ID}" \
    --format='value(apiConfig)' || return 1
  query configs "<each older config of ${GATEWAY_API} unused, but the previous one>" \
    gcloud api-gateway api-configs list \
    --project="${PROJECT_ID}" \
    --api="${GATEWAY_API}" \
    --sort-by=createTime \
    --format='value(name)' || return 1
  local keep=" ${GATEWAY_API}/configs/${new} "
  [[ -z "${previous}" ]] || keep+="$(config_key "${previous}") "
  while IFS= read -r name; do
    [[ -n "${name}" ]] && keep+="$(config_key "${name}") "
  done <<<"${in_use}"

  while IFS= read -r name; do
    [[ -n "${name}" ]] || continue
    [[ "${name##*/}" == "${new}" ]] && break  # the rest is newer than this deploy's config
    key="$(config_key "${name}")"
    [[ "${keep}" == *" ${key} "* ]] && continue
    run gcloud api-gateway api-configs delete "${name##*/}" \
      --project="${PROJECT_ID}" \
      --api="${GATEWAY_API}" \
      --quiet || status=1
  done <<<"${configs}"
  return "${status}"
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

  local build
  build_or_latest "${V3_BUILD}" "${build_id}" build
  check_build_images "${build}" "${models[@]}"
  echo "Deploying the images of ${V3_BUILD} build ${build} in ${REGION}, one service per" \
    "model: ${models[*]}" >&2

  # Created first: a new account takes a moment to become visible to IAM bindings.
  local account="${GATEWAY_SERVICE_ACCOUNT}@${PROJECT_ID}.iam.gserviceaccount.com"
  ensure_service_account "${GATEWAY_SERVICE_ACCOUNT}" \
    "Baked Vision API gateway (invokes the v3 backends)"

  local model
  for model in "${models[@]}"; do
    deploy_model_backend "${model}" "$(model_image "${model}" "${build}")" "${listed}"
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
  local previous
  publish_gateway "${spec}" "${account}" "${config_id}" previous
  # Only after the gateway serves the new config (a failed update exits above, deleting
  # nothing). A failure here leaves configs behind, not a broken deploy: a warning.
  if ! prune_api_configs "${config_id}" "${previous}"; then
    warn "some unused API configs of ${GATEWAY_API} were not deleted (see above);" \
      "the next deploy tries again"
  fi
  if [[ -n "${previous}" ]]; then
    echo "Previous API config, kept for a rollback: ${previous##*/}" \
      "(gcloud api-gateway gateways update ${GATEWAY_ID} --api=${GATEWAY_API}" \
      "--api-config=${previous##*/} --location=${GATEWAY_REGION} --project=${PROJECT_ID})" >&2
  fi

  local host
  query host "<hostname of ${GATEWAY_ID}>" \
    gcloud api-gateway gateways describe "${GATEWAY_ID}" \
    --project="${PROJECT_ID}" \
    --location="${GATEWAY_REGION}" \
    --format='value(defaultHostname)'
  [[ -n "${host}" ]] || die "gateway ${GATEWAY_ID} has no hostname"
  local gateway_url="https://${host}"

  if [[ "${with_frontend}" == true ]]; then
    local frontend_build frontend_image
    build_or_latest "${V3_FRONTEND_IMAGE}" "${frontend_build_id}" frontend_build
    frontend_image="$(image_uri "${V3_FRONTEND_IMAGE}" "${frontend_build}")"
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

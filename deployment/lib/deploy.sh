#!/usr/bin/env bash
# Deploy one component to Cloud Run from the image of one Cloud Build build.
# The per-component scripts deployment/deploy_<component>_<version>.sh call this.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/cloud_run.sh"

usage() {
  cat <<USAGE
Usage: deploy_${IMAGE:-<component>}.sh [--build-id ID] [--private] [--dry-run] [-h|--help]
   or: deployment/lib/deploy.sh COMPONENT [options]   (COMPONENT: ${KNOWN_IMAGES[*]})

Deploy ${IMAGE:-a component} to Cloud Run as service $(service_name "${IMAGE:-<component>}"),
running the image \${REGISTRY}/\${PROJECT_ID}/\${REPOSITORY}/${IMAGE:-<component>}:<build id>.
A frontend is pointed at its backend of the same version (SERVING_URL), read from Cloud Run.

  --build-id ID  deploy the image of this build (default: the newest successful build)
  --private      backend: refuse unauthenticated calls; frontend: run as
                 \$FRONTEND_SERVICE_ACCOUNT, allowed to invoke the backend, and call it
                 with ID tokens (BACKEND_AUTH=id_token). Use it for both or neither.
  --dry-run      print every gcloud command instead of running it
  -h, --help     show this help

Settings come from deployment/config.env (or \$DEPLOY_CONFIG), overridable from the
environment: PROJECT_ID, REGION, REPOSITORY, sizes (BACKEND_V1_MEMORY, ...), BACKEND_THREADS,
MAX_INSTANCES, STARTUP_BUDGET_SECONDS, BACKEND_REQUEST_TIMEOUT_SECONDS, PUBLIC_ACCESS
(allUsers, or no-iam-check where the organisation forbids allUsers), FRONTEND_SERVICE_ACCOUNT,
*_EXTRA_ENV.
USAGE
}

deploy_backend() {
  local version="$1" image_uri="$2" private="$3"
  local memory_var="BACKEND_${version^^}_MEMORY" cpu_var="BACKEND_${version^^}_CPU"
  require_config "${memory_var}" "${cpu_var}" BACKEND_THREADS PUBLIC_ACCESS
  local access
  if [[ "${private}" == true ]]; then
    access=--no-allow-unauthenticated
  else
    access="$(public_access_flag)"
  fi
  # MODELS is also baked into the image; setting it here keeps the service's configuration
  # complete in one place (--set-env-vars replaces all variables of the previous revision).
  local env
  # GOOGLE_CLOUD_PROJECT: Cloud Run does not set it; the logs need it for full trace names.
  env="$(join_env "MODELS=${version}" "GUNICORN_THREADS=${BACKEND_THREADS}" \
    "GOOGLE_CLOUD_PROJECT=${PROJECT_ID}" "${BACKEND_EXTRA_ENV}")"
  deploy_backend_service "$(service_name "backend_${version}")" "${image_uri}" \
    "${!memory_var}" "${!cpu_var}" "${env}" \
    "app=baked-vision,component=backend,version=${version}" "${access}"
}

deploy_frontend() {
  local version="$1" image_uri="$2" private="$3"
  require_config FRONTEND_MEMORY FRONTEND_CPU FRONTEND_CONCURRENCY MAX_INSTANCES \
    STARTUP_BUDGET_SECONDS
  local backend backend_url
  backend="$(service_name "backend_${version}")"
  query backend_url "<url of ${backend}>" \
    gcloud run services describe "${backend}" \
    --project="${PROJECT_ID}" \
    --region="${REGION}" \
    --format='value(status.url)'
  if [[ -z "${backend_url}" ]]; then
    die "service ${backend} has no URL: deploy it first (deploy_backend_${version}.sh)"
  fi

  # The page's mode is explicit (the frontend could also infer it from the backend's models).
  local env=("SERVING_URL=${backend_url}" "FRONTEND_MODE=${version}") identity=()
  if [[ "${private}" == true ]]; then
    require_config FRONTEND_SERVICE_ACCOUNT
    local account="${FRONTEND_SERVICE_ACCOUNT}@${PROJECT_ID}.iam.gserviceaccount.com"
    ensure_frontend_service_account
    # Only this account may call the backend; the frontend proves it with an ID token whose
    # audience is the backend's URL.
    grant_invoker "${backend}" "${account}"
    env+=("BACKEND_AUTH=id_token")
    identity=(--service-account="${account}")
  fi

  deploy_frontend_service "$(service_name "frontend_${version}")" "${image_uri}" \
    "$(join_env "${env[@]}" "${FRONTEND_EXTRA_ENV}")" \
    "app=baked-vision,component=frontend,version=${version}" "${identity[@]}"
}

main() {
  IMAGE=""
  if [[ $# -gt 0 && "$1" != -* ]]; then
    IMAGE="$1"
    shift
  fi
  local build_id="" private=false
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=true ;;
      --private) private=true ;;
      --build-id)
        [[ $# -ge 2 && -n "$2" ]] || usage_error "--build-id needs a build id"
        build_id="$2"
        shift ;;
      --build-id=*)
        build_id="${1#--build-id=}"
        [[ -n "${build_id}" ]] || usage_error "--build-id needs a build id" ;;
      *) usage_error "unknown option: $1" ;;
    esac
    shift
  done
  [[ -n "${IMAGE}" ]] || usage_error "no component given"
  check_image_name "${IMAGE}"
  load_config

  if [[ -z "${build_id}" ]]; then
    latest_build_id "${IMAGE}" build_id
    if [[ -z "${build_id}" ]]; then
      die "no successful build of ${IMAGE} in project ${PROJECT_ID}:" \
        "run deployment/submit_build_${IMAGE}.sh first"
    fi
  fi
  # Pinned by build id: a tag no later build reuses, so the service runs exactly that build.
  local image_uri
  image_uri="$(image_uri "${IMAGE}" "${build_id}")"
  echo "Deploying ${image_uri} as $(service_name "${IMAGE}") in ${REGION}" >&2

  local component="${IMAGE%_*}" version="${IMAGE##*_}"
  "deploy_${component}" "${version}" "${image_uri}" "${private}"
}

main "$@"

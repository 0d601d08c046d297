#!/usr/bin/env bash
# Submit one component's build to Cloud Build: its base image (skipped when its inputs are
# unchanged) and its code image, as deployment/cloudbuild_<component>.yaml describes.
# The per-component scripts deployment/submit_build_<component>.sh call this.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
Usage: submit_build_${IMAGE:-<component>}.sh [--async] [--dry-run] [-h|--help]
   or: deployment/lib/submit_build.sh COMPONENT [options]   (COMPONENT: ${BUILT_IMAGES[*]})

Build ${IMAGE:-a component} on Cloud Build with deployment/cloudbuild_${IMAGE:-<component>}.yaml,
uploading the repository as .gcloudignore allows. Images go to
\${REGISTRY}/\${PROJECT_ID}/\${REPOSITORY}, tagged with the build id.

  --async     return once the build is queued instead of streaming its log
  --dry-run   print the gcloud command instead of running it
  -h, --help  show this help

Settings come from deployment/config.env (or \$DEPLOY_CONFIG), overridable from the
environment: PROJECT_ID, REGION, REPOSITORY, REGISTRY, BUILD_REGION, EXTRA_SUBSTITUTIONS.
USAGE
}

main() {
  IMAGE=""
  if [[ $# -gt 0 && "$1" != -* ]]; then
    IMAGE="$1"
    shift
  fi
  local async=false
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=true ;;
      --async) async=true ;;
      *) usage_error "unknown option: $1" ;;
    esac
    shift
  done
  [[ -n "${IMAGE}" ]] || usage_error "no component given"
  check_image_name "${IMAGE}" "${BUILT_IMAGES[@]}"
  load_config

  local config="${DEPLOYMENT_DIR}/cloudbuild_${IMAGE}.yaml"
  [[ -f "${config}" ]] || die "no Cloud Build file ${config}"
  local substitutions="_REGISTRY=${REGISTRY},_REPOSITORY=${REPOSITORY}"
  if [[ -n "${EXTRA_SUBSTITUTIONS}" ]]; then
    substitutions+=",${EXTRA_SUBSTITUTIONS}"
  fi

  local command=(
    gcloud builds submit "${REPO_ROOT}"
    --project="${PROJECT_ID}"
    --region="${BUILD_REGION}"
    --config="${config}"
    --substitutions="${substitutions}"
  )
  if [[ "${async}" == true ]]; then
    command+=(--async)
  fi
  run "${command[@]}"
}

main "$@"

#!/usr/bin/env bash
# Fill deliverables.yaml from what is deployed: each Cloud Run service's URL and the build id
# of the image it runs (the deploy scripts tag images by build id).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
  cat <<USAGE
Usage: fill_deliverables.sh [--output FILE] [--dry-run] [-h|--help]

Ask Cloud Run for each service (backend-v1, frontend-v1, backend-v2, frontend-v2) in
\$PROJECT_ID/\$REGION: its URL, and the build id of its image (the image's tag; when the
image is pinned otherwise, the newest successful build of that component). Write them to
deliverables.yaml. A service that is not deployed keeps empty values, with a warning.

  --output FILE  write FILE instead of deliverables.yaml at the repository root
  --dry-run      print every gcloud command, and the file it would write, instead
  -h, --help     show this help

Settings come from deployment/config.env (or \$DEPLOY_CONFIG), overridable from the
environment: PROJECT_ID, REGION, BUILD_REGION.
USAGE
}

# describe_service SERVICE IMAGE: "<url> <image>" of a deployed service, nothing if it is absent.
describe_service() {
  local service="$1" image="$2" errors
  local command=(
    gcloud run services describe "${service}"
    --project="${PROJECT_ID}"
    --region="${REGION}"
    --format='value(status.url,spec.template.spec.containers[0].image)'
  )
  if [[ "${DRY_RUN}" == true ]]; then
    print_command "${command[@]}" >&3
    printf '%s\t%s\n' "<url-of-${service}>" \
      "${REGISTRY}/${PROJECT_ID}/${REPOSITORY}/${image}:<build-id>"
    return 0
  fi
  errors="$(mktemp)"
  if ! "${command[@]}" 2>"${errors}"; then
    # Absent is an answer; anything else (no credentials, no such project) is an error.
    if ! grep -qiE "not found|cannot find" "${errors}"; then
      cat "${errors}" >&2
      rm -f "${errors}"
      die "could not describe ${service}"
    fi
  fi
  rm -f "${errors}"
}

main() {
  local output="${REPO_ROOT}/deliverables.yaml"
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=true ;;
      --output)
        [[ $# -ge 2 && -n "$2" ]] || usage_error "--output needs a file"
        output="$2"
        shift ;;
      --output=*) output="${1#--output=}" ;;
      *) usage_error "unknown option: $1" ;;
    esac
    shift
  done
  load_config
  # The dry-run listing goes to the real stdout, also from inside $(...) and <(...).
  exec 3>&1

  local header
  header="$(cat <<'HEADER'
# Assignment deliverables: for each Cloud Run service, the Cloud Build build whose image it runs
# and its URL. Filled from gcloud by deployment/fill_deliverables.sh (run it after deploying);
# an empty value means that service is not deployed yet.
HEADER
)"
  local content="${header}" image service url image_ref build_id missing=0
  # The assignment's order: v1's pair, then v2's.
  for image in backend_v1 frontend_v1 backend_v2 frontend_v2; do
    service="$(service_name "${image}")"
    url="" image_ref="" build_id=""
    IFS=$'\t' read -r url image_ref < <(describe_service "${service}" "${image}") || true
    if [[ -z "${url}" ]]; then
      warn "${service} is not deployed in ${PROJECT_ID}/${REGION}: its entry stays empty"
      missing=$((missing + 1))
    else
      # .../<image>:<build id>, as deploy.sh pins it; a digest or other tag: ask Cloud Build.
      if [[ "${image_ref}" == */"${image}":* && "${image_ref}" != *@* ]]; then
        build_id="${image_ref##*:}"
      else
        latest_build_id "${image}" build_id
      fi
    fi
    content+=$'\n'"${image}:"$'\n'"  build_id: \"${build_id}\""$'\n'"  service_url: \"${url}\""
  done

  if [[ "${DRY_RUN}" == true ]]; then
    echo "(dry run: nothing written) ${output} would be:"
    printf '%s\n' "${content}"
    return 0
  fi
  local tmp
  tmp="$(mktemp "${output}.XXXXXX")"
  printf '%s\n' "${content}" >"${tmp}"
  mv "${tmp}" "${output}"
  echo "wrote ${output} ($((4 - missing)) of 4 services deployed)" >&2
}

main "$@"

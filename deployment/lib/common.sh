# Helpers shared by the deployment scripts: configuration, errors, --dry-run.
# Sourced, never run. Callers have `set -euo pipefail` on.
# shellcheck shell=bash source-path=SCRIPTDIR

DEPLOYMENT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_ROOT="$(cd "${DEPLOYMENT_DIR}/.." && pwd)"
CONFIG_FILE="${DEPLOY_CONFIG:-${DEPLOYMENT_DIR}/config.env}"
DRY_RUN=false

# The four builds and what each is called where: image names keep the assignment's underscore,
# Cloud Run service names cannot have one.
KNOWN_IMAGES=(backend_v1 backend_v2 frontend_v1 frontend_v2)
# What Cloud Build builds: those, and backend_v3 (an image per model, deployed by deploy_v3.sh).
# shellcheck disable=SC2034  # used by lib/submit_build.sh
BUILT_IMAGES=("${KNOWN_IMAGES[@]}" backend_v3)

die() {
  echo "error: $*" >&2
  exit 1
}

# A mistake on the command line: exit 2, as most Unix tools do.
usage_error() {
  echo "error: $*" >&2
  echo "Run with --help for usage." >&2
  exit 2
}

warn() {
  echo "warning: $*" >&2
}

# Read config.env (the environment overrides it); insist on the settings every script needs.
load_config() {
  [[ -f "${CONFIG_FILE}" ]] || die "config file not found: ${CONFIG_FILE}"
  # shellcheck source=../config.env
  source "${CONFIG_FILE}"
  require_config PROJECT_ID REGION REPOSITORY REGISTRY BUILD_REGION
}

require_config() {
  local name
  for name in "$@"; do
    if [[ -z "${!name:-}" ]]; then
      die "${name} is not set: set it in ${CONFIG_FILE} or in the environment" \
        "(e.g. export ${name}=...; for PROJECT_ID: \"\$(gcloud config get-value project)\")"
    fi
  done
}

# check_image_name IMAGE [KNOWN...]: IMAGE is one of KNOWN (default: KNOWN_IMAGES), else exit 2.
check_image_name() {
  local image="$1" known
  shift
  local names=("$@")
  ((${#names[@]})) || names=("${KNOWN_IMAGES[@]}")
  for known in "${names[@]}"; do
    [[ "${image}" == "${known}" ]] && return 0
  done
  usage_error "unknown component '${image}' (one of: ${names[*]})"
}

service_name() {
  echo "${1//_/-}"
}

image_uri() {
  local image="$1" tag="$2"
  echo "${REGISTRY}/${PROJECT_ID}/${REPOSITORY}/${image}:${tag}"
}

# Print a command as a shell line that can be pasted to run it: words with nothing special to
# the shell as they are, others in single quotes.
print_command() {
  local word line="[dry-run]"
  for word in "$@"; do
    if [[ "${word}" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      line+=" ${word}"
    else
      line+=" '${word//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "${line}"
}

# run CMD...: run a command that changes something; with --dry-run, only print it.
run() {
  if [[ "${DRY_RUN}" == true ]]; then
    print_command "$@"
  else
    "$@"
  fi
}

# query VAR PLACEHOLDER CMD...: VAR=$(CMD...) for a command that only reads; with --dry-run,
# print the command and set VAR to PLACEHOLDER, so the rest of the plan can still be shown.
query() {
  local var="$1" placeholder="$2" output
  shift 2
  if [[ "${DRY_RUN}" == true ]]; then
    print_command "$@"
    output="${placeholder}"
  else
    # A failing command fails the query, also where errexit does not apply (`query ... ||`).
    output="$("$@")" || return
  fi
  printf -v "${var}" '%s' "${output}"
}

# exists CMD...: whether a describe-like command succeeds (its output is not wanted); with
# --dry-run, print it and answer "no", so the plan shows what would be created.
exists() {
  if [[ "${DRY_RUN}" == true ]]; then
    print_command "$@"
    return 1
  fi
  "$@" >/dev/null 2>&1
}

# The id of the newest successful Cloud Build build of an image (empty if there is none):
# the Cloud Build files tag each build with its image name.
latest_build_id() {
  local image="$1" var="$2"
  query "${var}" "<latest successful ${image} build id>" \
    gcloud builds list \
    --project="${PROJECT_ID}" \
    --region="${BUILD_REGION}" \
    --filter="status=SUCCESS AND tags=${image}" \
    --sort-by=~createTime \
    --limit=1 \
    --format='value(id)'
}

# ensure_service_account NAME DESCRIPTION: create NAME@PROJECT.iam.gserviceaccount.com unless
# it exists.
ensure_service_account() {
  local name="$1" description="$2"
  local account="${name}@${PROJECT_ID}.iam.gserviceaccount.com"
  if exists gcloud iam service-accounts describe "${account}" --project="${PROJECT_ID}"; then
    return 0
  fi
  run gcloud iam service-accounts create "${name}" \
    --project="${PROJECT_ID}" \
    --display-name="${description}"
}

# Create the frontend's service account unless it exists (setup_gcp.sh and deploy --private).
# It needs no project role: it is granted run.invoker on the backend service alone.
ensure_frontend_service_account() {
  ensure_service_account "${FRONTEND_SERVICE_ACCOUNT}" \
    "Baked Vision frontend (invokes the private backend)"
}

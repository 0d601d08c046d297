#!/usr/bin/env bash
# One-time, idempotent setup of a Google Cloud project for Baked Vision: APIs, the Artifact
# Registry repository, and the service accounts' permissions. Safe to run again at any time.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
  cat <<USAGE
Usage: setup_gcp.sh [--dry-run] [-h|--help]

In project \$PROJECT_ID: enable the APIs the project uses (Cloud Run, Cloud Build, Artifact
Registry, and for v3 API Gateway with Service Control and Service Management), create the
docker repository \$REPOSITORY in \$REGION unless it exists, let Cloud Build's service
account push there and write logs, and create the frontend's service account.

  --dry-run   print every gcloud command instead of running it
  -h, --help  show this help

Settings come from deployment/config.env (or \$DEPLOY_CONFIG), overridable from the
environment: PROJECT_ID, REGION, REPOSITORY, BUILD_REGION, CLOUD_BUILD_SERVICE_ACCOUNT,
FRONTEND_SERVICE_ACCOUNT.
USAGE
}

main() {
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=true ;;
      *) usage_error "unknown option: $1" ;;
    esac
    shift
  done
  load_config
  require_config FRONTEND_SERVICE_ACCOUNT

  # Enabling an enabled API is a no-op.
  run gcloud services enable \
    run.googleapis.com \
    cloudbuild.googleapis.com \
    artifactregistry.googleapis.com \
    iam.googleapis.com \
    apigateway.googleapis.com \
    servicecontrol.googleapis.com \
    servicemanagement.googleapis.com \
    --project="${PROJECT_ID}"

  if ! exists gcloud artifacts repositories describe "${REPOSITORY}" \
    --project="${PROJECT_ID}" --location="${REGION}"; then
    run gcloud artifacts repositories create "${REPOSITORY}" \
      --project="${PROJECT_ID}" \
      --location="${REGION}" \
      --repository-format=docker \
      --description="Baked Vision images: base and code images of each component"
  fi

  # Cloud Build pushes the images and looks up existing bases (artifactregistry.writer on this
  # repository covers both) and writes build logs. It deploys nothing: the deploy scripts run
  # with your own credentials, so it needs no Cloud Run role.
  local builder="${CLOUD_BUILD_SERVICE_ACCOUNT}"
  if [[ -z "${builder}" ]]; then
    query builder "<cloud-build-service-account>" \
      gcloud builds get-default-service-account \
      --project="${PROJECT_ID}" \
      --region="${BUILD_REGION}" \
      --format='value(serviceAccountEmail)'
    # Reported as projects/<project>/serviceAccounts/<email>.
    builder="${builder##*/}"
  fi
  if [[ -z "${builder}" ]]; then
    die "could not find Cloud Build's service account: set CLOUD_BUILD_SERVICE_ACCOUNT"
  fi
  run gcloud artifacts repositories add-iam-policy-binding "${REPOSITORY}" \
    --project="${PROJECT_ID}" \
    --location="${REGION}" \
    --member="serviceAccount:${builder}" \
    --role=roles/artifactregistry.writer \
    --quiet
  run gcloud projects add-iam-policy-binding "${PROJECT_ID}" \
    --member="serviceAccount:${builder}" \
    --role=roles/logging.logWriter \
    --condition=None \
    --quiet

  ensure_frontend_service_account
  echo "Project ${PROJECT_ID} is set up for Baked Vision." >&2
}

main "$@"

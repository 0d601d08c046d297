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
docker repository \$REPOSITORY in \$REGION unless it exists, grant the account Cloud Build
runs as roles/cloudbuild.builds.builder on the project (read the uploaded source, write
logs) and roles/artifactregistry.writer on the repository (pull caches, push images), and
create the frontend's service account.

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

  # The account Cloud Build runs as. In projects of an organisation created since 2024 it is
  # the Compute Engine default service account, which gets no role at all when the policy
  # iam.automaticIamGrantsForDefaultServiceAccounts is on (the default there): a build then
  # cannot even read its own uploaded source (gs://PROJECT_cloudbuild). So it is granted what
  # a build needs, explicitly, whatever account it is:
  # - roles/cloudbuild.builds.builder (project): read the uploaded source, write build logs,
  #   run the build (the role Cloud Build's own legacy account has);
  # - roles/artifactregistry.writer on the repository alone: pull the previous images (the
  #   layer caches and the base look-up by tag) and push the new ones.
  # It deploys nothing: the deploy scripts run with your own credentials, so no Cloud Run role.
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
  run gcloud projects add-iam-policy-binding "${PROJECT_ID}" \
    --member="serviceAccount:${builder}" \
    --role=roles/cloudbuild.builds.builder \
    --condition=None \
    --quiet
  run gcloud artifacts repositories add-iam-policy-binding "${REPOSITORY}" \
    --project="${PROJECT_ID}" \
    --location="${REGION}" \
    --member="serviceAccount:${builder}" \
    --role=roles/artifactregistry.writer \
    --quiet

  ensure_frontend_service_account
  echo "Project ${PROJECT_ID} is set up for Baked Vision." >&2
}

main "$@"

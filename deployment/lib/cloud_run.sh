# The Cloud Run settings every Baked Vision service shares: port, startup probe, CPU boost,
# concurrency, scaling. One place for them, used by lib/deploy.sh (v1, v2) and deploy_v3.sh.
# Sourced after lib/common.sh, never run.
# shellcheck shell=bash

# The port the images listen on (ENV PORT / EXPOSE in docker/*.Dockerfile). --port also sets
# $PORT in the container, so the two can never disagree at run time.
CONTAINER_PORT=8080

# Comma-join the arguments that are not empty.
join_env() {
  local joined="" item
  for item in "$@"; do
    [[ -n "${item}" ]] && joined+="${joined:+,}${item}"
  done
  echo "${joined}"
}

# The flag that makes a service public, as PUBLIC_ACCESS (config.env) says.
public_access_flag() {
  case "${PUBLIC_ACCESS}" in
    allUsers) echo --allow-unauthenticated ;;
    no-iam-check) echo --no-invoker-iam-check ;;
    *) die "PUBLIC_ACCESS='${PUBLIC_ACCESS}' is neither allUsers nor no-iam-check (config.env)" ;;
  esac
}

# Refuse timeouts that disagree: a request waiting for a starting instance must not time out
# while the instance is still within its startup budget. The request's own work, at worst:
# up to 15 s waiting for room in the decoded-pixel budget (DECODE_WAIT_S), an image URL's 8 s
# deadline, the decode (at most 0.8 s of CPU) and the forward pass: 25 s.
check_timeouts() {
  local work=25
  if ((STARTUP_BUDGET_SECONDS + work > BACKEND_REQUEST_TIMEOUT_SECONDS)); then
    die "STARTUP_BUDGET_SECONDS=${STARTUP_BUDGET_SECONDS} and ${work} s of work do not fit" \
      "in BACKEND_REQUEST_TIMEOUT_SECONDS=${BACKEND_REQUEST_TIMEOUT_SECONDS}: a first request" \
      "to a starting instance could time out (config.env)"
  fi
}

# An HTTP startup probe: Cloud Run sends no traffic until it answers 200. Probing every second
# adds at most a second to a cold start; the failure threshold spreads the budget over it.
startup_probe() {
  local path="$1"
  local settings=(
    "httpGet.path=${path}"
    "httpGet.port=${CONTAINER_PORT}"
    periodSeconds=1
    timeoutSeconds=1
    "failureThreshold=${STARTUP_BUDGET_SECONDS}"
  )
  join_env "${settings[@]}"
}

# deploy_backend_service SERVICE IMAGE_URI MEMORY CPU ENV LABELS ACCESS: a backend service.
# ENV is --set-env-vars' value (it replaces all variables of the previous revision); ACCESS is
# --no-allow-unauthenticated, or the public flag of public_access_flag.
deploy_backend_service() {
  local service="$1" image_uri="$2" memory="$3" cpu="$4" env="$5" labels="$6" access="$7"
  require_config BACKEND_THREADS MAX_INSTANCES STARTUP_BUDGET_SECONDS \
    BACKEND_REQUEST_TIMEOUT_SECONDS
  check_timeouts
  # One number sets both gunicorn's threads (GUNICORN_THREADS, in ENV) and Cloud Run's
  # concurrency: each request Cloud Run lets in gets a thread, and none waits in the instance
  # for one. The startup probe on /ready keeps traffic away until the models are warm. (Not
  # /readyz, nor /healthz: Cloud Run's front end keeps paths ending in "z" for itself.)
  run gcloud run deploy "${service}" \
    --project="${PROJECT_ID}" \
    --region="${REGION}" \
    --image="${image_uri}" \
    --port="${CONTAINER_PORT}" \
    --memory="${memory}" \
    --cpu="${cpu}" \
    --concurrency="${BACKEND_THREADS}" \
    --cpu-boost \
    --startup-probe="$(startup_probe /ready)" \
    --timeout="${BACKEND_REQUEST_TIMEOUT_SECONDS}" \
    --min-instances=0 \
    --max-instances="${MAX_INSTANCES}" \
    --set-env-vars="${env}" \
    --labels="${labels}" \
    "${access}" \
    --quiet
}

# deploy_frontend_service SERVICE IMAGE_URI ENV LABELS [FLAG...]: the (public) Streamlit page;
# FLAGs are added to the deploy, e.g. --service-account=...
deploy_frontend_service() {
  local service="$1" image_uri="$2" env="$3" labels="$4" public
  shift 4
  require_config FRONTEND_MEMORY FRONTEND_CPU FRONTEND_CONCURRENCY MAX_INSTANCES \
    STARTUP_BUDGET_SECONDS PUBLIC_ACCESS
  public="$(public_access_flag)"
  # Streamlit holds each browser session in one process over a websocket: session affinity
  # keeps a session on its instance, and the websocket lives as long as the request timeout.
  run gcloud run deploy "${service}" \
    --project="${PROJECT_ID}" \
    --region="${REGION}" \
    --image="${image_uri}" \
    --port="${CONTAINER_PORT}" \
    --memory="${FRONTEND_MEMORY}" \
    --cpu="${FRONTEND_CPU}" \
    --concurrency="${FRONTEND_CONCURRENCY}" \
    --cpu-boost \
    --startup-probe="$(startup_probe /_stcore/health)" \
    --session-affinity \
    --timeout=3600 \
    --min-instances=0 \
    --max-instances="${MAX_INSTANCES}" \
    --set-env-vars="${env}" \
    --labels="${labels}" \
    "$@" \
    "${public}" \
    --quiet
}

# Let ACCOUNT (a service account email) invoke Cloud Run service SERVICE (idempotent).
grant_invoker() {
  local service="$1" account="$2"
  run gcloud run services add-iam-policy-binding "${service}" \
    --project="${PROJECT_ID}" \
    --region="${REGION}" \
    --member="serviceAccount:${account}" \
    --role=roles/run.invoker \
    --quiet
}

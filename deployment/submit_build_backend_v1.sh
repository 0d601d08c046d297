#!/usr/bin/env bash
# Build backend_v1 (base image, then code image) on Cloud Build with
# deployment/cloudbuild_backend_v1.yaml.
# A thin wrapper: the work is in deployment/lib/submit_build.sh; --help lists the options.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/lib/submit_build.sh" backend_v1 "$@"

#!/usr/bin/env bash
# Build backend_v3 (per model of the v2 set: a base with that model alone, then its code image)
# on Cloud Build with deployment/cloudbuild_backend_v3.yaml; deploy_v3.sh deploys its images.
# A thin wrapper: the work is in deployment/lib/submit_build.sh; --help lists the options.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/lib/submit_build.sh" backend_v3 "$@"

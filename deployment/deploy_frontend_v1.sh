#!/usr/bin/env bash
# Deploy frontend_v1 to Cloud Run (service frontend-v1) from the image of a Cloud Build build.
# A thin wrapper: the work is in deployment/lib/deploy.sh; --help lists the options.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/lib/deploy.sh" frontend_v1 "$@"

#!/usr/bin/env bash
# Deploy backend_v2 to Cloud Run (service backend-v2) from the image of a Cloud Build build.
# A thin wrapper: the work is in deployment/lib/deploy.sh; --help lists the options.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/lib/deploy.sh" backend_v2 "$@"

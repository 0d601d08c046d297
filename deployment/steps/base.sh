#!/usr/bin/env bash
# A Cloud Build step (in gcr.io/cloud-builders/docker): make this build's base image, building
# it only when what it is built from changed.
#
#   base.sh IMAGE BUILD_ID DOCKERFILE [--bake=DOCKERFILE] [--build-arg=NAME=VALUE]... -- INPUT...
#
# The base is named by its inputs: IMAGE:inputs-<hash of the Dockerfiles, the INPUT files and
# the build arguments>. If the registry has that tag, it is pulled, not built (a code-only
# change: no base is built or uploaded, and the previous base is not even pulled). Otherwise
# the previous IMAGE:latest is pulled as its layer cache, so only the layers after the first
# changed input are rebuilt, and pushed. --bake=DOCKERFILE first builds that Dockerfile (for
# the backend: torch, the weights, the ONNX export), cached from and pushed as <IMAGE's
# repository>/<its name>:latest (docker/backend-bake.Dockerfile: backend_bake), shared by
# every image built with it (backend_v1, v2, v3); the base is then built with
# BAKE_IMAGE=<that image>, and copies its bundles.
# Two builds, each with one --cache-from: Docker's classic builder follows the first cache
# image that matches for the rest of a build, so one build cached from both the previous base
# and the previous bake stage rebuilt one of them from nothing (torch, every model's export).
# Either way the base ends up tagged IMAGE:latest (the next build's cache) and
# IMAGE:BUILD_ID (what this build's code image is built FROM).
set -euo pipefail

image="$1" build_id="$2" dockerfile="$3"
shift 3
bake="" args=() inputs=()
while (($#)); do
  case "$1" in
    --bake=*) bake="${1#--bake=}"; shift ;;
    --build-arg=*) args+=("${1#--build-arg=}"); shift ;;
    --) shift; inputs=("$@"); break ;;
    *) echo "base.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Same bytes and arguments, same tag, whichever machine computes it.
hash="$(
  {
    printf 'arg %s\n' "${args[@]}" | LC_ALL=C sort
    find "${dockerfile}" ${bake:+"${bake}"} "${inputs[@]}" \
      -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum
)"
base="${image}:inputs-${hash:0:24}"

# A pull is the look-up: it needs only registry read, which building FROM the base needs anyway.
errors="$(mktemp)"
if docker pull --quiet "${base}" 2>"${errors}"; then
  echo "found ${base}: not rebuilt"
else
  if grep -qiE 'not found|manifest unknown' "${errors}"; then
    echo "no ${base} yet: building it"
  else
    echo "could not pull ${base} ($(head -n 1 "${errors}")): building it; to find it next" \
      "time, the build's account needs roles/artifactregistry.reader" >&2
  fi
  # The cloudbuild network reaches the metadata server: a gs:// weights file is read with the
  # build account's credentials (README, "Your own classifier").
  build_args=(--network=cloudbuild)
  for arg in "${args[@]}"; do build_args+=(--build-arg "${arg}"); done
  docker pull --quiet "${image}:latest" || echo "no ${image}:latest yet: a first build"
  if [[ -n "${bake}" ]]; then
    name="$(basename "${bake}" .Dockerfile)"
    bake_image="${image%/*}/${name//-/_}:latest"
    docker pull --quiet "${bake_image}" || echo "no ${bake_image} yet: it is built afresh"
    docker build --file "${bake}" --cache-from "${bake_image}" "${build_args[@]}" \
      --tag "${bake_image}" .
    docker push --quiet "${bake_image}"
    build_args+=(--build-arg "BAKE_IMAGE=${bake_image}")
  fi
  docker build --file "${dockerfile}" --cache-from "${image}:latest" "${build_args[@]}" \
    --tag "${base}" .
  docker push --quiet "${base}"
fi
rm -f "${errors}"
docker tag "${base}" "${image}:latest"
docker push --quiet "${image}:latest"
docker tag "${base}" "${image}:${build_id}"

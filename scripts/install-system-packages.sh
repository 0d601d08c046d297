#!/usr/bin/env bash
# Install the Debian packages the tests use, only those that are missing:
# chromium (the browser test), podman/buildah and friends (container tests, see
# tests/containers.py), nginx (the local stand-in for the v3 API gateway), Docker Engine
# 20.10, a registry and busybox (the Cloud Build files run for real, see tests/dockerd.py).
set -euo pipefail

usage() { echo "usage: $0 [--dry-run]" >&2; }
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
done

# command -> package(s) that provide it
declare -A wanted=(
  [chromium]="chromium"
  [podman]="podman buildah runc fuse-overlayfs uidmap slirp4netns containernetworking-plugins"
  [debootstrap]="debootstrap"
  [nginx]="nginx-light"
  [dockerd]="docker.io"
  [docker-registry]="docker-registry"
  [busybox]="busybox-static"
)
missing=()
for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    read -r -a pkgs <<<"${wanted[$cmd]}"
    missing+=("${pkgs[@]}")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
if [ "$dry_run" -eq 1 ]; then
  echo "${sudo[*]} apt-get update && ${sudo[*]} apt-get install -y ${missing[*]}"
  exit 0
fi
echo "installing system packages: ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null

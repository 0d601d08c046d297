#!/usr/bin/env bash
# Print the content tag of a base image: a hash of everything the base is built from (its
# Dockerfile, the files it copies, its build arguments). The Cloud Build files look that tag up
# in Artifact Registry and skip building the base when it is already there.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--arg NAME=VALUE]... PATH...

Print "inputs-<24 hex digits>": the sha256 of the files under each PATH (sorted by path;
__pycache__ and *.pyc skipped, as .gcloudignore skips them) and of each build argument.
Same inputs, same tag; any changed byte or argument, a new tag.

  --arg NAME=VALUE  a build argument of the base (repeatable; order does not matter)
  -h, --help        show this help
USAGE
}

args=()
paths=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --arg)
      [[ $# -ge 2 && "$2" == *=* ]] || { echo "error: --arg needs NAME=VALUE" >&2; exit 2; }
      args+=("$2"); shift 2 ;;
    --arg=*)
      [[ "${1#--arg=}" == *=* ]] || { echo "error: --arg needs NAME=VALUE" >&2; exit 2; }
      args+=("${1#--arg=}"); shift ;;
    --) shift; paths+=("$@"); break ;;
    -*) echo "error: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) paths+=("$1"); shift ;;
  esac
done
if ((${#paths[@]} == 0)); then
  echo "error: no input PATH given" >&2
  usage >&2
  exit 2
fi
for path in "${paths[@]}"; do
  [[ -e "$path" ]] || { echo "error: no such input: $path" >&2; exit 1; }
done

digest="$(
  {
    # Build arguments, sorted so their order on the command line does not matter.
    if ((${#args[@]})); then
      printf 'arg %s\n' "${args[@]}" | LC_ALL=C sort
    fi
    # Files: "sha256  path" per file, in byte order of the path.
    find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' -print0 \
      | LC_ALL=C sort -z \
      | xargs -0 -r sha256sum
  } | sha256sum
)"
echo "inputs-${digest:0:24}"

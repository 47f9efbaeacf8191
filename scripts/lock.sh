#!/usr/bin/env bash
# Re-lock: resolve pyproject.toml into uv.lock (every extra, Linux x86_64 + aarch64) and export the
# hash-pinned requirement files that scripts/bootstrap.sh and the Dockerfile install.
#   bash scripts/lock.sh            re-lock, keeping every version that still satisfies pyproject.toml
#   bash scripts/lock.sh --upgrade  re-lock to the newest versions pyproject.toml allows
#   bash scripts/lock.sh --check    fail if uv.lock or requirements/*.txt disagree with pyproject.toml
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
uv="${UV:-$root/.venv/bin/uv}"
if [ ! -x "$uv" ]; then
  echo "lock.sh: $uv not found; run 'source scripts/bootstrap.sh dev' first (uv is pinned in the lock)" >&2
  exit 2
fi
mode="${1:-}"
export_one() {  # $1: output file, rest: uv export selection
  local out="$1"
  shift
  "$uv" export --quiet --frozen --no-emit-project --no-header --format requirements.txt "$@" -o "$out"
}
export_all() {  # $1: output folder
  export_one "$1/build.txt" --only-group build
  export_one "$1/runtime.txt"
  export_one "$1/dev.txt" --all-extras
}
case "$mode" in
  --check)
    "$uv" lock --check --quiet
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    export_all "$tmp"
    for f in build runtime dev; do
      if ! cmp -s "$tmp/$f.txt" "requirements/$f.txt"; then
        echo "lock.sh: requirements/$f.txt is not the export of uv.lock; run 'bash scripts/lock.sh'" >&2
        exit 1
      fi
    done
    echo "uv.lock and requirements/*.txt agree with pyproject.toml"
    ;;
  "" | --upgrade)
    "$uv" lock ${mode:+"$mode"}
    mkdir -p requirements
    export_all requirements
    ;;
  *) echo "usage: bash scripts/lock.sh [--check|--upgrade]" >&2; exit 2 ;;
esac

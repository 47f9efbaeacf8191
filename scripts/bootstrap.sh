#!/usr/bin/env bash
# Create .venv (if needed) and install exactly the lock into it, hash-checked, then the project
# itself (editable) with no dependency resolution and no build isolation, so nothing unpinned
# is fetched. Usage: source scripts/bootstrap.sh [runtime|dev]   (default: runtime)
# requirements/*.txt are exported from uv.lock by scripts/lock.sh; never edit them by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile="${1:-runtime}"
case "$profile" in
  runtime | dev) ;;
  *) echo "bootstrap.sh: unknown profile '$profile' (runtime or dev)" >&2; exit 2 ;;
esac
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
# shellcheck disable=SC1091
. "$root/.venv/bin/activate"
pip_install() {
  python -m pip install -q --disable-pip-version-check --no-input "$@"
}
pip_install --require-hashes --no-deps -r "$root/requirements/build.txt" -r "$root/requirements/$profile.txt"
pip_install --no-deps --no-build-isolation -e "$root"

#!/usr/bin/env bash
# Create .venv (if needed) and install the project with the given extras.
# Usage: source scripts/bootstrap.sh [extras]   e.g. "dev"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
# shellcheck disable=SC1091
. "$root/.venv/bin/activate"
python -m pip install -q --disable-pip-version-check --upgrade pip
if [ -n "$extras" ]; then
  python -m pip install -q --disable-pip-version-check -e "$root[$extras]"
else
  python -m pip install -q --disable-pip-version-check -e "$root"
fi

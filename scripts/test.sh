#!/usr/bin/env bash
# The full check: install, generated-code freshness, lint, types, the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/bootstrap.sh dev
echo "== the lock agrees with pyproject.toml"
bash scripts/lock.sh --check
echo "== generated code is fresh"
python tools/gen_proto.py --check
echo "== ruff"
ruff check .
echo "== mypy"
mypy
echo "== pytest"
python -m pytest -q "$@"

#!/usr/bin/env bash
# Quickstart: install, then run the sidecar on the embedded default.
# For now that is offline mode with examples/fallback.json; PORT defaults to 50051
# here so it runs without root (the daemon's own default is 80, like Stigg's).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
export OFFLINE="${OFFLINE:-1}"
export PORT="${PORT:-50051}"
export ENTITLEMENTS_FALLBACK="${ENTITLEMENTS_FALLBACK:-$(cat "$root/examples/fallback.json")}"
echo "sidecar on 127.0.0.1:$PORT (try: .venv/bin/python examples/query.py 127.0.0.1:$PORT)" >&2
exec entitlement-sidecar

#!/usr/bin/env bash
# Quickstart: install, then run the whole system on the embedded default:
# upstream (SQLite, the packaged demo catalog, demo customers) + a sidecar reading
# through it, in one process, no Redis. The sidecar listens on 127.0.0.1:50051
# (override with PORT); the daemon's own default is 80, like Stigg's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
cd "$root"
exec entitlement-demo

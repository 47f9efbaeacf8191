#!/usr/bin/env bash
# Image smoke test: build the image from the Dockerfile and run the real topology in containers.
#
# Needs root (it starts its own dockerd). Installs what is missing via apt (docker.io,
# debootstrap, redis-server), makes the local stand-in for python:3.11-slim when that tag is
# absent (docs/image.md, "Building offline"), starts a private dockerd whose data root is cached
# under $IMAGE_TEST_CACHE (default /var/cache/entitlement-sidecar-image) so the base image and
# the build cache survive between runs, builds with --pull=false, then hands over to
# scripts/image_smoke.py. Everything started here is stopped in the EXIT trap, by pid or name.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
started="$(now_ms)"
seconds_since() { local ms=$(($(now_ms) - $1)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
say() { echo "== [$(seconds_since "$started")s] $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "test-image.sh: must run as root (it starts its own dockerd)" >&2
  exit 2
fi

cache="${IMAGE_TEST_CACHE:-/var/cache/entitlement-sidecar-image}"
image="${IMAGE_TAG:-entitlement-sidecar:smoke}"
base="python:3.11-slim"

missing=()
command -v dockerd > /dev/null || missing+=(docker.io)
command -v debootstrap > /dev/null || missing+=(debootstrap)
command -v redis-server > /dev/null || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q > /dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null
fi
# The docker.io client matches its daemon's API; another docker earlier on PATH may not.
docker_cli=/usr/bin/docker
[ -x "$docker_cli" ] || docker_cli="$(command -v docker)"

mkdir -p "$cache"
# One run at a time per cache: a data root belongs to one dockerd.
exec 9> "$cache/lock"
flock -w 900 9 || { echo "test-image.sh: $cache is locked by another run" >&2; exit 1; }

run="$(mktemp -d /tmp/entitlement-image.XXXXXX)"
run_id="$(basename "$run" | tr 'A-Z.' 'a-z-')"
export DOCKER_HOST="unix://$run/docker.sock"
dockerd_pid=""

cleanup() {
  local rc=$?
  set +e
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2> /dev/null; then
    # Backstop for a driver that died before its own cleanup: our containers and network by label.
    ids="$("$docker_cli" ps -aq --filter "label=entitlement-smoke.run=$run_id")"
    [ -n "$ids" ] && "$docker_cli" rm -f $ids > /dev/null
    nets="$("$docker_cli" network ls -q --filter "label=entitlement-smoke.run=$run_id")"
    [ -n "$nets" ] && "$docker_cli" network rm $nets > /dev/null
    kill "$dockerd_pid"
    for _ in $(seq 150); do kill -0 "$dockerd_pid" 2> /dev/null || break; sleep 0.1; done
    kill -0 "$dockerd_pid" 2> /dev/null && kill -9 "$dockerd_pid"
  fi
  if [ -f "$run/redis.pid" ]; then
    kill "$(cat "$run/redis.pid")" 2> /dev/null
  fi
  if [ "$rc" != 0 ] && [ -f "$run/dockerd.log" ]; then
    echo "-- dockerd log (last 10 lines)" >&2
    tail -n 10 "$run/dockerd.log" >&2
  fi
  rm -rf "$run"
  say "done (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "dockerd (data root $cache/docker, run dir $run)"
setsid dockerd --data-root "$cache/docker" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
  -H "unix://$run/docker.sock" > "$run/dockerd.log" 2>&1 < /dev/null &
dockerd_pid=$!
for _ in $(seq 300); do
  "$docker_cli" version > /dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2> /dev/null || { echo "dockerd exited" >&2; exit 1; }
  sleep 0.1
done
"$docker_cli" version > /dev/null
# Leftovers of an earlier run that was killed before its trap ran (we hold the lock).
stale="$("$docker_cli" ps -aq --filter label=entitlement-smoke.run)"
[ -n "$stale" ] && "$docker_cli" rm -f $stale > /dev/null
stale="$("$docker_cli" network ls -q --filter label=entitlement-smoke.run)"
[ -n "$stale" ] && "$docker_cli" network rm $stale > /dev/null

if ! "$docker_cli" image inspect "$base" > /dev/null 2>&1; then
  say "base image $base absent: building the local stand-in with debootstrap"
  rootfs="$run/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
    > "$run/debootstrap.log" 2>&1 || { tail -n 30 "$run/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # pip inside RUN goes through this machine's TLS-intercepting proxy: trust the same extra CAs.
  cp /usr/local/share/ca-certificates/*.crt "$rootfs"/usr/local/share/ca-certificates/ 2> /dev/null || true
  env -u TMPDIR chroot "$rootfs" update-ca-certificates > /dev/null
  ln -sf /usr/bin/python3 "$rootfs"/usr/local/bin/python
  tar -C "$rootfs" -c . | "$docker_cli" import --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "docker.io/library/$base" > /dev/null
  rm -rf "$rootfs"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import stigg_sidecar_sdk" 2> /dev/null; then
  say "dev venv"
  # shellcheck disable=SC1091
  source scripts/bootstrap.sh dev > /dev/null
fi
version="$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
revision="$(git rev-parse HEAD 2> /dev/null || echo unknown)"

say "docker build $image (version $version)"
build_started="$(now_ms)"
"$docker_cli" build --pull=false -t "$image" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" . > "$run/build.log" 2>&1 \
  || { tail -n 40 "$run/build.log" >&2; exit 1; }
size="$("$docker_cli" image inspect -f '{{.Size}}' "$image")"
base_size="$("$docker_cli" image inspect -f '{{.Size}}' "$base")"
echo "== image $image: $((size / 1000000)) MB (base $base: $((base_size / 1000000)) MB)," \
  "built in $(seconds_since "$build_started") s"

say "smoke test"
.venv/bin/python scripts/image_smoke.py --docker "$docker_cli" --image "$image" \
  --run-id "$run_id" --run-dir "$run" --version "$version"

"""``<console script> healthcheck``: probe a running service's own HTTP side port, exit 0 or 1.

Made for a container ``HEALTHCHECK`` (and ``docker run --health-cmd``), so it needs no curl and
no other binary: stdlib only, one short HTTP request, one line of output, a bounded time.

The port and address come from the same environment variables, with the same defaults, that the
service itself reads: a container's health check runs with the container's environment, so it
finds the port the service really opened. They are listed here as data (``SIDE_PORTS``) rather
than read through each service's settings module, so the foundation never imports a service; a
test holds the defaults equal to the services' own.

Which service to probe: by default the one of the script it was invoked through
(``entitlement-upstream healthcheck`` probes upstream). ``--service auto`` reads which of our
scripts runs as PID 1 (``/proc/1/cmdline``) and probes that one; the image's single
``HEALTHCHECK`` uses it, so one image is correctly checked whichever service its command runs.

Readiness (``/readyz``) by default: Docker only reports an unhealthy container (Compose's
``depends_on: service_healthy`` waits for it), and Kubernetes ignores ``HEALTHCHECK`` and runs its
own probes. ``--live`` probes ``/livez`` instead. Upstream has only ``/livez``.
"""

from __future__ import annotations

import argparse
import http.client
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from entitlements.envconfig import SettingsError, Spec, int_in, read_env, text

# console script -> the service it runs
SCRIPTS = {
    "entitlement-sidecar": "sidecar",
    "entitlement-upstream": "upstream",
    "entitlement-persistent-cache": "persistent-cache",
    "entitlement-demo": "demo",
}
DEFAULT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Target:
    service: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class SidePort:
    """Where a service's health endpoints listen: its variables, their defaults, the path."""

    port: Spec
    address: Spec
    ready_path: str = "/readyz"


def _side_port(
    port_env: str, port: int, address_env: str, address: str, ready_path: str = "/readyz"
) -> SidePort:
    return SidePort(
        Spec(port_env, "port", int_in(0, 65535), str(port), "health port"),
        Spec(address_env, "address", text, address, "health address"),
        ready_path,
    )


_SIDECAR = _side_port("HTTP_PORT", 8080, "HTTP_BIND_ADDRESS", "0.0.0.0")
SIDE_PORTS: Mapping[str, SidePort] = {
    "sidecar": _SIDECAR,
    # The demo's side port is its sidecar's: same variables, same defaults.
    "demo": _SIDECAR,
    "persistent-cache": _side_port("HTTP_PORT", 8081, "HTTP_BIND_ADDRESS", "0.0.0.0"),
    # Upstream serves its health endpoints on its API port, and has no /readyz.
    "upstream": _side_port("UPSTREAM_PORT", 8787, "UPSTREAM_BIND_ADDRESS", "127.0.0.1", "/livez"),
}


def _reachable(address: str) -> str:
    """The address to dial for a listener bound to ``address`` (a wildcard means loopback)."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def target(service: str, env: Mapping[str, str], *, live: bool = False) -> Target:
    """Where ``service`` answers its health endpoint, given the environment it runs with."""
    side = SIDE_PORTS.get(service)
    if side is None:
        raise ValueError(f"unknown service {service!r}")
    values, problems = read_env((side.port, side.address), env)
    if problems:
        raise SettingsError(problems)
    address, port = str(values["address"]), int(values["port"])
    path = "/livez" if live else side.ready_path
    if port == 0:
        raise SettingsError([f"{service}: its port is 0 (chosen at start), nothing to probe"])
    return Target(service, _reachable(address), port, path)


def running_service(proc: Path = Path("/proc")) -> str | None:
    """The service PID 1 runs, from its command line (an init such as tini passes it on)."""
    try:
        raw = (proc / "1" / "cmdline").read_bytes()
    except OSError:
        return None
    for arg in raw.split(b"\0"):
        name = os.path.basename(arg.decode(errors="replace"))
        if name in SCRIPTS:
            return SCRIPTS[name]
    return None


def probe(where: Target, timeout: float) -> tuple[bool, str]:
    """One GET; healthy on a 2xx answer. Never raises for network trouble."""
    connection = http.client.HTTPConnection(where.host, where.port, timeout=timeout)
    try:
        connection.request("GET", where.path, headers={"User-Agent": "healthcheck"})
        response = connection.getresponse()
        response.read(4096)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        connection.close()
    return 200 <= response.status < 300, f"HTTP {response.status}"


def main(prog: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    own = SCRIPTS.get(prog, "sidecar")
    parser = argparse.ArgumentParser(
        prog=f"{prog} healthcheck",
        description="Probe the running service's HTTP side port; exit 0 when healthy, else 1.",
    )
    parser.add_argument(
        "--service",
        choices=["auto", *SCRIPTS.values()],
        default=own,
        help=f"which service to probe (default: {own}; auto: the one running as PID 1)",
    )
    parser.add_argument("--live", action="store_true", help="probe /livez instead of /readyz")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to wait for the answer (default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    service: str = args.service
    if service == "auto":
        service = running_service() or own
    try:
        where = target(service, os.environ if env is None else env, live=args.live)
    except SettingsError as exc:
        print(f"unhealthy: {service}: " + "; ".join(exc.problems))
        return 1
    healthy, detail = probe(where, args.timeout)
    print(f"{'healthy' if healthy else 'unhealthy'}: {service} {where.url}: {detail}")
    return 0 if healthy else 1

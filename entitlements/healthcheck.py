"""``<console script> healthcheck``: probe a running service's own HTTP side port, exit 0 or 1.

Made for a container ``HEALTHCHECK`` (and ``docker run --health-cmd``), so it needs no curl and
no other binary: stdlib only, one short HTTP request, one line of output, a bounded time.

The port and address come from the same environment variables, parsed by the same code and with
the same defaults, that the service itself reads: a container's health check runs with the
container's environment, so it finds the port the service really opened.

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

from entitlements.envconfig import SettingsError, Spec, read_env

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


def _side_port(specs: Sequence[Spec], env: Mapping[str, str]) -> tuple[str, int]:
    """HTTP_BIND_ADDRESS and HTTP_PORT as the service's own settings module parses them."""
    wanted = [spec for spec in specs if spec.env in ("HTTP_PORT", "HTTP_BIND_ADDRESS")]
    values, problems = read_env(wanted, env)
    if problems:
        raise SettingsError(problems)
    return str(values["http_bind_address"]), int(values["http_port"])


def _reachable(address: str) -> str:
    """The address to dial for a listener bound to ``address`` (a wildcard means loopback)."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def target(service: str, env: Mapping[str, str], *, live: bool = False) -> Target:
    """Where ``service`` answers its health endpoint, given the environment it runs with."""
    path = "/livez" if live else "/readyz"
    if service in ("sidecar", "demo"):
        # The demo's side port is its sidecar's: same variables, same defaults.
        from sidecar.settings import SPECS as SIDECAR_SPECS

        address, port = _side_port(SIDECAR_SPECS, env)
    elif service == "persistent-cache":
        from persistent_cache.settings import SPECS as CACHE_SPECS

        address, port = _side_port(CACHE_SPECS, env)
    elif service == "upstream":
        from upstream.settings import SettingsError as UpstreamSettingsError
        from upstream.settings import UpstreamSettings

        try:
            settings = UpstreamSettings.from_env(env)
        except UpstreamSettingsError as exc:
            raise SettingsError(exc.problems) from None
        address, port, path = settings.bind_address, settings.port, "/livez"
    else:
        raise ValueError(f"unknown service {service!r}")
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

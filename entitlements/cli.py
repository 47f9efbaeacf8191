"""The command line every console script shares: ``--help`` and ``--version``, nothing more.

Settings come from environment variables only (each service's settings module reads them), so
the command line just answers what a person asks before starting a daemon: what is this, which
version, and where is the configuration documented. Unknown arguments are an error (exit 2)
rather than ignored, so a typo never starts a server with settings the operator did not mean.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata

from entitlements.envconfig import Spec

DISTRIBUTION = "entitlement-sidecar"
PROJECT_URL = "https://github.com/entitlement-sidecar/entitlement-sidecar"


def package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _variables_text(specs: Iterable[Spec]) -> str:
    lines = []
    for spec in specs:
        if spec.default is None:
            default = "see docs"
        elif spec.default == "":
            default = "empty"
        else:
            default = spec.default
        lines.append(f"  {spec.env:<28} (default: {default})")
    return "\n".join(lines)


def parse_command_line(
    prog: str,
    purpose: str,
    *,
    docs: str,
    variables: Iterable[Spec] = (),
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``); ``--help``/``--version`` print and exit 0.

    ``PROG healthcheck ...`` probes the running service and exits (``entitlements/healthcheck.py``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["healthcheck"]:
        from entitlements.healthcheck import main as healthcheck

        raise SystemExit(healthcheck(prog, args[1:]))
    listed = _variables_text(variables)
    epilog = "Configuration is read from environment variables only"
    epilog += f":\n{listed}\n" if listed else ".\n"
    epilog += f"Every variable with its meaning: {docs}\n({PROJECT_URL})"
    epilog += f"\n\n`{prog} healthcheck` probes the running service (exit 0/1; --help for more)."
    parser = argparse.ArgumentParser(
        prog=prog,
        description=purpose,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{prog} {package_version()}")
    return parser.parse_args(args)

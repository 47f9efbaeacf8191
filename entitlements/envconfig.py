"""Building settings from environment variables: parsers, the spec table, the docs table.

Shared by the sidecar, upstream and the persistent cache so all three read, validate and
document their variables the same way: every problem is collected and reported at once, and the
configuration table in the docs is rendered from the same specs the code reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Spec:
    env: str
    attr: str
    parse: Callable[[str], Any]
    # None: no default here (computed elsewhere, or required).
    default: str | None
    doc: str


def read_env(specs: Iterable[Spec], env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Parse every spec present (or defaulted); returns the values and every problem found."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in specs:
        raw = env.get(spec.env, spec.default)
        if raw is None:
            continue
        try:
            values[spec.attr] = spec.parse(raw)
        except ValueError as exc:
            problems.append(f"{spec.env}: {exc}")
    return values, problems


def render_table(specs: Iterable[Spec]) -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for spec in specs:
        if spec.default is None:
            default = "(see meaning)"
        elif spec.default == "":
            default = "(empty)"
        else:
            default = f"`{spec.default}`"
        rows.append(f"| `{spec.env}` | {default} | {spec.doc} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- parsers


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {raw!r}")


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number, got {raw!r}")
    return value


def text(raw: str) -> str:
    return raw.strip()


def non_empty(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {raw!r}")
    return value


def log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value == "warning":
        value = "warn"
    if value not in ("debug", "info", "warn", "error"):
        raise ValueError(f"expected one of error, warn, info, debug; got {raw!r}")
    return value


def log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("auto", "json", "console"):
        raise ValueError(f"expected auto, json or console; got {raw!r}")
    return value


# PEXPIRE takes milliseconds as a signed 64-bit integer; a century is far inside that.
MAX_TTL_SECONDS = 100 * 366 * 24 * 3600


def keys_ttl(raw: str) -> int:
    """Redis key TTL in seconds; negative means never expire, 0 is refused."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"expected a whole number of seconds, got {raw!r}") from None
    if value == 0:
        # Every write would expire at once: Redis would never hold anything.
        raise ValueError("0 would expire every key at once; use a negative value for no expiry")
    if abs(value) > MAX_TTL_SECONDS:
        raise ValueError(f"must be at most {MAX_TTL_SECONDS} seconds either way, got {value}")
    return value


#: LOG_LEVEL and LOG_FORMAT: every service logs the same way, so they read them the same way.
LOGGING_SPECS: tuple[Spec, ...] = (
    Spec("LOG_LEVEL", "log_level", log_level, "info", "`error`, `warn`, `info` or `debug`."),
    Spec(
        "LOG_FORMAT",
        "log_format",
        log_format,
        "auto",
        "`json`, `console`, or `auto` (JSON unless stderr is a terminal).",
    ),
)

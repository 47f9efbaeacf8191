"""Log event names are snake_case identifiers in every service: prose goes into fields.

Dashboards and alerts match on ``event``; one spelling rule keeps them from having to guess.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("entitlements", "sidecar", "upstream", "persistent_cache", "demo")
LEVELS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical"})
SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def _is_logger(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("log", "logger")
    # structlog.get_logger("x").error("...")
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get_logger"
    )


def log_events(source: str) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LEVELS
            and _is_logger(node.func.value)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def test_every_event_name_is_snake_case() -> None:
    bad = []
    seen = 0
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for event, line in log_events(path.read_text()):
                seen += 1
                if not SNAKE.fullmatch(event):
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {event!r}")
    assert seen > 30, "the scan found almost no log calls: has the logging idiom changed?"
    assert not bad, "\n".join(bad)


def test_the_scan_catches_prose() -> None:
    source = (
        'log.info("Sidecar is ready")\n'
        'structlog.get_logger("x").error("startup-failed")\n'
        'log.info("sidecar_ready", message="Sidecar is ready")\n'
    )
    events = [event for event, _ in log_events(source)]
    assert events == ["Sidecar is ready", "startup-failed", "sidecar_ready"]
    assert [e for e in events if not SNAKE.fullmatch(e)] == ["Sidecar is ready", "startup-failed"]

"""The import graph stays the one docs/architecture.md draws.

* ``entitlements`` (the foundation) imports nothing of ours but itself;
* ``sidecar``, ``upstream`` and ``persistent_cache`` import the foundation and themselves only,
  never each other;
* ``demo`` (the embedded demo) is the one package allowed to compose services; nothing of ours
  imports it.

Pure modules (the state model, change events, usage periods, the sidecar's evaluation rules and
request model) do no I/O and read no clock: they may import only the standard-library modules
in ``PURE_STDLIB`` and other pure modules, and call neither ``open``/``print``/``input`` nor
``now``/``utcnow``/``today`` (the clock is injected). Every import counts, including those inside functions
and ``if TYPE_CHECKING:`` blocks: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

OURS = ("entitlements", "sidecar", "upstream", "persistent_cache", "demo")
ALLOWED: dict[str, frozenset[str]] = {
    "entitlements": frozenset({"entitlements"}),
    "sidecar": frozenset({"entitlements", "sidecar"}),
    "upstream": frozenset({"entitlements", "upstream"}),
    "persistent_cache": frozenset({"entitlements", "persistent_cache"}),
    "demo": frozenset(OURS),
}

# Module prefixes (dotted) whose modules must stay pure.
PURE = (
    "entitlements.model",
    "entitlements.periods",
    "sidecar.evaluation",
    "sidecar.model",
)
# A whitelist, not a blacklist of I/O modules: a new import has to be thought about here.
PURE_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "bisect",
        "calendar",
        "collections",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "functools",
        "heapq",
        "itertools",
        "json",
        "math",
        "numbers",
        "operator",
        "re",
        "string",
        "types",
        "typing",
    }
)
# ``time.time()``/``sleep`` need ``time`` or ``asyncio``, which the whitelist already refuses; the
# clock reachable through ``datetime`` is what is left to catch.
IMPURE_CALLS = frozenset({"open", "print", "input", "now", "utcnow", "today"})


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.problem}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every module an import statement names, relative imports resolved, with its line."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno


def is_pure(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PURE)


def check_module(module: str, source: str, *, is_package: bool = False) -> list[Violation]:
    tree = ast.parse(source)
    owner = module.split(".")[0]
    allowed = ALLOWED.get(owner, frozenset())
    pure = is_pure(module)
    found = []
    for target, line in imported_modules(tree, module, is_package):
        top = target.split(".")[0]
        if top in OURS and top not in allowed:
            found.append(Violation(module, line, f"{owner} may not import {target}"))
        if pure and not (top in PURE_STDLIB or (top in OURS and is_pure(target))):
            found.append(Violation(module, line, f"pure module imports {target}"))
    if pure:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in IMPURE_CALLS:
                    found.append(Violation(module, node.lineno, f"pure module calls {name}()"))
    return found


def source_files(root: Path) -> Iterator[Path]:
    for package in OURS:
        yield from sorted((root / package).rglob("*.py"))


def check_tree(root: Path) -> list[Violation]:
    found = []
    for path in source_files(root):
        module = module_name(path, root)
        found += check_module(module, path.read_text(), is_package=path.name == "__init__.py")
    return found


# ------------------------------------------------------------------------------ the tree


def test_every_package_is_checked() -> None:
    modules = {module_name(p, ROOT) for p in source_files(ROOT)}
    for package in OURS:
        assert package in modules, f"{package}/__init__.py is missing"
    assert {"entitlements.model.state", "sidecar.evaluation.rules", "demo.main"} <= modules


def test_the_tree_keeps_the_layering() -> None:
    violations = check_tree(ROOT)
    assert not violations, "\n".join(map(str, violations))


def test_nothing_imports_the_demo() -> None:
    """The demo composes services; a service importing it would compose them by the back door."""
    for path in source_files(ROOT):
        module = module_name(path, ROOT)
        if module.startswith("demo"):
            continue
        tree = ast.parse(path.read_text())
        for target, line in imported_modules(tree, module, path.name == "__init__.py"):
            assert target.split(".")[0] != "demo", f"{module}:{line} imports {target}"


# -------------------------------------------------------------------------- the checker


@pytest.mark.parametrize(
    ("module", "source", "problem"),
    [
        ("upstream.service", "from sidecar.model.usage import UsageReport\n", "upstream may not"),
        ("persistent_cache.x", "import upstream.publisher\n", "persistent_cache may not"),
        ("sidecar.app", "from persistent_cache.service import S\n", "sidecar may not"),
        ("entitlements.redis.store", "from sidecar.settings import Settings\n", "entitlements"),
        ("entitlements.tasks", "def f() -> None:\n    import upstream\n", "entitlements"),
        (
            "sidecar.observability",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import upstream.domain\n",
            "sidecar may not",
        ),
        ("upstream.api.routes", "from ...sidecar import app\n", "upstream may not"),
        ("entitlements.model.state", "import asyncio\n", "pure module imports asyncio"),
        ("entitlements.periods", "from os import path\n", "pure module imports os"),
        ("sidecar.evaluation.rules", "import redis.asyncio\n", "pure module imports redis"),
        ("sidecar.evaluation.rules", "import socket\n", "pure module imports socket"),
        ("sidecar.model.usage", "from entitlements.redis import keys\n", "pure module imports"),
        ("sidecar.evaluation.getters", "from sidecar.source import base\n", "pure module imports"),
        ("entitlements.model.events", "x = open('f').read()\n", "calls open()"),
        (
            "sidecar.evaluation.rules",
            "from datetime import datetime\nT = datetime.now()\n",
            "calls now()",
        ),
    ],
)
def test_the_checker_catches(module: str, source: str, problem: str) -> None:
    violations = check_module(module, source)
    assert violations, f"{module} importing {source!r} passed"
    assert any(problem in str(v) for v in violations), violations


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("sidecar.app", "from entitlements.redis.store import RedisStore\nimport asyncio\n"),
        ("upstream.service", "from entitlements.periods import current_period\n"),
        ("persistent_cache.cache", "from entitlements.model.state import CustomerSnapshot\n"),
        ("demo.main", "from sidecar.app import Sidecar\nfrom upstream.server import S\n"),
        ("entitlements.periods", "import calendar\nfrom entitlements.model.state import R\n"),
        ("sidecar.evaluation.rules", "from . import fallback\nfrom .getters import Result\n"),
    ],
)
def test_the_checker_lets_allowed_edges_through(module: str, source: str) -> None:
    assert check_module(module, source) == []


def test_relative_imports_resolve_against_the_package(tmp_path: Path) -> None:
    """A violation written as a relative import is still one."""
    for package in OURS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "entitlements" / "bad.py").write_text("from ..sidecar import app\n")
    (tmp_path / "upstream" / "ok.py").write_text("from . import other\n")
    violations = check_tree(tmp_path)
    assert [str(v) for v in violations] == [
        "entitlements.bad:1: entitlements may not import sidecar"
    ]

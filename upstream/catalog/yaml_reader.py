"""A strict YAML reader that reports problems by path instead of raising at the first one.

The catalog loader builds on it: every accessor records what is wrong with a value under
its path (``plans[2].entitlements[0].feature``) and returns None, so one pass over a file
collects every problem at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from upstream.catalog.model import FilterValue

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """Safe loading that refuses duplicate keys, which plain YAML resolves to the last one."""


def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            # Keys merged in from an anchor (`<<: *base`) may legitimately be overridden.
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        if isinstance(key, Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)


def load_yaml(text: str, problems: Problems) -> object:
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problems.add(where, f"invalid YAML: {exc.problem}")
    except yaml.YAMLError as exc:
        problems.add("", f"invalid YAML: {exc}")
    return None


# --------------------------------------------------------------------------- reading


class Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, reason: str) -> None:
        message = f"{self.source}: {path}: {reason}" if path else f"{self.source}: {reason}"
        # Several readers may look at the same bad value; report it once.
        if message not in self.items:
            self.items.append(message)


class Node:
    """One YAML mapping being read; accessors record problems and return None instead of raising."""

    __slots__ = ("_data", "path", "problems")

    def __init__(self, raw: object, path: str, problems: Problems, keys: Collection[str]) -> None:
        self.path = path
        self.problems = problems
        self._data: dict[Any, Any] = raw if isinstance(raw, dict) else {}
        if not isinstance(raw, dict):
            problems.add(path, "expected a mapping")
        for key in self._data:
            if key not in keys:
                self.problem(str(key), f"unknown key (expected one of: {', '.join(keys)})")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, reason: str) -> None:
        self.problems.add(self.at(key), reason)

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def present_keys(self) -> list[str]:
        return [k for k, v in self._data.items() if isinstance(k, str) and v is not None]

    def read(
        self, key: str, convert: Callable[[Any], _T | None], expected: str, required: bool = False
    ) -> _T | None:
        """The converted value; None when absent or when ``convert`` rejects it."""
        value = self._data.get(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return None
        result = convert(value)
        if result is None:
            self.problem(key, expected)
        return result

    def text(self, key: str, *, required: bool = False) -> str | None:
        return self.read(key, as_text, "expected a non-empty string", required)

    def flag(self, key: str) -> bool:
        return self.read(key, as_bool, "expected true or false") or False

    def number(self, key: str, *, required: bool = False, positive: bool = False) -> float | None:
        convert = as_positive if positive else as_non_negative
        expected = f"expected a finite number {'>' if positive else '>='} 0"
        return self.read(key, convert, expected, required)

    def integer(self, key: str, *, minimum: int) -> int:
        def convert(v: Any) -> int | None:
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= minimum
            return v if ok else None

        return self.read(key, convert, f"expected an integer >= {minimum}") or minimum

    def choice(self, key: str, kind: type[_E], *, required: bool = False) -> _E | None:
        def convert(v: Any) -> _E | None:
            return kind(v) if isinstance(v, str) and v in {m.value for m in kind} else None

        return self.read(key, convert, f"expected one of: {', '.join(kind)}", required)

    def items(self, key: str) -> list[tuple[str, object]]:
        value = self.read(key, as_list, "expected a list") or []
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value)]

    def child(self, key: str, keys: Collection[str]) -> Node | None:
        value = self._data.get(key)
        return None if value is None else Node(value, self.at(key), self.problems, keys)

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...] | None:
        """A non-empty list of unique non-empty strings."""
        value = self.read(key, as_list, "expected a list of strings", required)
        if value is not None and not value:
            self.problem(key, "must not be empty")
        result: list[str] = []
        for i, item in enumerate(value or ()):
            if not isinstance(item, str) or not item:
                self.problem(f"{key}[{i}]", "expected a non-empty string")
            elif item in result:
                self.problem(f"{key}[{i}]", f"duplicate value {item!r}")
            else:
                result.append(item)
        return tuple(result) if value is not None else None

    def scalar_mapping(self, key: str) -> Mapping[str, FilterValue] | None:
        """A mapping of non-empty string keys to strings, finite numbers or booleans."""
        value: dict[Any, Any] | None = self.read(key, as_dict, "expected a mapping")
        if value is None:
            return None
        result: dict[str, FilterValue] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                self.problem(key, f"key {k!r} is not a non-empty string")
            elif isinstance(v, bool | str) or (
                is_number(v) and as_non_negative(abs(v)) is not None
            ):
                result[k] = v
            else:
                self.problem(f"{key}.{k}", "expected a string, finite number or boolean")
        return MappingProxyType(result)


def as_text(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() else None


def as_bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def as_list(v: Any) -> list[Any] | None:
    return v if isinstance(v, list) else None


def as_dict(v: Any) -> dict[Any, Any] | None:
    return v if isinstance(v, dict) else None


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def as_non_negative(v: Any) -> float | None:
    if not is_number(v):
        return None
    try:
        number = float(v)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) and number >= 0 else None


def as_positive(v: Any) -> float | None:
    number = as_non_negative(v)
    return number if number else None


# --------------------------------------------------------------------------- catalog

"""Measure what a cached value really keeps alive, so the byte bound bounds RSS."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from enum import Enum

_ATOMS = (str, bytes, int, float, datetime)


def deep_size(obj: object) -> int:
    """Bytes of ``obj`` and everything it references that is not shared globally.

    Enum members, None and booleans are singletons owned by the interpreter, so
    charging them to every entry would overstate the footprint.
    """
    seen: set[int] = set()
    total = 0
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | Enum) or id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, _ATOMS):
            continue
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            slots = getattr(type(item), "__slots__", ())
            stack.extend(getattr(item, name) for name in slots if hasattr(item, name))
            if hasattr(item, "__dict__"):
                stack.append(vars(item))
    return total

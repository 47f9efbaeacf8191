"""Fallback values: what to answer when no entitlement state can be had.

``ENTITLEMENTS_FALLBACK`` uses Stigg's flat JSON format, keyed by feature id:
``{"feature-a": {"hasAccess": true, "usageLimit": 1000}}`` with the optional keys
``value`` (numeric), ``isUnlimited``, ``usageLimit`` (metered) and ``enumValues``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class FallbackError(ValueError):
    """The fallback configuration is malformed; the message names the path."""


class FallbackShape(Enum):
    """Which entitlement variant a fallback describes when the feature type is unknown."""

    BOOLEAN = "boolean"
    NUMERIC = "numeric"
    METERED = "metered"
    ENUM = "enum"


@dataclass(frozen=True, slots=True)
class FallbackValues:
    has_access: bool = False
    value: int | None = None
    is_unlimited: bool | None = None
    usage_limit: float | None = None
    enum_values: tuple[str, ...] = ()

    @property
    def shape(self) -> FallbackShape:
        # Without the real entitlement, the fields the operator filled in are the
        # only hint of the feature's type.
        if self.enum_values:
            return FallbackShape.ENUM
        if self.usage_limit is not None:
            return FallbackShape.METERED
        if self.value is not None:
            return FallbackShape.NUMERIC
        if self.is_unlimited is not None:
            return FallbackShape.METERED
        return FallbackShape.BOOLEAN


#: The built-in default: no access.
DEFAULT_FALLBACK = FallbackValues()

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _finite_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        # Huge JSON integers would overflow the float conversion.
        return abs(value) < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _entry(feature_id: str, raw: object) -> FallbackValues:
    path = f"ENTITLEMENTS_FALLBACK[{feature_id!r}]"
    if not isinstance(raw, dict):
        raise FallbackError(f"{path}: expected an object")
    unknown = set(raw) - {"hasAccess", "value", "isUnlimited", "usageLimit", "enumValues"}
    if unknown:
        raise FallbackError(f"{path}: unknown keys {sorted(unknown)}")
    has_access = raw.get("hasAccess", False)
    if not isinstance(has_access, bool):
        raise FallbackError(f"{path}.hasAccess: expected a boolean")
    value = raw.get("value")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not INT32_MIN <= value <= INT32_MAX
    ):
        raise FallbackError(f"{path}.value: expected a 32-bit integer")
    unlimited = raw.get("isUnlimited")
    if unlimited is not None and not isinstance(unlimited, bool):
        raise FallbackError(f"{path}.isUnlimited: expected a boolean")
    limit = raw.get("usageLimit")
    if limit is not None and not _finite_number(limit):
        raise FallbackError(f"{path}.usageLimit: expected a finite number")
    enum_values = raw.get("enumValues", [])
    if not isinstance(enum_values, list) or not all(isinstance(v, str) for v in enum_values):
        raise FallbackError(f"{path}.enumValues: expected an array of strings")
    return FallbackValues(
        has_access=has_access,
        value=value,
        is_unlimited=unlimited,
        usage_limit=float(limit) if limit is not None else None,
        enum_values=tuple(enum_values),
    )


def parse_fallback_map(text: str) -> Mapping[str, FallbackValues]:
    """Parse ``ENTITLEMENTS_FALLBACK``; an empty string means no global fallbacks."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise FallbackError(f"ENTITLEMENTS_FALLBACK: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise FallbackError("ENTITLEMENTS_FALLBACK: nested too deeply") from exc
    if not isinstance(raw, dict):
        raise FallbackError("ENTITLEMENTS_FALLBACK: expected a JSON object keyed by feature id")
    return {str(feature_id): _entry(str(feature_id), entry) for feature_id, entry in raw.items()}

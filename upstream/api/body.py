"""Reading and checking JSON request bodies; every problem names the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from upstream.errors import Invalid

MAX_ID = 256
# Quantities, amounts and usage values beyond this are not real quantities, and sums
# or products of them could overflow to infinity, which no JSON document can carry.
MAX_MAGNITUDE = 1e15


def _encodable(value: str) -> bool:
    # JSON may escape lone surrogates ("\ud800") that no store or encoder accepts.
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class Body:
    """Typed access to a JSON object; ``path`` prefixes field names in errors."""

    def __init__(self, data: object, path: str = "") -> None:
        if not isinstance(data, dict):
            raise Invalid("expected a JSON object", field=path or None)
        self.data: dict[str, Any] = data
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def reject_unknown(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.data) - allowed)
        if unknown:
            raise Invalid(f"unknown field {unknown[0]!r}", field=self._name(unknown[0]))

    def id(self, key: str, *, required: bool = True) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise Invalid("is required", field=self._name(key))
            return None
        if not isinstance(value, str) or not value:
            raise Invalid("must be a non-empty string", field=self._name(key))
        if not _encodable(value):
            raise Invalid("must be valid Unicode text", field=self._name(key))
        if len(value) > MAX_ID:
            raise Invalid(f"must be at most {MAX_ID} characters", field=self._name(key))
        return value

    def req_id(self, key: str) -> str:
        value = self.id(key)
        assert value is not None
        return value

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not (isinstance(value, str) and _encodable(value)):
            raise Invalid("must be a string of valid Unicode text", field=self._name(key))
        return value

    def number(
        self,
        key: str,
        *,
        required: bool = False,
        minimum: float | None = None,
        exclusive_minimum: float | None = None,
    ) -> float | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise Invalid("is required", field=self._name(key))
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid("must be a number", field=self._name(key))
        if not math.isfinite(value):
            raise Invalid("must be finite", field=self._name(key))
        if abs(value) > MAX_MAGNITUDE:
            raise Invalid(f"must be between -{MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g}",
                          field=self._name(key))
        if minimum is not None and value < minimum:
            raise Invalid(f"must be >= {minimum:g}", field=self._name(key))
        if exclusive_minimum is not None and value <= exclusive_minimum:
            raise Invalid(f"must be > {exclusive_minimum:g}", field=self._name(key))
        return float(value)

    def integer(self, key: str, *, default: int, minimum: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**53:
            raise Invalid("must be an integer", field=self._name(key))
        if minimum is not None and value < minimum:
            raise Invalid(f"must be >= {minimum}", field=self._name(key))
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise Invalid("must be a boolean", field=self._name(key))
        return value

    def time(self, key: str) -> datetime | None:
        """ISO-8601 with a zone, or epoch milliseconds."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(value / 1000, UTC)
            except (OverflowError, OSError, ValueError):
                raise Invalid("timestamp out of range", field=self._name(key)) from None
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise Invalid("must be an ISO-8601 date-time", field=self._name(key)) from None
            if parsed.tzinfo is None:
                raise Invalid("must include a time zone", field=self._name(key))
            try:
                return parsed.astimezone(UTC)
            except OverflowError:
                raise Invalid("is out of range", field=self._name(key)) from None
        raise Invalid("must be an ISO-8601 date-time or epoch milliseconds", field=self._name(key))

    def obj(self, key: str) -> Body | None:
        value = self.data.get(key)
        return None if value is None else Body(value, self._name(key))

    def items(self, key: str, *, limit: int | None = None, required: bool = False) -> list[Body]:
        value = self.data.get(key)
        if value is None:
            if required:
                raise Invalid("is required", field=self._name(key))
            return []
        if not isinstance(value, list):
            raise Invalid("must be an array", field=self._name(key))
        if limit is not None and len(value) > limit:
            raise Invalid(f"at most {limit} items, got {len(value)}", field=self._name(key))
        return [Body(item, f"{self._name(key)}[{i}]") for i, item in enumerate(value)]

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(v, str) and _encodable(v) for v in value
        ):
            raise Invalid("must be an array of strings", field=self._name(key))
        return tuple(value)

    def dimensions(self, key: str) -> dict[str, str | float | bool]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid("must be an object", field=self._name(key))
        out: dict[str, str | float | bool] = {}
        for k, v in value.items():
            if not _encodable(k) or (isinstance(v, str) and not _encodable(v)):
                raise Invalid("must be valid Unicode text", field=self._name(key))
            if isinstance(v, bool | str):
                out[k] = v
            elif isinstance(v, int | float) and math.isfinite(v) and abs(v) <= MAX_MAGNITUDE:
                out[k] = float(v)
            else:
                raise Invalid(
                    "values must be strings, finite numbers or booleans",
                    field=self._name(f"{key}.{k}"),
                )
        return out

    def string_map(self, key: str) -> Mapping[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(v, str) and _encodable(v) and _encodable(k) for k, v in value.items()
        ):
            raise Invalid("must be an object of strings", field=self._name(key))
        return value

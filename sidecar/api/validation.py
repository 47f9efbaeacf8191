"""Request checks that Stigg's sidecar does not make; each error names the field.

These reject input the sidecar could only answer with a guess (or forward to
lose upstream): empty ids, impossible usage amounts, oversized batches. The
README's compatibility table lists where this is stricter than Stigg.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sidecar.errors import InvalidArgument

MAX_ID_LENGTH = 256
MAX_USAGE_BATCH = 100
MAX_EVENT_BATCH = 1000
MAX_REQUESTED_VALUES = 1000


def require_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_ID_LENGTH} characters")
    return value


def optional_id(value: str | None, field: str) -> str | None:
    """An optional id; an empty string is treated as absent, as Stigg does."""
    if not value:
        return None
    return require_id(value, field)


def requested_usage(value: float | None, field: str) -> float:
    if value is None:
        return 0.0
    if math.isnan(value) or math.isinf(value):
        raise InvalidArgument(field, "must be a finite number")
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def requested_values(values: Sequence[str], field: str) -> Sequence[str]:
    if len(values) > MAX_REQUESTED_VALUES:
        raise InvalidArgument(field, f"at most {MAX_REQUESTED_VALUES} values")
    return values


def usage_value(value: float, is_set: bool, field: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise InvalidArgument(field, "must be a finite number")
    if is_set and value < 0:
        raise InvalidArgument(field, "must not be negative when update_behavior is SET")
    return value


def batch_size(count: int, limit: int, field: str) -> None:
    if count > limit:
        raise InvalidArgument(field, f"at most {limit} items per call, got {count}")


def exactly_one(feature_id: str | None, currency_id: str | None) -> None:
    if bool(feature_id) == bool(currency_id):
        raise InvalidArgument(
            "feature_id/currency_id",
            "exactly one of feature_id and currency_id must be set",
        )

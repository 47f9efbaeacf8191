"""Request checks that Stigg's sidecar does not make; each error names the field.

These reject input the sidecar could only answer with a guess (or forward to
lose upstream): empty ids, impossible usage amounts, oversized batches. The
README's compatibility table lists where this is stricter than Stigg.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from entitlements.errors import InvalidArgument

MAX_ID_LENGTH = 256
MAX_USAGE_BATCH = 100
MAX_EVENT_BATCH = 1000
MAX_REQUESTED_VALUES = 1000
# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


class MalformedBody:
    """Stands in for a request whose bytes did not parse.

    grpcio answers UNKNOWN when a request deserializer raises, before any handler runs; so
    the deserializer hands this over instead and the handler answers INVALID_ARGUMENT.
    """

    __slots__ = ("message_name", "problem")

    def __init__(self, message_name: str, problem: str) -> None:
        self.message_name = message_name
        self.problem = problem

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            "request body", f"cannot be parsed as {self.message_name}: {self.problem}"
        )


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


def timestamp(message: Any, field: str) -> None:
    """An optional ``timestamp`` field of ``message``, if set, within Timestamp's range."""
    if not message.HasField("timestamp"):
        return
    value = message.timestamp
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(field, "must be between 0001-01-01 and 9999-12-31")
    if not 0 <= value.nanos <= 999_999_999:
        raise InvalidArgument(field, "nanos must be between 0 and 999999999")


def batch_size(count: int, limit: int, field: str) -> None:
    if count > limit:
        raise InvalidArgument(field, f"at most {limit} items per call, got {count}")


def exactly_one(feature_id: str | None, currency_id: str | None) -> None:
    if bool(feature_id) == bool(currency_id):
        raise InvalidArgument(
            "feature_id/currency_id",
            "exactly one of feature_id and currency_id must be set",
        )

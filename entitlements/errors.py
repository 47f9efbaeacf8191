"""Errors the services share; the sidecar's API edge maps these to gRPC status codes.

The Redis failures (``CacheUnavailable`` and below) are raised by ``entitlements.redis.store``
for the sidecar's Redis tier and the persistent cache alike; they stay under ``SourceError``
because the sidecar's read path treats Redis as one more source.

SidecarError
├── InvalidArgument      a request field is malformed (names the field)
├── ResourceExhausted    a local bound is reached (the event spool is full): retry later
├── SpoolUnavailable     the local event spool cannot be written (disk error)
└── SourceError          the entitlement source failed
    ├── SourceUnavailable   transient: timeout, connection refused, 5xx
    │   └── CacheUnavailable    Redis is unreachable or timed out
    │       └── CacheRejected   Redis refused one write and will again (a key of the wrong type)
    │           └── WritesRejected  some writes of a batch were refused, the rest went through
    └── SourceRejected      the source refused the request (4xx): retrying won't help
        └── InvalidApiKey       the source refused our API key (401/403)
StartupError             the process cannot start (a port it cannot bind, say)
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class InvalidArgument(SidecarError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ResourceExhausted(SidecarError):
    """A local bound is reached (the event spool holds SPOOL_MAX_BYTES); nothing was taken."""


class SpoolUnavailable(SidecarError):
    """The local event spool failed to write (a disk error); nothing was acknowledged."""


class SourceError(SidecarError):
    pass


class SourceUnavailable(SourceError):
    pass


class SourceRejected(SourceError):
    pass


class InvalidApiKey(SourceRejected):
    """The source refused SERVER_API_KEY: nothing will work until the key is fixed."""


class StartupError(SidecarError):
    """The process cannot start; the message is the one line an operator needs."""


def listen_failure(what: str, address: str, exc: OSError, settings: str) -> StartupError:
    """A port that could not be bound, said in one line: where, why, which settings to check.

    asyncio wraps the errno in a long sentence that repeats the address; the errno's own text
    ("Address already in use", "Permission denied") is what tells an operator what to fix.
    """
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return StartupError(f"cannot listen for {what} on {address}: {reason} ({settings})")


class CacheUnavailable(SourceUnavailable):
    """Redis is unreachable or timed out."""


class CacheRejected(CacheUnavailable):
    """Redis refused a write for a reason that retrying will not change (WRONGTYPE, say).

    A CacheUnavailable for callers that only need "Redis did not help" (the sidecar's read path
    falls back either way); the persistent cache tells it apart to park the one entry instead
    of retrying the whole batch forever.
    """


class WritesRejected(CacheRejected):
    """Redis refused some writes of a batch for good; the others went through.

    ``outcomes[i]`` is what the i-th write produced: the store's result, or the CacheRejected
    that refused it. Callers can settle each write without sending any of them again.
    """

    def __init__(self, message: str, outcomes: Sequence[object]) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)

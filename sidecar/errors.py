"""The sidecar's error hierarchy; the API edge maps these to gRPC status codes.

SidecarError
├── InvalidArgument      a request field is malformed (names the field)
└── SourceError          the entitlement source failed
    ├── SourceUnavailable   transient: timeout, connection refused, 5xx
    │   └── CacheUnavailable    Redis is unreachable or timed out
    └── SourceRejected      the source refused the request (4xx): retrying won't help
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class InvalidArgument(SidecarError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SourceError(SidecarError):
    pass


class SourceUnavailable(SourceError):
    pass


class SourceRejected(SourceError):
    pass


class CacheUnavailable(SourceUnavailable):
    """Redis is unreachable or timed out."""

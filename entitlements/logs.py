"""Structured logging set-up shared by every service (structlog to stderr).

Every line carries ``service`` and ``version``: the services share log pipelines, and a line
that cannot say which process and which build wrote it is of little use in an incident. Event
names are snake_case identifiers (``change_stream_lost``); prose goes into fields.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from entitlements.cli import package_version

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def service_fields(service: str, version: str) -> structlog.typing.Processor:
    """A processor adding ``service`` and ``version``, fixed once at configure time."""

    def add(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", service)
        event.setdefault("version", version)
        return event

    return add


def configure_logging(level: str, fmt: str = "auto", *, service: str) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            service_fields(service, package_version()),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per line, its newline included: processes sharing a pipe (WORKERS > 1, with
        # PYTHONUNBUFFERED as the image sets) each write a line whole. print() writes the text
        # and the newline separately, and two workers' lines ran together.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

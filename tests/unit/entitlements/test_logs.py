"""Every log line names its service and version; event names stay identifiers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from entitlements.cli import package_version
from entitlements.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_every_line_carries_service_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", service="entitlement-test")
    log = structlog.get_logger("test")
    log.info("first_event", answer=42)
    log.warning("second_event")
    log.debug("filtered_out")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["first_event", "second_event"]
    for line in lines:
        assert line["service"] == "entitlement-test"
        assert line["version"] == package_version()
    assert lines[0]["answer"] == 42


def test_a_field_of_the_same_name_is_not_overwritten(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", service="entitlement-test")
    structlog.get_logger("test").info("relayed", service="other")
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert line["service"] == "other"


class _Writes:
    """A stream that keeps each write call apart, as a pipe shared by processes sees them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_each_line_is_one_write_with_its_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Worker processes share stderr: a line written in two calls (text, then newline) can have
    # another process's line land between them, and both stop being JSON.
    stream = _Writes()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("info", "json", service="entitlement-test")
    log = structlog.get_logger("test")
    log.info("first_event")
    log.warning("second_event", detail="x" * 500)
    assert len(stream.calls) == 2
    for call in stream.calls:
        assert call.endswith("\n") and call.count("\n") == 1
        json.loads(call)

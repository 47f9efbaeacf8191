"""The test clock's endpoints: read it, move it forward and apply what became due.

Always routed, so the route table (and the OpenAPI document) is the same either way; without
``TEST_CLOCK_ENABLED=1`` both answer 404 with a message saying how to turn the clock on.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from aiohttp import web

from entitlements.model.state import epoch_ms
from upstream.api.routes import UPSTREAM, read_body
from upstream.errors import Invalid, NotFound
from upstream.testclock import TestClock, rfc3339

log = structlog.get_logger("upstream.test_clock")

#: The test clock, or None when the setting is off.
TEST_CLOCK: web.AppKey[TestClock | None] = web.AppKey("test_clock")

DISABLED_MESSAGE = (
    "the test clock is disabled; start upstream with TEST_CLOCK_ENABLED=1 to use it "
    "(test environments only)"
)


def _clock(request: web.Request) -> TestClock:
    clock = request.app[TEST_CLOCK]
    if clock is None:
        raise NotFound(DISABLED_MESSAGE, code="TEST_CLOCK_DISABLED")
    return clock


def _view(clock: TestClock) -> dict[str, object]:
    now, offset = clock.read()
    return {
        "now": rfc3339(now),
        "nowMs": epoch_ms(now),
        "offsetSeconds": offset / timedelta(seconds=1),
    }


async def get_clock(request: web.Request) -> web.Response:
    return web.json_response(_view(_clock(request)))


async def advance_clock(request: web.Request) -> web.Response:
    clock = _clock(request)
    body = await read_body(request)
    if body.has("seconds") and body.has("to"):
        raise Invalid("give either seconds or to, not both", field="to")
    if body.has("to"):
        instant = body.time("to")
        if instant is None:
            raise Invalid("must be an RFC 3339 date-time with a time zone", field="to")
        clock.advance_to(instant)
    elif body.has("seconds"):
        seconds = body.data["seconds"]
        if seconds is None:
            raise Invalid("must be a number of seconds", field="seconds")
        clock.advance(seconds)
    else:
        raise Invalid("is required (or give to: an instant)", field="seconds")
    # Synchronous: everything due at the new time is committed, and handed to the relay,
    # before the answer, so a caller can look right after.
    upstream = request.app[UPSTREAM]
    changed = await upstream.store.run(upstream.process_all_due)
    view = {**_view(clock), "statesChanged": changed}
    log.info(
        "test_clock_advanced",
        now=view["now"],
        offset_seconds=view["offsetSeconds"],
        states_changed=changed,
    )
    return web.json_response(view)

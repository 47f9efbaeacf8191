"""Stopping background tasks reliably on Python 3.11.

redis-py bounds socket reads with ``asyncio.wait_for``, which on 3.11 swallows a cancellation
that arrives just as the read completes (CPython gh-86296, fixed in 3.12): one ``cancel()`` may
leave a loop that talks to Redis running forever. So cancellation is repeated until it sticks.
"""

from __future__ import annotations

import asyncio
from typing import Any

RETRY_SECONDS = 0.1


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RETRY_SECONDS)

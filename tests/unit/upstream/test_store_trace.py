"""``Store.trace`` may be changed while the writer thread runs statements that call the old
callback. SQLite changes the callback under the connection's mutex while Python keeps the GIL;
a statement on the writer thread holds that mutex and needs the GIL to call back. Changed
mid-statement, the process hangs in C where no Python timeout reaches it (it hung one CI run
for 90 minutes), so the scenario runs in a child process that is killed at a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEADLINE = 30.0

SCENARIO = """
import asyncio, sys, threading
from upstream.store.sqlite import Store

async def main(path):
    store = Store(path)
    inside = threading.Event()

    def slow(sql):
        if sql.startswith("SELECT"):
            inside.set()
            # Lets go of the GIL inside the statement, with the connection's mutex held.
            threading.Event().wait(0.2)

    store.trace(slow)

    def work():
        with store.transaction() as tx:
            return tx.customer_ids()

    job = asyncio.ensure_future(store.run(work))
    assert await asyncio.to_thread(inside.wait, 10)
    store.trace(None)
    assert await job == []
    seen = []
    store.trace(seen.append)
    await store.run(work)
    store.trace(None)
    assert any(s.startswith("SELECT") for s in seen), seen
    await asyncio.to_thread(store.close)
    print("finished")

asyncio.run(main(sys.argv[1]))
"""


def test_changing_the_trace_during_a_statement_does_not_hang(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCENARIO, str(tmp_path / "up.db")],
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"trace() hung against a running statement: {hung}") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "finished"

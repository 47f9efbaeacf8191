"""The durable event spool: raw events acknowledged to the caller once they are on local disk.

Why SQLite (WAL, ``synchronous=FULL``) rather than our own segment files: a transaction gives
"a batch is all or nothing" for free, a commit is one fsync of the write-ahead log (a segment
file needs the file and its directory fsync'd), WAL frames carry checksums so a torn write at
a crash is detected and rolled back on the next open, and deleting what upstream acknowledged
is one range delete instead of file bookkeeping. It is in the standard library and upstream
already relies on it the same way.

All SQLite work runs on one dedicated thread, so a commit's fsync never blocks the event loop.
Appends that arrive while a commit is under way are committed together in the next transaction
(group commit): under load one fsync acknowledges many calls.

One sidecar per directory: an exclusive ``flock`` on ``SPOOL_DIR/lock`` (released by the
kernel when the process dies, SIGKILL included) keeps a second process from shipping the
same rows.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from entitlements.errors import ResourceExhausted, SpoolUnavailable, StartupError
from sidecar.model.usage import RawEvent

_T = TypeVar("_T")

DATABASE_NAME = "events.db"
LOCK_NAME = "lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    appended_at REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Spooled:
    """One event held in the spool, in append order (``id`` ascending)."""

    id: int
    event: RawEvent | None  # None: the row could not be decoded (it is dropped, counted)
    size: int
    appended_at: float


def encode_event(event: RawEvent) -> bytes:
    body: dict[str, Any] = {
        "n": event.event_name,
        "c": event.customer_id,
        "k": event.idempotency_key,
    }
    if event.resource_id is not None:
        body["r"] = event.resource_id
    if event.dimensions:
        body["d"] = dict(event.dimensions)
    if event.timestamp is not None:
        body["t"] = round(event.timestamp.timestamp() * 1_000_000)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode_event(payload: bytes) -> RawEvent | None:
    try:
        body = json.loads(payload)
        timestamp = body.get("t")
        return RawEvent(
            event_name=body["n"],
            customer_id=body["c"],
            idempotency_key=body["k"],
            resource_id=body.get("r"),
            dimensions=body.get("d", {}),
            timestamp=None
            if timestamp is None
            else datetime.fromtimestamp(timestamp / 1_000_000, UTC),
        )
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError):
        return None


class EventSpool:
    """A byte-bounded FIFO of raw events on disk. Open with :meth:`open`, close with
    :meth:`close`; every other method is a coroutine safe to call from the event loop."""

    def __init__(
        self, directory: str | Path, max_bytes: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-spool")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        #: Events and payload bytes on disk, and when the oldest of them was appended.
        self.events = 0
        self.bytes = 0
        self.oldest_appended_at: float | None = None
        # Appends waiting for the next group commit, and the bytes they will add.
        self._pending: list[tuple[list[bytes], asyncio.Future[None]]] = []
        self._pending_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        #: Set while the spool holds events (the shipper waits on it).
        self.not_empty = asyncio.Event()

    # ------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        await self._run(self._open_sync)
        if self.events:
            self.not_empty.set()

    def _open_sync(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StartupError(
                f"cannot use the event spool directory {self.directory}: "
                f"{exc.strerror or exc} (SPOOL_DIR)"
            ) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StartupError(
                f"the event spool directory {self.directory} is in use by another sidecar "
                "(SPOOL_DIR: give each sidecar its own)"
            ) from exc
        try:
            conn = sqlite3.connect(
                str(self.directory / DATABASE_NAME), isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: every commit fsyncs the log, so an acknowledged event survives power loss.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
            count, size, oldest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(appended_at) FROM events"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StartupError(
                f"cannot open the event spool {self.directory / DATABASE_NAME}: {exc} (SPOOL_DIR)"
            ) from exc
        _fsync_directory(self.directory)
        self._conn = conn
        self.events, self.bytes, self.oldest_appended_at = int(count), int(size), oldest

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.wait((self._writer,))
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ---------------------------------------------------------------- append

    async def append(self, events: Sequence[RawEvent]) -> None:
        """Return once every event is on disk; all or none of them are kept.

        Raises ResourceExhausted (nothing taken) when they would not fit in ``max_bytes``.
        """
        if not events:
            return
        payloads = [encode_event(e) for e in events]
        size = sum(len(p) for p in payloads)
        held = self.bytes + self._pending_bytes
        if held + size > self.max_bytes:
            raise ResourceExhausted(
                f"event spool is full: it holds {held} of SPOOL_MAX_BYTES={self.max_bytes} bytes "
                f"({self.events} events waiting for upstream); these {len(events)} events "
                f"({size} bytes) were not taken, retry later"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((payloads, future))
        self._pending_bytes += size
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._group_commit())
        # Shielded: a caller that gives up must not cancel the commit other callers share.
        await asyncio.shield(future)

    async def _group_commit(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            payloads = [p for batch, _ in group for p in batch]
            size = sum(len(p) for p in payloads)
            now = self._clock()
            try:
                await self._run(functools.partial(self._insert_sync, payloads, now))
            except (sqlite3.Error, OSError) as exc:
                self._pending_bytes -= size
                error = SpoolUnavailable(f"event spool: cannot write: {exc}")
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            self._pending_bytes -= size
            self.events += len(payloads)
            self.bytes += size
            if self.oldest_appended_at is None:
                self.oldest_appended_at = now
            self.not_empty.set()
            for _, future in group:
                if not future.done():
                    future.set_result(None)

    def _insert_sync(self, payloads: list[bytes], now: float) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO events(payload, size, appended_at) VALUES(?,?,?)",
                [(p, len(p), now) for p in payloads],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------- shipping

    async def peek(self, limit: int) -> list[Spooled]:
        """The oldest ``limit`` events, oldest first; they stay until :meth:`delete`."""
        rows = await self._run(
            lambda: (
                self._connection()
                .execute(
                    "SELECT id, payload, size, appended_at FROM events ORDER BY id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        )
        if not rows and self.events:
            # Cannot happen while the counts are right; if it does, never spin on a phantom.
            # (Appends that committed before this read are visible to it; later ones count
            # themselves in after this line, as their results arrive after ours.)
            self.events, self.bytes, self.oldest_appended_at = 0, 0, None
            self.not_empty.clear()
        return [Spooled(r[0], decode_event(r[1]), r[2], r[3]) for r in rows]

    async def delete(self, shipped: Sequence[Spooled]) -> None:
        """Drop a run of events returned by one :meth:`peek` (contiguous, in order)."""
        if not shipped:
            return
        first, last = shipped[0].id, shipped[-1].id
        oldest = await self._run(lambda: self._delete_sync(first, last))
        self.events -= len(shipped)
        self.bytes -= sum(s.size for s in shipped)
        self.oldest_appended_at = oldest
        if self.events <= 0:
            self.events = 0
            self.not_empty.clear()

    def _delete_sync(self, first: int, last: int) -> float | None:
        conn = self._connection()
        # Only rows from one peek are in this range: later appends get higher ids.
        conn.execute("DELETE FROM events WHERE id BETWEEN ? AND ?", (first, last))
        row = conn.execute("SELECT appended_at FROM events ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def oldest_age(self) -> float:
        """Seconds the oldest held event has waited; 0 when empty."""
        if self.oldest_appended_at is None:
            return 0.0
        return max(self._clock() - self.oldest_appended_at, 0.0)

    # ------------------------------------------------------------------ util

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolUnavailable("event spool is not open")
        return self._conn

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)


def _fsync_directory(directory: Path) -> None:
    # The database and log files' directory entries must be durable too.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

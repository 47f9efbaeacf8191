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

Two queues share the database and its bound, each in its own table so each ships to its own
endpoint: raw events (``events``, the spool itself) and, with ``USAGE_BUFFERING``, usage
reports upstream could not be reached for (``usage``, :attr:`EventSpool.usage`).

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
from typing import Any, Generic, Protocol, TypeVar

from entitlements.errors import ResourceExhausted, SpoolUnavailable, StartupError
from sidecar.model.usage import RawEvent, UpdateBehavior, UsageReport

_T = TypeVar("_T")
_Item = TypeVar("_Item")

DATABASE_NAME = "events.db"
LOCK_NAME = "lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    appended_at REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Spooled(Generic[_Item]):
    """One item held in a spool queue, in append order (``id`` ascending)."""

    id: int | str  # a row id on disk, a stream entry id in Redis
    item: _Item | None  # None: the row could not be decoded (it is dropped, counted)
    size: int
    appended_at: float

    @property
    def event(self) -> _Item | None:
        """The item of the event queue (the name its callers know it by)."""
        return self.item


class Queue(Protocol[_Item]):
    """What a shipper drains and the service appends to: one kind of item, oldest first."""

    count: int
    bytes: int
    pending_bytes: int
    not_empty: asyncio.Event

    async def append(self, items: Sequence[_Item]) -> None: ...

    async def peek(self, limit: int) -> list[Spooled[_Item]]: ...

    async def delete(self, shipped: Sequence[Spooled[_Item]]) -> None: ...

    def oldest_age(self) -> float: ...


class Spool(Queue[RawEvent], Protocol):
    """A spool: its event queue, its usage queue, where it lives (the disk or Redis)."""

    @property
    def usage(self) -> Queue[UsageReport]: ...

    @property
    def events(self) -> int: ...

    @property
    def location(self) -> str: ...

    def held_bytes(self) -> int: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


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


def encode_usage(report: UsageReport) -> bytes:
    if report.idempotency_key is None:
        # Buffered usage is shipped later, perhaps after a restart: without its key a re-sent
        # batch could be counted twice.
        raise ValueError("a spooled usage report needs its idempotency key")
    body: dict[str, Any] = {
        "c": report.customer_id,
        "f": report.feature_id,
        "v": report.value,
        "k": report.idempotency_key,
    }
    if report.resource_id is not None:
        body["r"] = report.resource_id
    if report.behavior is not UpdateBehavior.DELTA:
        body["b"] = report.behavior.value
    if report.dimensions:
        body["d"] = dict(report.dimensions)
    if report.timestamp is not None:
        body["t"] = round(report.timestamp.timestamp() * 1_000_000)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode_usage(payload: bytes) -> UsageReport | None:
    try:
        body = json.loads(payload)
        timestamp = body.get("t")
        value = body["v"]
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        return UsageReport(
            customer_id=body["c"],
            feature_id=body["f"],
            value=float(value),
            resource_id=body.get("r"),
            behavior=UpdateBehavior(body.get("b", "DELTA")),
            dimensions=body.get("d", {}),
            timestamp=None
            if timestamp is None
            else datetime.fromtimestamp(timestamp / 1_000_000, UTC),
            idempotency_key=body["k"],
        )
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError):
        return None


class SpoolQueue(Generic[_Item]):
    """One kind of item in its own table of a spool's database: a FIFO, appended in group
    commits, peeked oldest first, deleted by runs. The database's byte bound covers every
    queue in it together."""

    def __init__(
        self,
        spool: EventSpool,
        table: str,
        what: str,
        encode: Callable[[_Item], bytes],
        decode: Callable[[bytes], _Item | None],
    ) -> None:
        self._spool = spool
        self.table = table
        self._what = what
        self._encode = encode
        self._decode = decode
        #: Items and payload bytes on disk, and when the oldest of them was appended.
        self.count = 0
        self.bytes = 0
        self.oldest_appended_at: float | None = None
        # Appends waiting for the next group commit, and the bytes they will add.
        self._pending: list[tuple[list[bytes], asyncio.Future[None]]] = []
        self.pending_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        #: Set while the queue holds items (its shipper waits on it).
        self.not_empty = asyncio.Event()

    def _load_sync(self, conn: sqlite3.Connection) -> None:
        conn.execute(_SCHEMA.format(table=self.table))
        count, size, oldest = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(appended_at) FROM {self.table}"
        ).fetchone()
        self.count, self.bytes, self.oldest_appended_at = int(count), int(size), oldest

    async def all_items(self) -> list[_Item]:
        """Everything held, oldest first (read once at start-up by the owner of the queue)."""
        rows = await self._spool._run(
            lambda: (
                self._spool._connection()
                .execute(f"SELECT payload FROM {self.table} ORDER BY id")
                .fetchall()
            )
        )
        return [item for (payload,) in rows if (item := self._decode(payload)) is not None]

    async def wait_for_writes(self) -> None:
        if self._writer is not None:
            await asyncio.wait((self._writer,))

    # ---------------------------------------------------------------- append

    async def append(self, items: Sequence[_Item]) -> None:
        """Return once every item is on disk; all or none of them are kept.

        Raises ResourceExhausted (nothing taken) when they would not fit in ``max_bytes``.
        """
        if not items:
            return
        payloads = [self._encode(i) for i in items]
        size = sum(len(p) for p in payloads)
        held = self._spool.held_bytes()
        if held + size > self._spool.max_bytes:
            raise ResourceExhausted(
                f"spool is full: it holds {held} of SPOOL_MAX_BYTES={self._spool.max_bytes} "
                f"bytes ({self._spool.describe_held()} waiting for upstream); these "
                f"{len(items)} {self._what} ({size} bytes) were not taken, retry later"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((payloads, future))
        self.pending_bytes += size
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._group_commit())
        # Shielded: a caller that gives up must not cancel the commit other callers share.
        await asyncio.shield(future)

    async def _group_commit(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            payloads = [p for batch, _ in group for p in batch]
            size = sum(len(p) for p in payloads)
            now = self._spool._clock()
            try:
                await self._spool._run(functools.partial(self._insert_sync, payloads, now))
            except (sqlite3.Error, OSError) as exc:
                self.pending_bytes -= size
                error = SpoolUnavailable(f"spool: cannot write: {exc}")
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.pending_bytes -= size
            self.count += len(payloads)
            self.bytes += size
            if self.oldest_appended_at is None:
                self.oldest_appended_at = now
            self.not_empty.set()
            for _, future in group:
                if not future.done():
                    future.set_result(None)

    def _insert_sync(self, payloads: list[bytes], now: float) -> None:
        conn = self._spool._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT INTO {self.table}(payload, size, appended_at) VALUES(?,?,?)",
                [(p, len(p), now) for p in payloads],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------- shipping

    async def peek(self, limit: int) -> list[Spooled[_Item]]:
        """The oldest ``limit`` items, oldest first; they stay until :meth:`delete`."""
        rows = await self._spool._run(
            lambda: (
                self._spool._connection()
                .execute(
                    f"SELECT id, payload, size, appended_at FROM {self.table} ORDER BY id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        )
        if not rows and self.count:
            # Cannot happen while the counts are right; if it does, never spin on a phantom.
            # (Appends that committed before this read are visible to it; later ones count
            # themselves in after this line, as their results arrive after ours.)
            self.count, self.bytes, self.oldest_appended_at = 0, 0, None
            self.not_empty.clear()
        return [Spooled(r[0], self._decode(r[1]), r[2], r[3]) for r in rows]

    async def delete(self, shipped: Sequence[Spooled[_Item]]) -> None:
        """Drop a run of items returned by one :meth:`peek` (contiguous, in order)."""
        if not shipped:
            return
        first, last = shipped[0].id, shipped[-1].id
        oldest = await self._spool._run(lambda: self._delete_sync(first, last))
        self.count -= len(shipped)
        self.bytes -= sum(s.size for s in shipped)
        self.oldest_appended_at = oldest
        if self.count <= 0:
            self.count = 0
            self.not_empty.clear()

    def _delete_sync(self, first: int | str, last: int | str) -> float | None:
        conn = self._spool._connection()
        # Only rows from one peek are in this range: later appends get higher ids.
        conn.execute(f"DELETE FROM {self.table} WHERE id BETWEEN ? AND ?", (first, last))
        row = conn.execute(f"SELECT appended_at FROM {self.table} ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def oldest_age(self) -> float:
        """Seconds the oldest held item has waited; 0 when empty."""
        if self.oldest_appended_at is None:
            return 0.0
        return max(self._spool._clock() - self.oldest_appended_at, 0.0)


class EventSpool(SpoolQueue[RawEvent]):
    """The spool's database, and its queue of raw events (the methods inherited from
    :class:`SpoolQueue`); :attr:`usage` is its queue of buffered usage reports. Open with
    :meth:`open`, close with :meth:`close`; every other method is a coroutine safe to call
    from the event loop."""

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
        super().__init__(self, "events", "events", encode_event, decode_event)
        #: Usage reports acknowledged locally while upstream was unreachable (USAGE_BUFFERING).
        self.usage: SpoolQueue[UsageReport] = SpoolQueue(
            self, "usage", "usage reports", encode_usage, decode_usage
        )

    @property
    def events(self) -> int:
        """Events held (the event queue's count)."""
        return self.count

    @property
    def location(self) -> str:
        return str(self.directory)

    def queues(self) -> tuple[SpoolQueue[Any], ...]:
        return (self, self.usage)

    def held_bytes(self) -> int:
        """Bytes on disk and about to be, over every queue: what SPOOL_MAX_BYTES bounds."""
        return sum(q.bytes + q.pending_bytes for q in self.queues())

    def describe_held(self) -> str:
        return f"{self.count} events, {self.usage.count} usage reports"

    # ------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        await self._run(self._open_sync)
        for queue in self.queues():
            if queue.count:
                queue.not_empty.set()

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
            # FULL: every commit fsyncs the log, so an acknowledged item survives power loss.
            conn.execute("PRAGMA synchronous=FULL")
            for queue in self.queues():
                queue._load_sync(conn)
        except sqlite3.Error as exc:
            raise StartupError(
                f"cannot open the event spool {self.directory / DATABASE_NAME}: {exc} (SPOOL_DIR)"
            ) from exc
        _fsync_directory(self.directory)
        self._conn = conn

    async def close(self) -> None:
        for queue in self.queues():
            await queue.wait_for_writes()
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

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

"""Durable state in SQLite: every mutation and the events it causes commit together.

The outbox table is the transactional outbox: a change event is written in the
same transaction as the change, and a relay publishes it afterwards, so an event
is never published for a change that did not commit, and a crash between commit
and publish only delays the event (it is published on restart).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from upstream.credits import LedgerEntry
from upstream.domain import (
    CreditGrant,
    Customer,
    GrantType,
    PromotionalEntitlement,
    Subscription,
    SubscriptionStatus,
    UsageCounter,
)
from upstream.store.schema import MIGRATIONS, SCHEMA_VERSION

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MS


def from_ms(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(milliseconds=value)


def rkey(resource_id: str | None) -> str:
    return resource_id or ""


def rid(resource_key: str) -> str | None:
    return resource_key or None


def _req_ms(value: int) -> datetime:
    result = from_ms(value)
    assert result is not None
    return result


P = ParamSpec("P")
T = TypeVar("T")


class Store:
    """One SQLite database; all access goes through ``transaction()`` (or ``read()``).

    One connection for everything that may write, used by one thread at a time (the lock). A
    service on an event loop must not take that lock itself: a commit waits for fsync, and a
    loop waiting for the lock waits for that fsync too. It hands its work to :meth:`run`
    instead, which runs it on the store's one writer thread, so transactions still run one after
    the other, in submission order. For reads that write nothing the loop has a connection of
    its own (:meth:`snapshot`): in WAL mode a reader never waits for the writer.
    """

    def __init__(self, path: str | Path) -> None:
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed change (and its outbox row) survives power loss, not just a crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()
        # Its thread starts with the first run(): synchronous users never get one.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upstream-sqlite")
        self._migrate()
        # The event loop's read-only connection (snapshot()); opened after the migrations.
        self._reader = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._reader.row_factory = sqlite3.Row
        self._reader.execute("PRAGMA query_only=ON")

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the writer thread, without blocking the running loop.

        One thread: what is submitted runs in order and never concurrently, and the loop keeps
        serving while a transaction commits. If the awaiting task is cancelled, ``fn`` either
        never starts or runs to its end (a transaction commits or rolls back whole).
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._writer, call)

    def _migrate(self) -> None:
        current = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for version in range(current + 1, SCHEMA_VERSION + 1):
            self._conn.executescript(
                f"BEGIN; {MIGRATIONS[version]} PRAGMA user_version={version}; COMMIT;"
            )

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Tx]:
        """A serialized write transaction: commit on success, roll back on any error.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL`` for this
        transaction alone): power loss may undo it, never reorder it, since the next durable
        commit syncs the write-ahead log up to itself. Only for bookkeeping whose loss is
        harmless, such as marking outbox rows published (they are published again).
        """
        with self._lock:
            if not durable:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield Tx(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            finally:
                if not durable:
                    self._conn.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """A read-only transaction on the event loop's own connection, without the lock.

        WAL: it sees every transaction committed before it began, and it never waits for the
        writer thread nor its fsync. For one thread only (the loop's), and with no ``await``
        inside: the connection is not shared. Writing through it fails (``query_only``).
        """
        self._reader.execute("BEGIN")
        try:
            yield Tx(self._reader)
        finally:
            self._reader.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """Queries outside a transaction: each statement is atomic alone, so read one thing.

        Skips the BEGIN and COMMIT a one-statement read does not need.
        """
        with self._lock:
            yield Tx(self._conn)

    def trace(
        self,
        callback: Callable[[str], object] | None,
        *,
        reads: Callable[[str], object] | None = None,
    ) -> None:
        """Call ``callback`` with each SQL statement of the read-write connection as it starts,
        on the thread running it, and ``reads`` with each of the loop's read-only connection
        (None: stop). For tests and measurements (``sqlite3.Connection.set_trace_callback``).

        Only between transactions (the lock): SQLite takes the connection's mutex to change the
        callback, without Python letting go of the GIL, while a statement running on the writer
        thread holds that mutex and needs the GIL to call the old callback. Changed mid-statement,
        the two threads wait for each other forever. Call it from the loop's thread (the reader
        belongs to that thread)."""
        with self._lock:
            self._conn.set_trace_callback(callback)
        self._reader.set_trace_callback(reads)

    def close(self) -> None:
        """Finish what :meth:`run` was given, stop the writer thread, close the database.

        Blocks while queued work finishes: from a loop, ``await asyncio.to_thread(store.close)``.
        """
        self._writer.shutdown(wait=True)
        self._reader.close()
        self._conn.close()


class Tx:
    """Typed queries inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._c.execute(sql, args).fetchone()
        return row

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return list(self._c.execute(sql, args).fetchall())

    def next_version(self) -> int:
        row = self._one(
            "UPDATE counters SET value = value + 1 WHERE name='version' RETURNING value"
        )
        assert row is not None
        return int(row[0])

    # ---------------------------------------------------------------- customers

    def get_customer(self, customer_id: str) -> Customer | None:
        row = self._one("SELECT * FROM customers WHERE id=?", customer_id)
        if row is None:
            return None
        return Customer(
            id=row["id"],
            name=row["name"],
            email=row["email"],
            archived_at=from_ms(row["archived_at"]),
            metadata=json.loads(row["metadata"]),
            created_at=from_ms(row["created_at"]),
        )

    def put_customer(self, customer: Customer) -> None:
        self._c.execute(
            "INSERT INTO customers(id, name, email, metadata, created_at, archived_at)"
            " VALUES(?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET name=excluded.name,"
            " email=excluded.email, metadata=excluded.metadata, archived_at=excluded.archived_at",
            (
                customer.id,
                customer.name,
                customer.email,
                json.dumps(dict(customer.metadata)),
                to_ms(customer.created_at),
                to_ms(customer.archived_at),
            ),
        )

    def customer_ids(self) -> list[str]:
        return [row[0] for row in self._all("SELECT id FROM customers ORDER BY id")]

    # ------------------------------------------------------------ subscriptions

    @staticmethod
    def _subscription(row: sqlite3.Row) -> Subscription:
        return Subscription(
            id=row["id"],
            customer_id=row["customer_id"],
            plan_id=row["plan_id"],
            resource_id=rid(row["resource_key"]),
            status=SubscriptionStatus(row["status"]),
            start_date=_req_ms(row["start_date"]),
            trial_end=from_ms(row["trial_end"]),
            cancel_at=from_ms(row["cancel_at"]),
            ended_at=from_ms(row["ended_at"]),
            addons=json.loads(row["addons"]),
            billable_quantities=json.loads(row["billable"]),
        )

    def subscriptions_for(self, customer_id: str) -> list[Subscription]:
        rows = self._all(
            "SELECT * FROM subscriptions WHERE customer_id=? ORDER BY start_date, id", customer_id
        )
        return [self._subscription(r) for r in rows]

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        row = self._one("SELECT * FROM subscriptions WHERE id=?", subscription_id)
        return None if row is None else self._subscription(row)

    def subscription_product(self, subscription_id: str) -> str | None:
        row = self._one("SELECT product_id FROM subscriptions WHERE id=?", subscription_id)
        return None if row is None else str(row[0])

    def put_subscription(self, sub: Subscription, product_id: str, now: datetime) -> None:
        self._c.execute(
            "INSERT INTO subscriptions(id, customer_id, plan_id, product_id, resource_key, status,"
            " start_date, trial_end, cancel_at, ended_at, addons, billable, created_at)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            " status=excluded.status, trial_end=excluded.trial_end, cancel_at=excluded.cancel_at,"
            " ended_at=excluded.ended_at, addons=excluded.addons, billable=excluded.billable",
            (
                sub.id,
                sub.customer_id,
                sub.plan_id,
                product_id,
                rkey(sub.resource_id),
                sub.status.value,
                to_ms(sub.start_date),
                to_ms(sub.trial_end),
                to_ms(sub.cancel_at),
                to_ms(sub.ended_at),
                json.dumps(dict(sub.addons)),
                json.dumps(dict(sub.billable_quantities)),
                to_ms(now),
            ),
        )

    def subscriptions_of_product(
        self, customer_id: str, product_id: str, resource_id: str | None
    ) -> list[Subscription]:
        rows = self._all(
            "SELECT * FROM subscriptions WHERE customer_id=? AND product_id=? AND resource_key=?"
            " ORDER BY start_date, id",
            customer_id,
            product_id,
            rkey(resource_id),
        )
        return [self._subscription(r) for r in rows]

    # --------------------------------------------------------------- promotions

    def promotions_for(self, customer_id: str) -> list[PromotionalEntitlement]:
        rows = self._all("SELECT * FROM promotions WHERE customer_id=? ORDER BY id", customer_id)
        return [self._promotion(r) for r in rows]

    def get_promotion(self, promotion_id: str) -> PromotionalEntitlement | None:
        row = self._one("SELECT * FROM promotions WHERE id=?", promotion_id)
        return None if row is None else self._promotion(row)

    @staticmethod
    def _promotion(row: sqlite3.Row) -> PromotionalEntitlement:
        body = json.loads(row["body"])
        return PromotionalEntitlement(
            id=row["id"],
            customer_id=row["customer_id"],
            feature_id=row["feature_id"],
            resource_id=rid(row["resource_key"]),
            value=body.get("value"),
            unlimited=body.get("unlimited", False),
            soft_limit=body.get("softLimit", False),
            enum_values=tuple(body.get("enumValues", ())),
            reset_period=body.get("resetPeriod"),
            expires_at=from_ms(row["expires_at"]),
            revoked_at=from_ms(row["revoked_at"]),
        )

    def put_promotion(self, promo: PromotionalEntitlement, now: datetime) -> None:
        body = {
            "value": promo.value,
            "unlimited": promo.unlimited,
            "softLimit": promo.soft_limit,
            "enumValues": list(promo.enum_values),
            "resetPeriod": promo.reset_period,
        }
        self._c.execute(
            "INSERT INTO promotions(id, customer_id, feature_id, resource_key, body, expires_at,"
            " revoked_at, created_at) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            " revoked_at=excluded.revoked_at",
            (
                promo.id,
                promo.customer_id,
                promo.feature_id,
                rkey(promo.resource_id),
                json.dumps(body),
                to_ms(promo.expires_at),
                to_ms(promo.revoked_at),
                to_ms(now),
            ),
        )

    # ------------------------------------------------------------------ credits

    @staticmethod
    def _grant(row: sqlite3.Row) -> CreditGrant:
        return CreditGrant(
            id=row["id"],
            customer_id=row["customer_id"],
            currency_id=row["currency_id"],
            amount=row["amount"],
            grant_type=GrantType(row["grant_type"]),
            resource_id=rid(row["resource_key"]),
            priority=row["priority"],
            effective_at=from_ms(row["effective_at"]),
            expires_at=from_ms(row["expires_at"]),
            voided_at=from_ms(row["voided_at"]),
            consumed=row["consumed"],
            created_at=from_ms(row["created_at"]),
            idempotency_key=row["idempotency_key"],
        )

    def grants_for(self, customer_id: str) -> list[CreditGrant]:
        rows = self._all("SELECT * FROM credit_grants WHERE customer_id=? ORDER BY id", customer_id)
        return [self._grant(r) for r in rows]

    def get_grant(self, grant_id: str) -> CreditGrant | None:
        row = self._one("SELECT * FROM credit_grants WHERE id=?", grant_id)
        return None if row is None else self._grant(row)

    def put_grant(self, grant: CreditGrant) -> bool:
        """Insert or update; returns False when an insert was ignored as a duplicate id."""
        cursor = self._c.execute(
            "INSERT INTO credit_grants(id, customer_id, currency_id, resource_key, amount,"
            " grant_type, priority, effective_at, expires_at, voided_at, consumed, created_at,"
            " idempotency_key) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            " consumed=excluded.consumed, voided_at=excluded.voided_at",
            (
                grant.id,
                grant.customer_id,
                grant.currency_id,
                rkey(grant.resource_id),
                grant.amount,
                grant.grant_type.value,
                grant.priority,
                to_ms(grant.effective_at),
                to_ms(grant.expires_at),
                to_ms(grant.voided_at),
                grant.consumed,
                to_ms(grant.created_at),
                grant.idempotency_key,
            ),
        )
        return cursor.rowcount > 0

    def has_grant(self, grant_id: str) -> bool:
        return self._one("SELECT 1 FROM credit_grants WHERE id=?", grant_id) is not None

    def deficits_for(self, customer_id: str, resource_id: str | None) -> dict[str, float]:
        rows = self._all(
            "SELECT currency_id, deficit FROM credit_deficits"
            " WHERE customer_id=? AND resource_key=?",
            customer_id,
            rkey(resource_id),
        )
        return {row[0]: row[1] for row in rows}

    def set_deficit(
        self, customer_id: str, resource_id: str | None, currency_id: str, deficit: float
    ) -> None:
        self._c.execute(
            "INSERT INTO credit_deficits(customer_id, resource_key, currency_id, deficit)"
            " VALUES(?,?,?,?) ON CONFLICT DO UPDATE SET deficit=excluded.deficit",
            (customer_id, rkey(resource_id), currency_id, deficit),
        )

    def add_ledger(
        self,
        customer_id: str,
        resource_id: str | None,
        entries: Iterable[LedgerEntry],
        at: datetime,
    ) -> None:
        self._c.executemany(
            "INSERT INTO credit_ledger(customer_id, resource_key, currency_id, grant_id,"
            " event_type, amount, feature_id, at) VALUES(?,?,?,?,?,?,?,?)",
            [
                (
                    customer_id,
                    rkey(resource_id),
                    e.currency_id,
                    e.grant_id,
                    str(e.event_type),
                    e.amount,
                    e.feature_id,
                    to_ms(at),
                )
                for e in entries
            ],
        )

    def ledger(
        self, customer_id: str, currency_id: str | None, after: int, limit: int
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM credit_ledger WHERE customer_id=? AND id>?"
        args: list[Any] = [customer_id, after]
        if currency_id is not None:
            sql += " AND currency_id=?"
            args.append(currency_id)
        rows = self._all(sql + " ORDER BY id LIMIT ?", *args, limit)
        return [
            {
                "id": r["id"],
                "currencyId": r["currency_id"],
                "resourceId": rid(r["resource_key"]),
                "grantId": r["grant_id"],
                "eventType": r["event_type"],
                "amount": r["amount"],
                "featureId": r["feature_id"],
                "timestamp": r["at"],
            }
            for r in rows
        ]

    # -------------------------------------------------------------------- usage

    def usage_for(self, customer_id: str, resource_id: str | None) -> dict[str, UsageCounter]:
        rows = self._all(
            "SELECT * FROM usage WHERE customer_id=? AND resource_key=?",
            customer_id,
            rkey(resource_id),
        )
        return {row["feature_id"]: self._usage(row) for row in rows}

    @staticmethod
    def _usage(row: sqlite3.Row) -> UsageCounter:
        return UsageCounter(
            customer_id=row["customer_id"],
            feature_id=row["feature_id"],
            resource_id=rid(row["resource_key"]),
            value=row["value"],
            period_start=from_ms(row["period_start"]),
            period_end=from_ms(row["period_end"]),
            updated_at=_req_ms(row["updated_at"]),
            version=row["version"],
        )

    def usage_counter(
        self, customer_id: str, resource_id: str | None, feature_id: str
    ) -> tuple[UsageCounter, str | None] | None:
        """One counter and its meter state (raw events' aggregation), or None."""
        row = self._one(
            "SELECT * FROM usage WHERE customer_id=? AND resource_key=? AND feature_id=?",
            customer_id,
            rkey(resource_id),
            feature_id,
        )
        return None if row is None else (self._usage(row), row["meter_state"])

    def put_usage(self, counter: UsageCounter, meter_state: str | None = None) -> None:
        self._c.execute(
            "INSERT INTO usage(customer_id, resource_key, feature_id, value, period_start,"
            " period_end, updated_at, version, meter_state) VALUES(?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT DO UPDATE SET value=excluded.value, period_start=excluded.period_start,"
            " period_end=excluded.period_end, updated_at=excluded.updated_at,"
            " version=excluded.version, meter_state=excluded.meter_state",
            (
                counter.customer_id,
                rkey(counter.resource_id),
                counter.feature_id,
                counter.value,
                to_ms(counter.period_start),
                to_ms(counter.period_end),
                to_ms(counter.updated_at),
                counter.version,
                meter_state,
            ),
        )

    def delete_usage(self, customer_id: str, resource_id: str | None) -> None:
        self._c.execute(
            "DELETE FROM usage WHERE customer_id=? AND resource_key=?",
            (customer_id, rkey(resource_id)),
        )

    # -------------------------------------------------------------- idempotency

    def idempotent_response(self, scope: str, key: str) -> str | None:
        row = self._one("SELECT response FROM idempotency WHERE scope=? AND key=?", scope, key)
        return None if row is None else str(row[0])

    def remember_response(self, scope: str, key: str, response: str, now: datetime) -> None:
        self._c.execute(
            "INSERT INTO idempotency(scope, key, response, created_at) VALUES(?,?,?,?)",
            (scope, key, response, to_ms(now)),
        )

    # ------------------------------------------------------------------- states

    def state_digest(
        self, customer_id: str, resource_id: str | None
    ) -> tuple[int, str, datetime | None] | None:
        """(version, digest, valid_until) of the last published state."""
        row = self._one(
            "SELECT version, digest, valid_until FROM states"
            " WHERE customer_id=? AND resource_key=?",
            customer_id,
            rkey(resource_id),
        )
        return None if row is None else (int(row[0]), str(row[1]), from_ms(row[2]))

    def put_state(
        self,
        customer_id: str,
        resource_id: str | None,
        version: int,
        digest: str,
        valid_until: datetime | None,
    ) -> None:
        self._c.execute(
            "INSERT INTO states(customer_id, resource_key, version, digest, valid_until)"
            " VALUES(?,?,?,?,?) ON CONFLICT DO UPDATE SET version=excluded.version,"
            " digest=excluded.digest, valid_until=excluded.valid_until",
            (customer_id, rkey(resource_id), version, digest, to_ms(valid_until)),
        )

    def state_resources(self, customer_id: str) -> list[str | None]:
        rows = self._all("SELECT resource_key FROM states WHERE customer_id=?", customer_id)
        return [rid(row[0]) for row in rows]

    def due_states(self, now: datetime, limit: int = 500) -> list[tuple[str, str | None]]:
        rows = self._all(
            "SELECT customer_id, resource_key FROM states WHERE valid_until IS NOT NULL"
            " AND valid_until <= ? ORDER BY valid_until LIMIT ?",
            to_ms(now),
            limit,
        )
        return [(row[0], rid(row[1])) for row in rows]

    def next_due(self) -> datetime | None:
        row = self._one("SELECT MIN(valid_until) FROM states WHERE valid_until IS NOT NULL")
        return None if row is None else from_ms(row[0])

    def all_state_keys(self) -> list[tuple[str, str | None]]:
        rows = self._all("SELECT customer_id, resource_key FROM states ORDER BY customer_id")
        return [(row[0], rid(row[1])) for row in rows]

    def state_keys_after(
        self, after: tuple[str, str | None] | None, limit: int
    ) -> list[tuple[str, str | None]]:
        """State keys in (customer, resource) order, strictly after ``after``: one export page."""
        if after is None:
            rows = self._all(
                "SELECT customer_id, resource_key FROM states"
                " ORDER BY customer_id, resource_key LIMIT ?",
                limit,
            )
        else:
            rows = self._all(
                "SELECT customer_id, resource_key FROM states"
                " WHERE (customer_id, resource_key) > (?, ?)"
                " ORDER BY customer_id, resource_key LIMIT ?",
                after[0],
                rkey(after[1]),
                limit,
            )
        return [(row[0], rid(row[1])) for row in rows]

    # ------------------------------------------------------------------- outbox

    def append_outbox(
        self,
        customer_id: str,
        resource_id: str | None,
        kind: str,
        committed_at: datetime,
        payload: tuple[str, str],
    ) -> int:
        """Append an event at the next feed position, in one statement; returns the position.

        The payload carries its own position, known only once the row is inserted, so
        ``payload`` is the encoded event split around where its ``seq`` goes, and the row stores
        ``head + seq + tail``. The position is the one AUTOINCREMENT would have chosen: past
        both the largest ever handed out and the largest present (inserting it records it).
        """
        head, tail = payload
        row = self._one(
            "INSERT INTO outbox(seq, customer_id, resource_key, kind, payload, committed_at)"
            " SELECT n.seq, ?, ?, ?, ? || n.seq || ?, ? FROM (SELECT MAX("
            "COALESCE((SELECT seq FROM sqlite_sequence WHERE name='outbox'), 0),"
            " COALESCE((SELECT MAX(seq) FROM outbox), 0)) + 1 AS seq) AS n RETURNING seq",
            customer_id,
            rkey(resource_id),
            kind,
            head,
            tail,
            to_ms(committed_at),
        )
        assert row is not None
        return int(row[0])

    def unpublished(self, limit: int) -> list[tuple[int, str]]:
        rows = self._all(
            "SELECT seq, payload FROM outbox WHERE published=0 ORDER BY seq LIMIT ?", limit
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def mark_published(self, seqs: Sequence[int]) -> None:
        self._c.executemany("UPDATE outbox SET published=1 WHERE seq=?", [(s,) for s in seqs])

    def changes_after(self, seq: int, limit: int) -> list[tuple[int, str]]:
        rows = self._all(
            "SELECT seq, payload FROM outbox WHERE seq>? ORDER BY seq LIMIT ?", seq, limit
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def head_seq(self) -> int:
        row = self._one("SELECT MAX(seq) FROM outbox")
        return int(row[0]) if row is not None and row[0] is not None else 0

    def oldest_seq(self) -> int:
        row = self._one("SELECT MIN(seq) FROM outbox")
        return int(row[0]) if row is not None and row[0] is not None else 0

"""Order and duplicates do not matter: shuffled, duplicated delivery converges on in-order state.

A seeded random history of change events (full states, usage records and deletions, with
versions from one counter that only grows) is applied twice through ``apply_events``: once in
order, once shuffled with about 20% duplicates, both in random batch sizes. Every key must read
back the same from both, and the same as a model that keeps, per key, the newest version of
every record committed after the key's newest deletion.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from entitlements.model.events import ChangeEvent, EventKind
from entitlements.model.state import CustomerSnapshot, EntitlementState, UsageRecord
from entitlements.redis.store import RedisStore
from tests.builders import boolean, metered, numeric, wallet

HISTORY_LENGTH = 10_000
KEY_COUNT = 50
FEATURES = ("api-calls", "storage", "seats")
CURRENCIES = ("ai-credits", "gpu-minutes")
START = datetime(2026, 6, 1, tzinfo=UTC)

Key = tuple[str, str | None]
RecordId = tuple[str, str]  # ("f", feature id) or ("c", currency id)


def make_keys(count: int = KEY_COUNT) -> list[Key]:
    # The last 30% of the keys carry a resource, for customers that also have a resource-less key.
    plain = max(1, count * 7 // 10)
    return [(f"cust-{i % plain}", f"res-{i}" if i >= plain else None) for i in range(count)]


def make_state(rng: random.Random, key: Key, version: int) -> EntitlementState:
    customer_id, resource_id = key
    features = [
        numeric("seats", rng.randint(1, 500)),
        metered("api-calls", rng.choice([None, 100.0, 1000.0])),
    ]
    if rng.random() < 0.5:
        features.append(boolean("sso"))
    credits = {"ai-credits": wallet("ai-credits", float(rng.randint(0, 10_000)))}
    return EntitlementState(
        customer_id,
        resource_id,
        features={f.feature.id: f for f in features},
        credits=credits if rng.random() < 0.7 else {},
        version=version,
        updated_at=START + timedelta(seconds=version),
    )


def make_history(
    rng: random.Random, length: int = HISTORY_LENGTH, key_count: int = KEY_COUNT
) -> list[ChangeEvent]:
    keys = make_keys(key_count)
    usage: dict[Key, dict[RecordId, UsageRecord]] = {key: {} for key in keys}
    events: list[ChangeEvent] = []
    for seq in range(1, length + 1):
        # One global counter makes every record's versions strictly increasing over the history.
        version = seq
        key = rng.choice(keys)
        committed = START + timedelta(milliseconds=seq)
        roll = rng.random()
        if roll < 0.04:
            usage[key] = {}
            events.append(ChangeEvent(EventKind.DELETED, seq, *key, version, committed))
            continue
        if roll < 0.34:
            held = usage[key]
            snapshot = CustomerSnapshot(
                make_state(rng, key, version),
                feature_usage={i: r for (kind, i), r in held.items() if kind == "f"},
                credit_usage={i: r for (kind, i), r in held.items() if kind == "c"},
            )
            events.append(
                ChangeEvent(
                    EventKind.ENTITLEMENTS, seq, *key, version, committed, snapshot=snapshot
                )
            )
            continue
        record = UsageRecord(
            current_usage=float(rng.randint(0, 10_000)),
            period_start=START,
            period_end=START + timedelta(days=30),
            updated_at=committed,
            version=version,
        )
        feature_id = currency_id = None
        if rng.random() < 0.7:
            feature_id = rng.choice(FEATURES)
            usage[key][("f", feature_id)] = record
        else:
            currency_id = rng.choice(CURRENCIES)
            usage[key][("c", currency_id)] = record
        events.append(
            ChangeEvent(
                EventKind.USAGE,
                seq,
                *key,
                version,
                committed,
                usage=record,
                feature_id=feature_id,
                currency_id=currency_id,
            )
        )
    return events


def newest_of_everything(
    history: Sequence[ChangeEvent], key_count: int = KEY_COUNT
) -> dict[Key, CustomerSnapshot | None]:
    """What every key must hold: its newest state and the newest version of each record."""
    states: dict[Key, EntitlementState] = {}
    records: dict[Key, dict[RecordId, UsageRecord]] = {}
    deleted: dict[Key, int] = {}
    for event in history:
        key = (event.customer_id, event.resource_id)
        if event.kind is EventKind.DELETED:
            deleted[key] = max(deleted.get(key, event.version), event.version)
        found: dict[RecordId, UsageRecord] = {}
        if event.snapshot is not None:
            state = event.snapshot.state
            if key not in states or state.version > states[key].version:
                states[key] = state
            found.update({("f", i): r for i, r in event.snapshot.feature_usage.items()})
            found.update({("c", i): r for i, r in event.snapshot.credit_usage.items()})
        if event.usage is not None:
            kind, name = ("f", event.feature_id) if event.feature_id else ("c", event.currency_id)
            assert name is not None
            found[(kind, name)] = event.usage
        held = records.setdefault(key, {})
        for record_id, record in found.items():
            if record_id not in held or record.version > held[record_id].version:
                held[record_id] = record
    expected: dict[Key, CustomerSnapshot | None] = {}
    for key in make_keys(key_count):
        floor = deleted.get(key, -1)
        if key not in states or states[key].version <= floor:
            expected[key] = None
            continue
        held = {i: r for i, r in records.get(key, {}).items() if r.version > floor}
        expected[key] = CustomerSnapshot(
            states[key],
            feature_usage={i: r for (kind, i), r in held.items() if kind == "f"},
            credit_usage={i: r for (kind, i), r in held.items() if kind == "c"},
        )
    return expected


async def deliver(
    store: RedisStore, events: Sequence[ChangeEvent], sizes: Callable[[], int]
) -> None:
    """Apply ``events`` in batches whose sizes ``sizes`` picks."""
    position = 0
    while position < len(events):
        batch = events[position : position + max(1, sizes())]
        results = await store.apply_events(batch)
        assert len(results) == len(batch)
        position += len(batch)


async def assert_converged(
    in_order: RedisStore, shuffled: RedisStore, history: Sequence[ChangeEvent], key_count: int
) -> None:
    for (customer_id, resource_id), want in newest_of_everything(history, key_count).items():
        from_order = await in_order.get(customer_id, resource_id)
        from_shuffle = await shuffled.get(customer_id, resource_id)
        assert from_shuffle == from_order, (customer_id, resource_id)
        assert from_order == want, (customer_id, resource_id)
    assert in_order.decode_errors == shuffled.decode_errors == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_shuffled_duplicated_delivery_converges(
    client: Redis, redis_prefix: str, seed: int
) -> None:
    rng = random.Random(seed)
    history = make_history(rng)

    delivery = list(history) + rng.sample(history, k=len(history) // 5)
    rng.shuffle(delivery)

    in_order = RedisStore(client, prefix=f"{redis_prefix}:ordered", ttl_seconds=3600)
    shuffled = RedisStore(client, prefix=f"{redis_prefix}:shuffled", ttl_seconds=3600)
    await deliver(in_order, history, lambda: rng.randint(1, 400))
    await deliver(shuffled, delivery, lambda: rng.randint(1, 400))

    await assert_converged(in_order, shuffled, history, KEY_COUNT)


_examples = itertools.count()


# Short histories, but hypothesis chooses the order, the duplicates and the batch sizes, and
# shrinks a failure down to a handful of events.
@settings(
    max_examples=60,
    deadline=None,
    # Each example writes under its own prefix, so sharing the function-scoped client is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_any_delivery_order_converges(
    client: Redis, redis_prefix: str, data: st.DataObject
) -> None:
    key_count = 3
    history = make_history(random.Random(data.draw(st.integers(0, 2**32))), 40, key_count)
    indices = st.integers(0, len(history) - 1)
    duplicates = data.draw(st.lists(indices, max_size=len(history) // 2))
    delivery = data.draw(st.permutations(history + [history[i] for i in duplicates]))
    sizes = iter(data.draw(st.lists(st.integers(1, 20), min_size=1, max_size=10)))

    example = next(_examples)
    in_order = RedisStore(client, prefix=f"{redis_prefix}:{example}:o", ttl_seconds=3600)
    shuffled = RedisStore(client, prefix=f"{redis_prefix}:{example}:s", ttl_seconds=3600)
    await deliver(in_order, history, lambda: 7)
    # Once the drawn sizes run out, the rest goes in one batch.
    await deliver(shuffled, delivery, lambda: next(sizes, len(delivery)))

    await assert_converged(in_order, shuffled, history, key_count)

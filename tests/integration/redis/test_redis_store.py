"""RedisStore against a real redis-server: versioned writes, TTLs, pub/sub, failures, restarts."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from entitlements.errors import CacheRejected, CacheUnavailable, SourceUnavailable, WritesRejected
from entitlements.model.events import ChangeEvent, EventKind
from entitlements.model.state import UsageRecord, encode_state, epoch_ms
from entitlements.redis.hash_writes import snapshot_write, usage_write
from entitlements.redis.invalidation import Invalidation
from entitlements.redis.keys import (
    epoch_key,
    invalidation_channel,
    lock_key,
    refetch_channel,
    state_key,
)
from entitlements.redis.scripts import UNLOCK_SCRIPT, WRITE_SCRIPT
from entitlements.redis.store import WRITES_PER_CALL, ApplyResult, RedisStore
from tests.builders import NOW, demo_snapshot, numeric, snapshot
from tests.integration.redis.support import (
    fast_failing_client,
    next_message,
    subscribed,
    versioned,
)
from tests.redis_server import RedisServer

COMMITTED = datetime(2026, 6, 15, 12, 0, 5, tzinfo=UTC)


def usage_record(current: float, version: int) -> UsageRecord:
    return UsageRecord(current_usage=current, updated_at=NOW, version=version)


def event(kind: EventKind, seq: int, customer: str, version: int, **kw: object) -> ChangeEvent:
    return ChangeEvent(kind, seq, customer, None, version, COMMITTED, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ round trip and versions


@pytest.mark.parametrize("decode_responses", [False, True], ids=["bytes", "text"])
@pytest.mark.parametrize("resource_id", [None, "res-9"])
async def test_round_trip_of_demo_snapshot(
    redis_server: RedisServer, redis_prefix: str, decode_responses: bool, resource_id: str | None
) -> None:
    client = Redis(port=redis_server.port, decode_responses=decode_responses)
    try:
        store = RedisStore(client, prefix=redis_prefix, ttl_seconds=3600)
        demo = versioned(demo_snapshot("cust-rt", resource_id), state=3)
        assert await store.get("cust-rt", resource_id) is None

        result = await store.apply_snapshot(demo)

        # The state plus two feature usage records plus one wallet record.
        assert result == ApplyResult(applied=4, stale=0)
        assert await store.get("cust-rt", resource_id) == demo
        assert await store.get("cust-rt", None if resource_id else "res-9") is None
        assert store.decode_errors == 0
    finally:
        await client.aclose()


async def test_newer_state_replaces_and_older_or_equal_is_stale(store: RedisStore) -> None:
    v5 = versioned(snapshot("cust-v", numeric("seats", 5)), state=5)
    assert await store.apply_snapshot(v5) == ApplyResult(1, 0)

    older = versioned(snapshot("cust-v", numeric("seats", 3)), state=4)
    same_version = versioned(snapshot("cust-v", numeric("seats", 99)), state=5)
    assert await store.apply_snapshot(older) == ApplyResult(0, 1)
    assert await store.apply_snapshot(same_version) == ApplyResult(0, 1)
    assert await store.get("cust-v", None) == v5

    newer = versioned(snapshot("cust-v", numeric("seats", 7)), state=6)
    assert await store.apply_snapshot(newer) == ApplyResult(1, 0)
    assert await store.get("cust-v", None) == newer


async def test_usage_records_are_versioned_one_by_one(store: RedisStore) -> None:
    first = replace(
        snapshot("cust-u", numeric("seats", 1)),
        feature_usage={"api-calls": usage_record(50, 10), "storage": usage_record(1, 1)},
        credit_usage={"ai-credits": usage_record(5, 3)},
    )
    assert await store.apply_snapshot(first) == ApplyResult(applied=4, stale=0)

    # A later full state carrying an older api-calls record must not roll that record back.
    second = replace(
        snapshot("cust-u", numeric("seats", 2)),
        feature_usage={"api-calls": usage_record(40, 9), "storage": usage_record(2, 2)},
        credit_usage={"ai-credits": usage_record(5, 3)},
    )
    second = replace(second, state=replace(second.state, version=1))
    assert await store.apply_snapshot(second) == ApplyResult(applied=2, stale=2)

    got = await store.get("cust-u", None)
    assert got is not None
    assert got.state == second.state
    assert got.feature_usage == {"api-calls": usage_record(50, 10), "storage": usage_record(2, 2)}
    assert got.credit_usage == {"ai-credits": usage_record(5, 3)}


async def test_apply_usage_for_a_feature_and_for_a_credit(store: RedisStore) -> None:
    await store.apply_snapshot(versioned(demo_snapshot("cust-a"), state=1))

    api = usage_record(8, 2)
    credits = usage_record(41, 2)
    assert await store.apply_usage("cust-a", None, api, feature_id="api-calls") == ApplyResult(1, 0)
    assert await store.apply_usage("cust-a", None, credits, currency_id="ai-credits") == (
        ApplyResult(1, 0)
    )
    # Replays and older records are stale; a record for a new feature is simply added.
    assert await store.apply_usage("cust-a", None, api, feature_id="api-calls") == ApplyResult(0, 1)
    assert await store.apply_usage(
        "cust-a", None, usage_record(1, 1), currency_id="ai-credits"
    ) == ApplyResult(0, 1)
    fresh = usage_record(3, 1)
    assert await store.apply_usage("cust-a", None, fresh, feature_id="new") == ApplyResult(1, 0)

    got = await store.get("cust-a", None)
    assert got is not None
    assert got.feature_usage["api-calls"] == api
    assert got.feature_usage["new"] == fresh
    assert got.feature_usage["storage"] == demo_snapshot().feature_usage["storage"]
    assert got.credit_usage == {"ai-credits": credits}


async def test_apply_usage_needs_exactly_one_target(store: RedisStore) -> None:
    record = usage_record(1, 1)
    with pytest.raises(ValueError, match="exactly one"):
        await store.apply_usage("c", None, record)
    with pytest.raises(ValueError, match="exactly one"):
        await store.apply_usage("c", None, record, feature_id="f", currency_id="x")


async def test_usage_without_state_reads_as_a_miss(store: RedisStore) -> None:
    await store.apply_usage("cust-early", None, usage_record(1, 1), feature_id="api-calls")
    assert await store.get("cust-early", None) is None
    assert store.decode_errors == 0


async def test_versions_beyond_double_precision_compare_exactly(store: RedisStore) -> None:
    # 2^53 + 1 and 2^53 are the same double; a numeric compare in Lua would call them equal.
    base = 2**53
    assert await store.apply_usage("c-big", None, usage_record(1, base), feature_id="f") == (
        ApplyResult(1, 0)
    )
    assert await store.apply_usage("c-big", None, usage_record(2, base + 1), feature_id="f") == (
        ApplyResult(1, 0)
    )
    near_max = 2**63 - 1
    await store.apply_usage("c-big", None, usage_record(3, near_max), feature_id="f")
    assert await store.apply_usage(
        "c-big", None, usage_record(4, near_max - 1), feature_id="f"
    ) == (ApplyResult(0, 1))
    await store.apply_usage("c-neg", None, usage_record(1, -5), feature_id="f")
    assert await store.apply_usage("c-neg", None, usage_record(2, -6), feature_id="f") == (
        ApplyResult(0, 1)
    )
    assert await store.apply_usage("c-neg", None, usage_record(3, -4), feature_id="f") == (
        ApplyResult(1, 0)
    )
    with pytest.raises(ValueError, match="int64"):
        await store.apply_usage("c-big", None, usage_record(1, 2**63), feature_id="f")


async def test_delete_removes_the_hash(store: RedisStore, client: Redis) -> None:
    await store.apply_snapshot(versioned(demo_snapshot("cust-d"), state=1))
    await store.delete("cust-d", None)
    assert await client.exists(state_key(store.prefix, "cust-d", None)) == 0
    assert await store.get("cust-d", None) is None


# ------------------------------------------------------------------ TTL


async def test_positive_ttl_sets_pttl(client: Redis, redis_prefix: str) -> None:
    store = RedisStore(client, prefix=redis_prefix, ttl_seconds=60)
    await store.apply_snapshot(versioned(demo_snapshot("cust-t"), state=1))
    pttl = await client.pttl(state_key(redis_prefix, "cust-t", None))
    assert 0 < pttl <= 60_000


async def test_negative_ttl_persists_and_removes_an_existing_ttl(
    client: Redis, redis_prefix: str
) -> None:
    key = state_key(redis_prefix, "cust-p", None)
    forever = RedisStore(client, prefix=redis_prefix, ttl_seconds=-1)
    await forever.apply_snapshot(versioned(demo_snapshot("cust-p"), state=1))
    assert await client.pttl(key) == -1

    expiring = RedisStore(client, prefix=redis_prefix, ttl_seconds=60)
    await expiring.apply_snapshot(versioned(demo_snapshot("cust-p"), state=2))
    assert await client.pttl(key) > 0

    await forever.apply_usage("cust-p", None, usage_record(9, 99), feature_id="api-calls")
    assert await client.pttl(key) == -1


def test_zero_ttl_is_refused(client: Redis) -> None:
    with pytest.raises(ValueError, match="TTL of 0"):
        RedisStore(client, prefix="x", ttl_seconds=0)


# ------------------------------------------------------------------ invalidations


async def test_invalidation_is_published_exactly_when_something_was_written(
    store: RedisStore, client: Redis
) -> None:
    channel = invalidation_channel(store.prefix)
    async with subscribed(client, channel) as pubsub:
        first = versioned(demo_snapshot("cust-i"), state=7)
        await store.apply_snapshot(first, committed_at_ms=1234)
        assert Invalidation.decode(await next_message(pubsub)) == Invalidation(
            "cust-i", None, 7, 1234
        )

        # A full replay writes nothing, so nothing is announced. The marker published after it
        # travels the same channel in order, so it arriving next proves nothing came before it.
        assert await store.apply_snapshot(first) == ApplyResult(0, 4)
        await client.publish(channel, "marker-1")
        assert await next_message(pubsub) == "marker-1"

        # A partly stale write still changed something.
        await store.apply_usage("cust-i", "r-1", usage_record(1, 8), feature_id="api-calls")
        assert Invalidation.decode(await next_message(pubsub)) == Invalidation(
            "cust-i", "r-1", 8, None
        )


async def test_no_invalidation_when_publishing_is_off(client: Redis, redis_prefix: str) -> None:
    quiet = RedisStore(client, prefix=redis_prefix, ttl_seconds=60, publish=False)
    channel = invalidation_channel(redis_prefix)
    async with subscribed(client, channel) as pubsub:
        result = await quiet.apply_snapshot(versioned(demo_snapshot("cust-q"), state=1))
        assert result.applied == 4
        await client.publish(channel, "marker")
        assert await next_message(pubsub) == "marker"


def test_invalidation_json_round_trip() -> None:
    inv = Invalidation("c-1", "r-1", 42, 1_700_000_000_000)
    assert Invalidation.decode(inv.encode()) == inv
    assert Invalidation.decode(inv.encode().encode()) == inv
    assert inv.encode() == '{"c":"c-1","r":"r-1","v":42,"t":1700000000000}'
    bare = Invalidation("c-1", None, 0, None)
    assert Invalidation.decode(bare.encode()) == bare
    for bad in ("[]", '{"r":null,"v":1}', '{"c":"x","v":"1"}', '{"c":"x","v":1,"t":true}', "{"):
        with pytest.raises(ValueError):  # noqa: PT011 - StateDecodeError is a ValueError
            Invalidation.decode(bad)


# ------------------------------------------------------------------ corruption


async def test_corrupt_json_reads_as_a_miss_and_is_counted(
    store: RedisStore, client: Redis
) -> None:
    key = state_key(store.prefix, "cust-x", None)
    await client.hset(key, mapping={"state": "{not json", "v:state": "1"})

    assert await store.get("cust-x", None) is None
    assert store.decode_errors == 1


async def test_corrupt_usage_record_or_foreign_state_reads_as_a_miss(
    store: RedisStore, client: Redis
) -> None:
    await store.apply_snapshot(versioned(demo_snapshot("cust-y"), state=1))
    await client.hset(state_key(store.prefix, "cust-y", None), "u:f:api-calls", '{"oops":')
    assert await store.get("cust-y", None) is None

    # A state filed under the wrong key would hand one customer another's entitlements.
    foreign = encode_state(replace(demo_snapshot("someone-else").state, version=1))
    await client.hset(state_key(store.prefix, "cust-z", None), mapping={"state": foreign})
    assert await store.get("cust-z", None) is None
    assert store.decode_errors == 2


async def test_a_corrupt_stored_version_does_not_block_writes(
    store: RedisStore, client: Redis
) -> None:
    key = state_key(store.prefix, "cust-cv", None)
    await client.hset(key, mapping={"state": "garbage", "v:state": "not-a-number"})
    fixed = versioned(demo_snapshot("cust-cv"), state=1)
    assert (await store.apply_snapshot(fixed)).applied == 4
    assert await store.get("cust-cv", None) == fixed


# ------------------------------------------------------------------ epoch, locks, refetch


async def test_epoch_round_trip_without_ttl(
    client: Redis, redis_prefix: str, store: RedisStore
) -> None:
    assert await store.get_epoch() is None
    await store.set_epoch("epoch-1")
    assert await store.get_epoch() == "epoch-1"
    await client.pexpire(epoch_key(redis_prefix), 10_000)
    await store.set_epoch("epoch-2")
    assert await store.get_epoch() == "epoch-2"
    assert await client.pttl(epoch_key(redis_prefix)) == -1


async def test_lock_is_exclusive_and_only_the_holder_releases(
    store: RedisStore, client: Redis
) -> None:
    assert await store.try_lock("cust-l", None, "token-a", 10_000)
    assert not await store.try_lock("cust-l", None, "token-b", 10_000)
    assert 0 < await client.pttl(lock_key(store.prefix, "cust-l", None)) <= 10_000

    await store.unlock("cust-l", None, "token-b")
    assert not await store.try_lock("cust-l", None, "token-b", 10_000)

    await store.unlock("cust-l", None, "token-a")
    assert await store.try_lock("cust-l", None, "token-b", 10_000)
    # Locks are per (customer, resource).
    assert await store.try_lock("cust-l", "res-1", "token-a", 10_000)
    with pytest.raises(ValueError, match="positive"):
        await store.try_lock("cust-l", None, "t", 0)


async def test_publish_refetch(store: RedisStore, client: Redis) -> None:
    async with subscribed(client, refetch_channel(store.prefix, "cust-r", "res")) as pubsub:
        await store.publish_refetch("cust-r", "res", "done:v3")
        assert await next_message(pubsub) == "done:v3"


async def test_ping(store: RedisStore) -> None:
    assert await store.ping() is True


# ------------------------------------------------------------------ events


async def test_apply_events_in_order_with_deletion(store: RedisStore, client: Redis) -> None:
    a1 = versioned(demo_snapshot("ev-a"), state=1)
    b1 = versioned(demo_snapshot("ev-b"), state=1)
    events = [
        event(EventKind.ENTITLEMENTS, 1, "ev-a", 1, snapshot=a1),
        event(EventKind.ENTITLEMENTS, 2, "ev-b", 1, snapshot=b1),
        event(EventKind.USAGE, 3, "ev-a", 2, feature_id="api-calls", usage=usage_record(9, 2)),
        event(EventKind.USAGE, 4, "ev-a", 2, feature_id="api-calls", usage=usage_record(9, 2)),
        event(EventKind.USAGE, 5, "ev-b", 2, currency_id="ai-credits", usage=usage_record(1, 2)),
        event(EventKind.DELETED, 6, "ev-b", 3),
        event(EventKind.DELETED, 7, "ev-gone", 1),
    ]
    channel = invalidation_channel(store.prefix)
    async with subscribed(client, channel) as pubsub:
        results = await store.apply_events(events)
        published = [Invalidation.decode(await next_message(pubsub)) for _ in range(6)]
        await client.publish(channel, "marker")
        assert await next_message(pubsub) == "marker"

    assert results == [
        ApplyResult(4, 0),
        ApplyResult(4, 0),
        ApplyResult(1, 0),
        ApplyResult(0, 1),
        ApplyResult(1, 0),
        ApplyResult(1, 0),
        ApplyResult(0, 0),
    ]
    t = epoch_ms(COMMITTED)
    # The stale replay (seq 4) is silent; a deletion is announced even when nothing was there.
    assert published == [
        Invalidation("ev-a", None, 1, t),
        Invalidation("ev-b", None, 1, t),
        Invalidation("ev-a", None, 2, t),
        Invalidation("ev-b", None, 2, t),
        Invalidation("ev-b", None, 3, t),
        Invalidation("ev-gone", None, 1, t),
    ]
    got = await store.get("ev-a", None)
    assert got is not None
    assert got.feature_usage["api-calls"] == usage_record(9, 2)
    assert await store.get("ev-b", None) is None
    assert await store.apply_events([]) == []


async def test_deletions_are_versioned_and_drop_only_what_came_before(
    store: RedisStore, client: Redis
) -> None:
    key = state_key(store.prefix, "ev-t", None)
    state5 = event(
        EventKind.ENTITLEMENTS, 1, "ev-t", 5, snapshot=versioned(demo_snapshot("ev-t"), 5, usage=5)
    )
    usage9 = event(EventKind.USAGE, 2, "ev-t", 9, feature_id="api-calls", usage=usage_record(4, 9))
    channel = invalidation_channel(store.prefix)
    async with subscribed(client, channel) as pubsub:
        await store.apply_events([state5, usage9])
        assert [Invalidation.decode(await next_message(pubsub)).version for _ in "ab"] == [5, 9]
        # The deletion (version 7) removes the state and the records older than itself, and
        # keeps the usage record committed after it (version 9) and its own version.
        assert await store.apply_events([event(EventKind.DELETED, 3, "ev-t", 7)]) == [
            ApplyResult(1, 0)
        ]
        assert Invalidation.decode(await next_message(pubsub)).version == 7
        # Replayed, or older than the newest deletion: stale and silent.
        for version in (7, 6):
            assert await store.apply_events([event(EventKind.DELETED, 4, "ev-t", version)]) == [
                ApplyResult(0, 1)
            ]
        await client.publish(channel, "marker")
        assert await next_message(pubsub) == "marker"
    held = await client.hgetall(key)
    assert sorted(held) == [b"u:f:api-calls", b"v:deleted", b"v:u:f:api-calls"]
    assert held[b"v:deleted"] == b"7" and held[b"v:u:f:api-calls"] == b"9"
    assert await store.get("ev-t", None) is None  # no state: a miss
    assert 0 < await client.pttl(key) <= 3_600_000
    # Nothing committed before the deletion comes back, state or usage, whatever the order...
    old = event(EventKind.ENTITLEMENTS, 5, "ev-t", 6, snapshot=versioned(demo_snapshot("ev-t"), 6))
    late = event(EventKind.USAGE, 6, "ev-t", 6, feature_id="storage", usage=usage_record(9, 6))
    assert await store.apply_events([old, late]) == [ApplyResult(0, 4), ApplyResult(0, 1)]
    assert await client.hgetall(key) == held
    # ...while a newer state (the customer came back) is written as usual.
    new = event(
        EventKind.ENTITLEMENTS, 7, "ev-t", 10, snapshot=versioned(demo_snapshot("ev-t"), 10, 10)
    )
    assert await store.apply_events([new]) == [ApplyResult(4, 0)]
    got = await store.get("ev-t", None)
    assert got is not None and got.state.version == 10


async def test_ids_ending_like_a_version_field_keep_their_own_records(store: RedisStore) -> None:
    # "x:v" next to "x": with versions under their own prefix, no field serves two records.
    base = versioned(demo_snapshot("cust-ids"), state=1)
    both = base.with_feature_usage("x", usage_record(1, 3)).with_feature_usage(
        "x:v", usage_record(2, 4)
    )
    await store.apply_snapshot(both)
    got = await store.get("cust-ids", None)
    assert got is not None
    assert got.feature_usage["x"] == usage_record(1, 3)
    assert got.feature_usage["x:v"] == usage_record(2, 4)
    # An older record of "x" is stale: its stored version was not overwritten by "x:v"'s value.
    older = usage_record(9, 2)
    assert await store.apply_usage("cust-ids", None, older, feature_id="x") == ApplyResult(0, 1)
    assert await store.apply_usage("cust-ids", None, usage_record(5, 5), feature_id="x:v") == (
        ApplyResult(1, 0)
    )
    got = await store.get("cust-ids", None)
    assert got is not None and got.feature_usage["x"] == usage_record(1, 3)
    assert got.feature_usage["x:v"] == usage_record(5, 5)


async def test_a_deletion_record_without_ttl_never_expires(
    client: Redis, redis_prefix: str
) -> None:
    store = RedisStore(client, prefix=redis_prefix, ttl_seconds=-1)
    await store.apply_events([event(EventKind.DELETED, 1, "ev-forever", 3)])
    key = state_key(redis_prefix, "ev-forever", None)
    assert await client.hgetall(key) == {b"v:deleted": b"3"}
    assert await client.pttl(key) == -1


async def test_malformed_events_are_refused_before_anything_is_written(
    store: RedisStore, client: Redis
) -> None:
    good = event(EventKind.ENTITLEMENTS, 1, "ev-m", 1, snapshot=versioned(demo_snapshot("ev-m"), 1))
    wrong_key = event(EventKind.ENTITLEMENTS, 2, "ev-m", 1, snapshot=demo_snapshot("other"))
    no_usage = event(EventKind.USAGE, 3, "ev-m", 1, feature_id="f")
    for bad in (wrong_key, no_usage):
        with pytest.raises(ValueError, match="event"):
            await store.apply_events([good, bad])
    assert await client.exists(state_key(store.prefix, "ev-m", None)) == 0


async def test_a_write_redis_refuses_for_good_is_reported_alone(
    store: RedisStore, client: Redis
) -> None:
    # A string squatting on a state key: every write to it fails with WRONGTYPE, forever.
    await client.set(state_key(store.prefix, "ev-squat", None), "not a hash")
    writes = [
        snapshot_write(versioned(demo_snapshot("ev-ok1"), state=1)),
        snapshot_write(versioned(demo_snapshot("ev-squat"), state=1)),
        usage_write("ev-ok2", None, usage_record(3, 4), feature_id="api-calls"),
    ]
    with pytest.raises(WritesRejected) as caught:
        await store.apply_writes(writes)
    first, refused, last = caught.value.outcomes
    assert first == ApplyResult(4, 0) and last == ApplyResult(1, 0)
    assert isinstance(refused, CacheRejected) and "WRONGTYPE" in str(refused)
    assert isinstance(caught.value, CacheUnavailable)  # read paths may treat it as an outage
    assert await store.get("ev-ok1", None) is not None
    # One write alone is refused the same way, as CacheRejected rather than an outage.
    with pytest.raises(CacheRejected, match="WRONGTYPE"):
        await store.apply_snapshot(versioned(demo_snapshot("ev-squat"), state=2))
    # Read, the squatted key is corrupt data: a miss, counted, never an error.
    errors = store.decode_errors
    assert await store.get("ev-squat", None) is None
    assert store.decode_errors == errors + 1


# ------------------------------------------------------------------ script cache loss
# On a server of their own: flushing the session server's script cache would disturb other
# suites sharing it.


@pytest.fixture
async def own_client(own_redis: RedisServer) -> AsyncIterator[Redis]:
    connection = Redis(host="127.0.0.1", port=own_redis.port)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
def own_store(own_client: Redis, redis_prefix: str) -> RedisStore:
    return RedisStore(own_client, prefix=redis_prefix, ttl_seconds=3600)


async def test_script_cache_flush_is_transparent(own_store: RedisStore, own_client: Redis) -> None:
    store, client = own_store, own_client
    await client.script_flush()
    demo = versioned(demo_snapshot("cust-f"), state=1)
    assert (await store.apply_snapshot(demo)).applied == 4

    await client.script_flush()
    events = [
        event(EventKind.USAGE, 1, "cust-f", 5, feature_id="api-calls", usage=usage_record(3, 5)),
        event(EventKind.DELETED, 2, "cust-g", 1),
    ]
    assert await store.apply_events(events) == [ApplyResult(1, 0), ApplyResult(0, 0)]
    # The fallback put the scripts back, so the next calls go by SHA again.
    assert await client.script_exists(WRITE_SCRIPT.sha) == [True]

    await client.script_flush()
    assert await store.try_lock("cust-f", None, "tok", 5_000)
    await store.unlock("cust-f", None, "tok")
    assert await store.try_lock("cust-f", None, "tok2", 5_000)
    assert await client.script_exists(UNLOCK_SCRIPT.sha) == [True]


async def test_a_batch_of_many_calls_replays_in_order_after_a_script_flush(
    own_store: RedisStore, own_client: Redis
) -> None:
    store, client = own_store, own_client
    await client.script_flush()
    # More writes than one script call carries, with a key written early, deleted in a later
    # call and then written again: every call answers NOSCRIPT and is re-sent, in order.
    events = [
        event(EventKind.USAGE, n, f"cust-m{n}", n, feature_id="f", usage=usage_record(1, n))
        for n in range(1, WRITES_PER_CALL * 2)
    ]
    first = versioned(demo_snapshot("cust-n"), 1)
    events.insert(0, event(EventKind.ENTITLEMENTS, 0, "cust-n", 1, snapshot=first))
    events.append(event(EventKind.DELETED, 900, "cust-n", 900))
    again = versioned(demo_snapshot("cust-n"), 901, usage=901)
    events.append(event(EventKind.ENTITLEMENTS, 901, "cust-n", 901, snapshot=again))
    results = await store.apply_events(events)
    assert results[0] == ApplyResult(4, 0)
    assert results[1:-2] == [ApplyResult(1, 0)] * (WRITES_PER_CALL * 2 - 1)
    assert results[-2:] == [ApplyResult(1, 0), ApplyResult(4, 0)]
    assert await store.get("cust-n", None) == again
    assert await client.script_exists(WRITE_SCRIPT.sha) == [True]


# ------------------------------------------------------------------ Redis down and back


@pytest.fixture
async def fragile_store(own_redis: RedisServer, redis_prefix: str) -> AsyncIterator[RedisStore]:
    client = fast_failing_client(own_redis.port)
    try:
        yield RedisStore(client, prefix=redis_prefix, ttl_seconds=60)
    finally:
        await client.aclose()


async def every_operation_fails(store: RedisStore) -> None:
    demo = versioned(demo_snapshot("cust-down"), state=1)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get("cust-down", None),
        lambda: store.apply_snapshot(demo),
        lambda: store.apply_usage("cust-down", None, usage_record(1, 1), feature_id="f"),
        lambda: store.apply_events(
            [event(EventKind.ENTITLEMENTS, 1, "cust-down", 1, snapshot=demo)]
        ),
        lambda: store.delete("cust-down", None),
        store.get_epoch,
        lambda: store.set_epoch("e"),
        lambda: store.try_lock("cust-down", None, "t", 1000),
        lambda: store.unlock("cust-down", None, "t"),
        lambda: store.publish_refetch("cust-down", None, "x"),
        store.ping,
    ]
    for call in calls:
        with pytest.raises(CacheUnavailable) as caught:
            await call()
        assert isinstance(caught.value.__cause__, RedisError)
        assert isinstance(caught.value, SourceUnavailable)


async def test_redis_down_raises_cache_unavailable_quickly(
    own_redis: RedisServer, fragile_store: RedisStore
) -> None:
    assert await fragile_store.ping()
    own_redis.kill()
    started = time.monotonic()
    await every_operation_fails(fragile_store)
    # Eleven calls, each refused at connect: far below one socket timeout each.
    assert time.monotonic() - started < 5.0


async def test_store_recovers_after_a_restart_without_being_recreated(
    own_redis: RedisServer, fragile_store: RedisStore
) -> None:
    before = versioned(demo_snapshot("cust-rs"), state=1)
    await fragile_store.apply_snapshot(before)
    assert await fragile_store.try_lock("cust-rs", None, "tok", 60_000)

    own_redis.kill()
    await every_operation_fails(fragile_store)
    own_redis.start()

    # The restarted server lost both the data and its script cache.
    assert await fragile_store.ping()
    assert await fragile_store.get("cust-rs", None) is None
    assert await fragile_store.apply_snapshot(before) == ApplyResult(4, 0)
    assert await fragile_store.get("cust-rs", None) == before

    own_redis.kill()
    own_redis.start()
    events = [
        event(EventKind.ENTITLEMENTS, 1, "cust-rs", 2, snapshot=versioned(before, 2)),
        event(EventKind.USAGE, 2, "cust-rs", 3, feature_id="api-calls", usage=usage_record(5, 3)),
    ]
    assert await fragile_store.apply_events(events) == [ApplyResult(4, 0), ApplyResult(1, 0)]

    own_redis.kill()
    own_redis.start()
    assert await fragile_store.try_lock("cust-rs", None, "tok", 60_000)
    await fragile_store.unlock("cust-rs", None, "tok")
    assert await fragile_store.try_lock("cust-rs", None, "tok-2", 60_000)


async def test_a_hung_redis_times_out_into_cache_unavailable(
    own_redis: RedisServer, fragile_store: RedisStore
) -> None:
    assert await fragile_store.ping()
    process = own_redis.process
    assert process is not None
    # A stopped process still has its socket accepting connections, so every call must end by
    # the socket timeout rather than by a refusal.
    process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        for call in (fragile_store.ping, lambda: fragile_store.get("c", None)):
            with pytest.raises(CacheUnavailable) as caught:
                await call()
            assert isinstance(caught.value.__cause__, RedisError)
        # Two calls, each at most two attempts of a half-second timeout.
        assert time.monotonic() - started < 4.0
    finally:
        process.send_signal(signal.SIGCONT)
    assert await fragile_store.ping()

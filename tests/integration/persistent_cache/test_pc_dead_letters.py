"""Poison entries are parked in the dead-letter stream with a reason, acked, and skipped."""

from __future__ import annotations

import json

from entitlements.redis.keys import change_stream, dead_letter_stream, state_key
from entitlements.redis.store import RedisStore
from persistent_cache.service import PersistentCacheService
from tests.conftest import wait_for
from tests.integration.persistent_cache.pc_support import (
    dead_letters,
    entry,
    event_json,
    legacy_entry,
    redis_client,
    resyncs,
    sample,
    service_settings,
    state_event,
)
from tests.redis_server import RedisServer


async def test_poison_entries_are_dead_lettered_and_consumption_continues(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    stream = change_stream(redis_prefix)
    dead = dead_letter_stream(redis_prefix)
    settings = service_settings(redis_prefix, redis_server, None)
    async with redis_client(redis_server) as events:
        # A cache that is already complete: no resync against the (absent) upstream.
        store = RedisStore(events, prefix=redis_prefix, ttl_seconds=60)
        await store.set_epoch("complete")
        # Someone else's string where a state hash belongs: every write to it fails the same way.
        await events.set(state_key(redis_prefix, "squatted", None), "not a hash")
        truncated = entry(state_event("cut", 3))
        truncated["r0"] = b'{"schemaVersion":1,"customerId":"cut"'
        unlisted = entry(state_event("extra", 3))
        unlisted["r1"] = b"{}"
        poison = {
            await events.xadd(stream, {"seq": "1", "event": "{not json"}): "JSON",
            await events.xadd(
                stream, {"seq": "2", "event": event_json(state_event("x", 1), schemaVersion=99)}
            ): "unsupported schema version 99",
            await events.xadd(stream, {"seq": "3"}): "missing field 'envelope'",
            await events.xadd(stream, entry(state_event("huge", 2**63))): "envelope.version",
            await events.xadd(stream, legacy_entry(state_event("huge", 2**63))): "int64 range",
            await events.xadd(stream, {"seq": "6", "envelope": "[1]"}): "expected an object",
            await events.xadd(stream, truncated): "r0: expected a JSON object",
            await events.xadd(stream, unlisted): "'r1' is not listed",
            await events.xadd(stream, entry(state_event("squatted", 4))): "WRONGTYPE",
        }
        await events.xadd(stream, entry(state_event("good", 5)))
        await events.xadd(stream, legacy_entry(state_event("old-layout", 6)))

        async with PersistentCacheService(settings) as svc:

            async def good_applied() -> bool:
                return (
                    await svc.store.get("good", None) is not None
                    and await svc.store.get("old-layout", None) is not None
                )

            await wait_for(good_applied, what="the valid entries after the poison")
            await wait_for(
                lambda: sample(svc, "persistent_cache_events_dead_lettered_total") == len(poison),
                what="every poison entry parked",
            )
            assert sample(svc, "persistent_cache_events_applied_total") == 2
            assert resyncs(svc) == 0  # the cache was complete: upstream never needed

        letters = await dead_letters(events, dead)
        assert [fields["source_id"] for _, fields in letters] == list(poison)
        for (_, fields), expected in zip(letters, poison.values(), strict=True):
            assert expected in fields["reason"], fields
        # What arrived is kept for inspection: the payload, or every field when it had none.
        assert letters[0][1]["event"] == "{not json"
        assert json.loads(letters[2][1]["event"]) == {"seq": "3"}
        # An envelope entry is parked field for field, ready to be replayed with XADD.
        parked = letters[6][1]
        assert parked["r0"].encode() == truncated["r0"]
        assert parked["envelope"].encode() == truncated["envelope"]
        assert (await events.xpending(stream, "persistent-cache"))["pending"] == 0
        assert await store.get("huge", None) is None
        assert await events.get(state_key(redis_prefix, "squatted", None)) == "not a hash"

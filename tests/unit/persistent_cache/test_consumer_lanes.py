"""The consumer's lanes against an in-memory stream: every entry written and acked, failed
batches re-read by the leader (skipping what other lanes hold), clean stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from entitlements.errors import CacheUnavailable
from entitlements.model.events import ChangeEvent, EventKind, encode_event
from entitlements.model.state import UsageRecord
from entitlements.redis.hash_writes import HashWrite
from entitlements.redis.store import ApplyResult
from entitlements.redis.stream_entry import encode_entry
from persistent_cache.consumer import Consumer
from persistent_cache.metrics import Metrics
from persistent_cache.source import Claimed, Delivery, GroupStatus
from tests.conftest import wait_for

AT = datetime(2026, 6, 1, tzinfo=UTC)


def entry(n: int) -> dict[str, bytes]:
    record = UsageRecord(float(n), AT, AT, AT, n)
    event = ChangeEvent(EventKind.USAGE, n, f"c{n}", None, n, AT, feature_id="f", usage=record)
    fields = encode_entry(n, encode_event(event))
    return {k: v.encode() if isinstance(v, str) else v for k, v in fields.items()}


class Stream:
    """One consumer's view of a consumer group: new entries, its pending list, acks."""

    def __init__(self, count: int, batch: int) -> None:
        self.entries = {f"{n}-0": entry(n) for n in range(1, count + 1)}
        self.order = list(self.entries)
        self.next = 0
        self.pending: dict[str, dict[str, bytes]] = {}
        self.acks: dict[str, int] = {}
        self.batch = batch
        self.own_reads = 0

    def _id_key(self, entry_id: str) -> int:
        return int(entry_id.split("-")[0])

    async def prepare(self) -> None:
        return None

    async def read(self) -> list[Delivery]:
        if self.next >= len(self.order):
            await asyncio.sleep(0)  # the real read blocks up to BLOCK_MS; nothing to wait for
            return []
        ids = self.order[self.next : self.next + self.batch]
        self.next += len(ids)
        for i in ids:
            self.pending[i] = self.entries[i]
        return [Delivery(i, self.entries[i]) for i in ids]

    async def read_own_pending(self, after: str = "0") -> list[Delivery]:
        self.own_reads += 1
        floor = self._id_key(after) if after != "0" else 0
        ids = sorted((i for i in self.pending if self._id_key(i) > floor), key=self._id_key)
        return [Delivery(i, self.pending[i]) for i in ids[: self.batch]]

    async def claim(self) -> Claimed:
        return Claimed([], more=False)

    async def ack(self, ids: Sequence[str]) -> None:
        for i in ids:
            self.pending.pop(i, None)
            self.acks[i] = self.acks.get(i, 0) + 1

    async def dead_letter(self, letters: Sequence[tuple[Delivery, str]]) -> None:
        raise AssertionError(f"nothing here is poison: {letters}")

    async def status(self) -> GroupStatus:
        return GroupStatus(len(self.order), len(self.order), self.next, 0, len(self.pending))

    async def prune_consumers(self, idle_ms: int) -> int:
        return 0

    def take_group_lost(self) -> bool:
        return False


class Writer:
    """Records what was written; fails the calls it is told to fail."""

    def __init__(self, fail_calls: set[int]) -> None:
        self.calls = 0
        self.fail_calls = fail_calls
        self.written: dict[str, int] = {}
        self.in_progress = 0
        self.most_at_once = 0

    async def apply_writes(self, writes: Sequence[HashWrite]) -> list[ApplyResult]:
        self.calls += 1
        call = self.calls
        self.in_progress += 1
        self.most_at_once = max(self.most_at_once, self.in_progress)
        try:
            await asyncio.sleep(0)  # a round trip: lets the other lanes run meanwhile
            if call in self.fail_calls:
                raise CacheUnavailable("injected")
            for write in writes:
                self.written[write.customer_id] = self.written.get(write.customer_id, 0) + 1
            return [ApplyResult(1, 0) for _ in writes]
        finally:
            self.in_progress -= 1



async def run_until_drained(stream: Stream, writer: Writer, lanes: int) -> Consumer:
    consumer = Consumer(
        stream,
        writer,
        Metrics(),
        claim_interval=3600,
        on_loss=lambda reason: None,
        lanes=lanes,
    )
    task = asyncio.ensure_future(consumer.run())
    try:
        await wait_for(
            lambda: len(stream.acks) == len(stream.order) and not stream.pending,
            timeout=10,
            what="every entry acked",
        )
    finally:
        consumer.request_stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 5)
    assert task.done() and task.exception() is None
    return consumer


@pytest.mark.parametrize("lanes", [1, 4])
async def test_every_entry_is_written_and_acked(lanes: int) -> None:
    stream, writer = Stream(500, batch=10), Writer(set())
    await run_until_drained(stream, writer, lanes)
    assert set(writer.written) == {f"c{n}" for n in range(1, 501)}
    assert all(count == 1 for count in writer.written.values())
    assert all(count == 1 for count in stream.acks.values())
    if lanes > 1:
        assert writer.most_at_once > 1, "batches must overlap"


async def test_a_failed_batch_is_re_read_and_written_without_doubling_other_lanes() -> None:
    stream, writer = Stream(500, batch=10), Writer({3, 9, 10})
    consumer = await run_until_drained(stream, writer, 4)
    assert set(writer.written) == {f"c{n}" for n in range(1, 501)}
    # Only entries of the failed batches may be written twice (the retry may race a rerun);
    # entries other lanes were writing when the leader re-read are skipped, not doubled.
    assert sum(writer.written.values()) <= 500 + 3 * 10
    assert stream.own_reads >= 2  # at start, and again after the failures
    assert consumer.running is False


async def test_stop_lets_every_lane_finish_its_batch() -> None:
    stream, writer = Stream(40, batch=10), Writer(set())
    consumer = Consumer(
        stream,
        writer,
        Metrics(),
        claim_interval=3600,
        on_loss=lambda reason: None,
        lanes=4,
    )
    task = asyncio.ensure_future(consumer.run())
    await wait_for(lambda: writer.calls >= 1, what="a first write")
    consumer.request_stop()
    await asyncio.wait_for(task, 5)
    # Whatever was read was written and acked: nothing left pending.
    assert not stream.pending
    assert set(stream.acks) == {i for i in stream.order[: stream.next]}


def test_a_consumer_needs_a_lane() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        Consumer(
            Stream(1, 1),
            Writer(set()),
            Metrics(),
            claim_interval=1,
            on_loss=lambda reason: None,
            lanes=0,
        )


def leader_of(stream: Stream, writer: Writer) -> Consumer:
    return Consumer(
        stream,
        writer,
        Metrics(),
        claim_interval=3600,
        on_loss=lambda reason: None,
        lanes=4,
    )


async def test_re_reading_pending_entries_skips_those_another_lane_is_writing() -> None:
    stream, writer = Stream(20, batch=10), Writer(set())
    delivered = await stream.read()  # 10 entries now pending on this consumer
    consumer = leader_of(stream, writer)
    busy = [d.id for d in delivered[:4]]
    consumer._in_flight.update(busy)  # another lane holds these right now
    await consumer._step()
    rewritten = {f"c{n}" for n in range(5, 11)}
    assert rewritten <= set(writer.written)
    assert not {f"c{n}" for n in range(1, 5)} & set(writer.written)
    assert sorted(stream.pending, key=stream._id_key) == busy


async def test_a_lane_failing_during_the_re_read_makes_the_leader_read_again() -> None:
    stream, writer = Stream(20, batch=10), Writer(set())
    await stream.read()
    consumer = leader_of(stream, writer)
    original = writer.apply_writes

    async def failing_elsewhere(writes: Sequence[HashWrite]) -> list[ApplyResult]:
        consumer._needs_own_pending()  # another lane's batch failed meanwhile
        writer.apply_writes = original  # type: ignore[method-assign]
        return await original(writes)

    writer.apply_writes = failing_elsewhere  # type: ignore[method-assign]
    await consumer._step()
    # The failed lane's entries may sit behind the cursor: the re-read is not done.
    assert re_read_state(consumer) == (True, False)
    await consumer._step()
    assert re_read_state(consumer) == (False, True)


def re_read_state(consumer: Consumer) -> tuple[bool, bool]:
    """(own pending entries still to re-read, extra lanes allowed to read)."""
    return consumer._own_pending, consumer._steady.is_set()

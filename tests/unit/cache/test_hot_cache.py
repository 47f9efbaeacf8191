from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sidecar.cache.hot_cache import ENTRY_OVERHEAD_BYTES, CacheStats, HotCache, Key, key_overhead

OH = ENTRY_OVERHEAD_BYTES
T = TypeVar("T")


def charge(key: Key, size: int) -> int:
    """Independent restatement of the charging rule, so the tests don't just
    echo the implementation's own helper back at it."""
    customer_id, resource_id = key
    text = len(customer_id.encode("utf-8"))
    if resource_id is not None:
        text += len(resource_id.encode("utf-8"))
    return size + text + OH


def lru_order(cache: HotCache[T]) -> list[Key]:
    # White-box: the public API can only observe order destructively (via
    # eviction), and asserting it directly gives far clearer failures.
    return list(cache._entries)


# --- key_overhead -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (("c", None), 1 + OH),
        (("cust", "res"), 7 + OH),
        (("", ""), OH),
        (("ç", None), 2 + OH),  # non-ASCII: UTF-8 bytes, not code points
        (("客户", "资源"), 12 + OH),
        (("a", "😀"), 5 + OH),
    ],
)
def test_key_overhead_counts_utf8_bytes(key: Key, expected: int) -> None:
    assert key_overhead(key) == expected == charge(key, 0)


# --- construction -----------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_rejects_non_positive_max_bytes(max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        HotCache[object](max_bytes)


def test_rejects_negative_size() -> None:
    cache = HotCache[str](10_000)
    with pytest.raises(ValueError, match="size"):
        cache.put(("c", None), "v", -1)
    assert len(cache) == 0
    assert cache.bytes_used == 0


def test_empty_cache() -> None:
    cache = HotCache[str](1234)
    assert cache.max_bytes == 1234
    assert cache.bytes_used == 0
    assert len(cache) == 0
    assert ("c", None) not in cache
    assert cache.stats == CacheStats()


# --- LRU order --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "expected_order"),
    [
        # Plain inserts append at MRU.
        ([("put", "a"), ("put", "b"), ("put", "c")], ["a", "b", "c"]),
        # A hit moves the entry to MRU.
        ([("put", "a"), ("put", "b"), ("put", "c"), ("get", "a")], ["b", "c", "a"]),
        # A miss changes nothing.
        ([("put", "a"), ("put", "b"), ("get", "z")], ["a", "b"]),
        # Re-putting an existing key counts as use.
        ([("put", "a"), ("put", "b"), ("put", "c"), ("put", "a")], ["b", "c", "a"]),
        # Membership tests and peeks are not use.
        ([("put", "a"), ("put", "b"), ("contains", "a")], ["a", "b"]),
        ([("put", "a"), ("put", "b"), ("peek", "a")], ["a", "b"]),
        ([("put", "a"), ("put", "b"), ("put", "c"), ("invalidate", "b")], ["a", "c"]),
    ],
)
def test_lru_order(ops: list[tuple[str, str]], expected_order: list[str]) -> None:
    cache = HotCache[str](1_000_000)
    for op, name in ops:
        key: Key = (name, None)
        if op == "put":
            cache.put(key, name, 10)
        elif op == "get":
            cache.get(key)
        elif op == "contains":
            assert key in cache
        elif op == "peek":
            assert cache.peek(key) == name
        elif op == "invalidate":
            assert cache.invalidate(key)
    assert lru_order(cache) == [(n, None) for n in expected_order]


# --- eviction by bytes --------------------------------------------------------


def test_evicts_least_recently_used_until_within_budget() -> None:
    per_entry = charge(("a", None), 100)
    cache = HotCache[str](per_entry * 3)
    for name in "abc":
        cache.put((name, None), name, 100)
    assert cache.bytes_used == per_entry * 3  # exactly at the limit: no eviction
    assert cache.stats.evictions == 0

    cache.get(("a", None))  # b is now LRU
    cache.put(("d", None), "d", 100)

    assert lru_order(cache) == [("c", None), ("a", None), ("d", None)]
    assert cache.bytes_used == per_entry * 3
    assert cache.stats.evictions == 1
    assert cache.get(("b", None)) is None


def test_one_large_put_evicts_several_entries() -> None:
    small = charge(("a", None), 0)
    cache = HotCache[str](small * 4)
    for name in "abcd":
        cache.put((name, None), name, 0)

    # Charged just under three small entries, so exactly three must go.
    cache.put(("e", None), "e", small * 2 - 1)

    assert lru_order(cache) == [("d", None), ("e", None)]
    assert cache.stats.evictions == 3
    assert cache.bytes_used == small + charge(("e", None), small * 2 - 1)


def test_entry_exactly_max_bytes_is_stored_and_evicts_everything_else() -> None:
    key: Key = ("big", "r")
    limit = charge(key, 1000)
    cache = HotCache[str](limit)
    cache.put(("a", None), "a", 0)
    cache.put(key, "big", 1000)
    assert lru_order(cache) == [key]
    assert cache.bytes_used == limit
    assert cache.stats.evictions == 1
    assert cache.stats.rejections == 0


# --- replacement accounting --------------------------------------------------


@pytest.mark.parametrize(("old_size", "new_size"), [(100, 300), (300, 100), (50, 50), (0, 0)])
def test_replacement_adjusts_accounting_exactly(old_size: int, new_size: int) -> None:
    cache = HotCache[str](1_000_000)
    other: Key = ("other", None)
    key: Key = ("cust", "res")
    cache.put(other, "o", 10)
    cache.put(key, "old", old_size)
    cache.put(key, "new", new_size)

    assert len(cache) == 2
    assert cache.bytes_used == charge(other, 10) + charge(key, new_size)
    assert cache.get(key) == "new"


def test_growing_replacement_evicts_others_but_not_itself() -> None:
    a: Key = ("a", None)
    b: Key = ("b", None)
    cache = HotCache[str](charge(a, 0) + charge(b, 0) + 10)
    cache.put(a, "a", 0)
    cache.put(b, "b", 0)
    cache.put(b, "b2", 11)  # one byte over: a must go
    assert lru_order(cache) == [b]
    assert cache.bytes_used == charge(b, 11)
    assert cache.stats.evictions == 1


def test_replacing_lru_entry_makes_it_mru() -> None:
    a: Key = ("a", None)
    b: Key = ("b", None)
    c: Key = ("c", None)
    cache = HotCache[str](charge(a, 0) * 2)
    cache.put(a, "a", 0)
    cache.put(b, "b", 0)
    cache.put(a, "a2", 0)
    cache.put(c, "c", 0)
    assert lru_order(cache) == [a, c]


# --- oversize rejection -------------------------------------------------------


def test_oversize_entry_is_rejected_without_disturbing_others() -> None:
    a: Key = ("a", None)
    cache = HotCache[str](charge(a, 0) * 2)
    cache.put(a, "a", 0)
    cache.put(("huge", None), "x", cache.max_bytes)

    assert ("huge", None) not in cache
    assert lru_order(cache) == [a]
    assert cache.bytes_used == charge(a, 0)
    assert cache.stats.rejections == 1
    assert cache.stats.evictions == 0


def test_oversize_replacement_removes_previous_value() -> None:
    key: Key = ("c", "r")
    other: Key = ("c", None)
    cache = HotCache[str](10_000)
    cache.put(key, "old", 10)
    cache.put(other, "g", 10)
    cache.put(key, "new-but-huge", 10_000)

    assert key not in cache
    assert cache.get(key) is None
    assert cache.bytes_used == charge(other, 10)
    assert cache.stats.rejections == 1
    # The index must have forgotten the resource, or invalidate_customer would
    # try to drop an entry that is no longer there.
    assert cache.invalidate_customer("c") == 1
    assert cache.bytes_used == 0


def test_key_overhead_alone_can_cause_rejection() -> None:
    cache = HotCache[str](OH + 3)
    cache.put(("abcd", None), "v", 0)
    assert len(cache) == 0
    assert cache.stats.rejections == 1
    cache.put(("abc", None), "v", 0)
    assert len(cache) == 1


# --- invalidation -------------------------------------------------------------


def test_invalidate() -> None:
    key: Key = ("c", "r")
    cache = HotCache[str](10_000)
    cache.put(key, "v", 5)
    assert cache.invalidate(key) is True
    assert cache.invalidate(key) is False
    assert cache.bytes_used == 0
    assert len(cache) == 0


def test_invalidate_customer_drops_global_and_resource_entries_only_for_that_customer() -> None:
    cache = HotCache[str](1_000_000)
    mine: list[Key] = [("c1", None), ("c1", "r1"), ("c1", "r2")]
    theirs: list[Key] = [("c2", None), ("c2", "r1"), ("c10", "r1")]
    for key in [*mine, *theirs]:
        cache.put(key, "v", 7)

    assert cache.invalidate_customer("c1") == 3
    assert lru_order(cache) == theirs
    assert cache.bytes_used == sum(charge(k, 7) for k in theirs)
    assert cache.invalidate_customer("c1") == 0
    assert cache.invalidate_customer("never-seen") == 0


def test_invalidate_customer_after_partial_eviction_and_invalidation() -> None:
    per_entry = charge(("c1", "r1"), 0)
    cache = HotCache[str](per_entry * 3)
    cache.put(("c1", "r1"), "v", 0)
    cache.put(("c1", "r2"), "v", 0)
    cache.put(("c1", "r3"), "v", 0)
    cache.put(("c2", "r1"), "v", 0)  # evicts c1/r1
    assert cache.invalidate(("c1", "r2"))

    assert cache.invalidate_customer("c1") == 1
    assert lru_order(cache) == [("c2", "r1")]
    assert cache.bytes_used == per_entry


def test_invalidate_customer_uses_index_not_scan() -> None:
    cache = HotCache[str](1_000_000)
    cache.put(("c1", "r1"), "v", 0)
    cache.put(("c2", "r1"), "v", 0)
    # If invalidate_customer scanned the cache it would find c2's entry; via
    # the index it only sees what the index lists, which proves the lookup path.
    cache._index.pop("c2")
    assert cache.invalidate_customer("c2") == 0
    assert ("c2", "r1") in cache


def test_clear_keeps_stats() -> None:
    cache = HotCache[str](1_000_000)
    cache.put(("c", None), "v", 1)
    cache.get(("c", None))
    cache.get(("x", None))
    cache.clear()
    assert len(cache) == 0
    assert cache.bytes_used == 0
    assert cache.invalidate_customer("c") == 0
    assert cache.stats == CacheStats(hits=1, misses=1)


# --- stats ----------------------------------------------------------------------


def test_stats_counts() -> None:
    a: Key = ("a", None)
    b: Key = ("b", None)
    c: Key = ("c", None)
    cache = HotCache[str](charge(a, 0) * 2)
    stats = cache.stats

    cache.put(a, "a", 0)
    cache.put(b, "b", 0)
    assert cache.get(a) == "a"
    assert cache.get(a) == "a"
    assert cache.get(c) is None
    cache.put(c, "c", 0)  # evicts b
    cache.put(("big", None), "x", cache.max_bytes)  # rejected
    assert a in cache  # not a hit
    assert cache.peek(a) == "a"  # not a hit
    assert cache.peek(("zz", None)) is None  # not a miss
    assert ("zz", None) not in cache  # not a miss
    cache.invalidate(a)  # not an eviction

    # Same object throughout: the metrics collector holds a reference to it.
    assert cache.stats is stats
    assert stats == CacheStats(hits=2, misses=1, evictions=1, rejections=1)


def test_falsy_values_are_hits() -> None:
    cache = HotCache[int](10_000)
    cache.put(("c", None), 0, 0)
    assert cache.get(("c", None)) == 0
    assert cache.stats.hits == 1


# --- stateful model check ------------------------------------------------------------

customers = st.sampled_from(["c1", "c2", "ç3", "客户"])
resources = st.sampled_from([None, "r1", "r2", "资源"])
keys = st.tuples(customers, resources)


@dataclass
class Model:
    """Naive reference: a list in LRU->MRU order, totals recomputed on demand."""

    max_bytes: int
    items: list[tuple[Key, int, int]] = field(default_factory=list)  # key, value, charge
    stats: CacheStats = field(default_factory=CacheStats)

    def find(self, key: Key) -> int | None:
        for i, (k, _, _) in enumerate(self.items):
            if k == key:
                return i
        return None

    def total(self) -> int:
        return sum(c for _, _, c in self.items)


class HotCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache: HotCache[int] = HotCache(1)
        self.model = Model(1)
        self.counter = 0

    # Budgets from "fits barely one entry" to "fits several", so rejection,
    # eviction and the no-eviction path are all reachable.
    @initialize(max_bytes=st.integers(min_value=OH, max_value=OH * 8))
    def init(self, max_bytes: int) -> None:
        self.cache = HotCache(max_bytes)
        self.model = Model(max_bytes)

    # Mostly small values so several entries coexist and recency matters;
    # sometimes large ones to force multi-entry evictions and rejections.
    @rule(key=keys, size=st.one_of(st.integers(0, 64), st.integers(0, OH * 3)))
    def put(self, key: Key, size: int) -> None:
        # Unique values so a stale value served after replacement is caught.
        self.counter += 1
        value = self.counter
        self.cache.put(key, value, size)

        m = self.model
        c = charge(key, size)
        i = m.find(key)
        if i is not None:
            del m.items[i]
        if c > m.max_bytes:
            m.stats.rejections += 1
            return
        m.items.append((key, value, c))
        while m.total() > m.max_bytes:
            m.items.pop(0)
            m.stats.evictions += 1

    @rule(key=keys)
    def get(self, key: Key) -> None:
        got = self.cache.get(key)
        m = self.model
        i = m.find(key)
        if i is None:
            m.stats.misses += 1
            assert got is None
        else:
            m.stats.hits += 1
            item = m.items.pop(i)
            m.items.append(item)
            assert got == item[1]

    @rule(key=keys)
    def contains(self, key: Key) -> None:
        assert (key in self.cache) == (self.model.find(key) is not None)

    @rule(key=keys)
    def peek(self, key: Key) -> None:
        i = self.model.find(key)
        assert self.cache.peek(key) == (None if i is None else self.model.items[i][1])

    @rule(key=keys)
    def invalidate(self, key: Key) -> None:
        removed = self.cache.invalidate(key)
        i = self.model.find(key)
        assert removed == (i is not None)
        if i is not None:
            del self.model.items[i]

    @rule(customer=customers)
    def invalidate_customer(self, customer: str) -> None:
        removed = self.cache.invalidate_customer(customer)
        before = len(self.model.items)
        self.model.items = [it for it in self.model.items if it[0][0] != customer]
        assert removed == before - len(self.model.items)

    # Rules are picked uniformly, so an unconditional clear would wipe the
    # state every few steps and starve the LRU/eviction paths.
    @rule(roll=st.integers(0, 9))
    def clear(self, roll: int) -> None:
        if roll != 0:
            return
        self.cache.clear()
        self.model.items.clear()

    @invariant()
    def accounting_matches_model(self) -> None:
        assert self.cache.bytes_used == self.model.total()
        assert self.cache.bytes_used <= self.cache.max_bytes
        assert len(self.cache) == len(self.model.items)

    @invariant()
    def lru_order_matches_model(self) -> None:
        assert list(self.cache._entries) == [k for k, _, _ in self.model.items]
        assert [e.charge for e in self.cache._entries.values()] == [
            c for _, _, c in self.model.items
        ]

    @invariant()
    def index_matches_entries(self) -> None:
        expected: dict[str, set[str | None]] = {}
        for (customer, resource), _, _ in self.model.items:
            expected.setdefault(customer, set()).add(resource)
        assert self.cache._index == expected

    @invariant()
    def stats_match_model(self) -> None:
        assert self.cache.stats == self.model.stats


HotCacheMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None
)
TestHotCacheStateful = HotCacheMachine.TestCase

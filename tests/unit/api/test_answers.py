"""Answers written as bytes (sidecar/api/answers.py) equal the reference path's, byte for byte.

The reference: ``sidecar.evaluation.getters`` -> ``sidecar.api.convert`` -> ``SerializeToString``,
as the servicer built every answer before. Snapshots, instants and requests are generated, and
the plans kept per entitlement state are exercised the way reads use them: one ``Answers`` for a
run of snapshots that share a state but carry other usage, asked at other instants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import sidecar.api.answers as answers_module
from entitlements.model.state import (
    CreditEntitlement,
    CreditRate,
    Currency,
    CustomerSnapshot,
    DenialReason,
    EntitlementState,
    Feature,
    FeatureEntitlement,
    FeatureType,
    MeterType,
    ResetPeriod,
    UsageRecord,
)
from sidecar.api import convert
from sidecar.api.answers import Answers
from sidecar.evaluation.getters import Kind, entitlement_list, typed_entitlement
from sidecar.evaluation.rules import effective_usage, stable_until
from sidecar.pb import sidecar_pb2 as pb
from tests.builders import NOW, boolean, credit_backed, metered, snapshot, usage, wallet

# A run is a whole state with several snapshots: generating one is slow by design, and slower
# still on a loaded machine, where the too_slow health check would fail the test for it.
SETTINGS = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Instants within a few years of NOW, in UTC and (less often) in another zone; a few of them
# recur, so that equal instants in different zones meet in one run (a sub-second offset: their
# microseconds differ, so do their encodings).
instants = st.sampled_from([NOW, NOW + timedelta(days=30), NOW - timedelta(days=1)]) | st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2032, 12, 31)
).map(lambda d: d.replace(tzinfo=UTC))
zoned = st.one_of(
    instants,
    instants.map(
        lambda d: d.astimezone(timezone(timedelta(hours=5, minutes=30, microseconds=250_000)))
    ),
)
texts = st.text(min_size=0, max_size=6)
maybe_text = st.none() | texts
limits = st.none() | st.sampled_from([0.0, -0.0, 1.0, 5.5, 1e12, -3.0]) | st.floats(-1e6, 1e6)
usages = st.sampled_from([0.0, -0.0, 1.0, 7.0, 1e9]) | st.floats(-1e3, 1e7)
reasons = st.none() | st.sampled_from(list(DenialReason))
currencies = st.sampled_from(["ai", "gpu"])
rates = st.builds(
    CreditRate, st.sampled_from([0.5, 2.0, 0.0, -0.0, 1e9]) | st.floats(-10, 10), currencies
)
# A currency's metadata is JSON as upstream sent it, written as a protobuf Struct: a map, whose
# entries deterministic serialization sorts by key (empty, upper- and lower-case, non-ASCII and
# prefix keys here), with nested structs, lists and every kind of value.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([0, 0.0, -0.0, 2.0, -7, 1e300])
    | st.floats(allow_nan=False)
    | st.integers(-(2**53), 2**53)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
metadata: st.SearchStrategy[dict[str, Any] | None] = (
    st.none()
    | st.just({"tier": "gold", "n": 2.0})
    | st.just({})
    | st.dictionaries(
        st.sampled_from(["", "a", "B", "b", "ab", "é", "z", "ü", "n"]) | texts,
        json_values,
        max_size=5,
    )
)


@st.composite
def features(draw: st.DrawFn, feature_id: str) -> FeatureEntitlement:
    feature_type = draw(st.sampled_from(list(FeatureType)))
    meter = draw(st.sampled_from(list(MeterType)))
    reset = draw(st.none() | st.sampled_from(list(ResetPeriod)))
    return FeatureEntitlement(
        feature=Feature(
            feature_id,
            feature_type,
            meter,
            units=draw(maybe_text),
            units_plural=draw(maybe_text),
            display_name=draw(maybe_text),
        ),
        usage_limit=draw(limits),
        unlimited=draw(st.booleans()),
        soft_limit=draw(st.booleans()),
        denial_reason=draw(st.none() | st.none() | reasons),
        enum_values=tuple(draw(st.lists(texts, max_size=3))),
        reset_period=reset,
        usage_period_anchor=draw(st.none() | zoned),
        credit_rate=draw(st.none() | st.none() | rates),
        valid_until=None,
    )


@st.composite
def credit_backed_features(draw: st.DrawFn, feature_id: str) -> FeatureEntitlement:
    """A metered feature burning credits (what ``features`` draws only now and then)."""
    entitlement = draw(features(feature_id))
    meter = draw(st.sampled_from([MeterType.INCREMENTAL, MeterType.FLUCTUATING]))
    return dataclasses.replace(
        entitlement,
        feature=dataclasses.replace(
            entitlement.feature, feature_type=FeatureType.NUMBER, meter_type=meter
        ),
        # Usually no unit limit of its own; when there is one it applies on top of the wallet.
        usage_limit=draw(st.none() | st.none() | limits),
        denial_reason=draw(st.none() | st.none() | st.none() | reasons),
        credit_rate=draw(rates),
    )


@st.composite
def records(draw: st.DrawFn) -> UsageRecord:
    start = draw(st.none() | zoned)
    end = draw(st.none() | (zoned if start is None else st.just(start + timedelta(days=30))))
    return UsageRecord(draw(usages), start, end, updated_at=None, version=draw(st.integers(0, 9)))


@st.composite
def states(draw: st.DrawFn) -> EntitlementState:
    ids = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "ü", ""]), unique=True))
    credits = {
        cid: CreditEntitlement(
            Currency(
                cid,
                draw(texts),
                description=draw(maybe_text),
                unit_singular=draw(maybe_text),
                unit_plural=draw(maybe_text),
                metadata=draw(metadata),
            ),
            granted=draw(usages),
            soft_limit=draw(st.booleans()),
            denial_reason=draw(st.none() | reasons),
        )
        for cid in draw(st.lists(currencies, unique=True, max_size=2))
    }
    entitlements = {fid: draw(features(fid)) for fid in ids}
    # Credit-backed features among the others, their wallets there or not.
    for fid in draw(st.lists(st.sampled_from(["k", "l"]), unique=True, max_size=2)):
        entitlements[fid] = draw(credit_backed_features(fid))
    return EntitlementState(
        customer_id="c",
        denial_reason=draw(st.none() | st.none() | reasons),
        features=entitlements,
        credits=credits,
    )


@st.composite
def usage_of(draw: st.DrawFn, state: EntitlementState) -> CustomerSnapshot:
    """A snapshot of ``state`` with generated usage (and the very same state object)."""
    feature_usage = {fid: draw(records()) for fid in state.features if draw(st.integers(0, 3)) > 0}
    credit_usage = {cid: draw(records()) for cid in state.credits if draw(st.booleans())}
    return CustomerSnapshot(state, feature_usage, credit_usage)


@st.composite
def runs(draw: st.DrawFn) -> list[tuple[CustomerSnapshot, datetime, float]]:
    """Reads of one state: its usage changing and the clock moving between them."""
    state = draw(states())
    return [
        (draw(usage_of(state)), draw(zoned), draw(usages)) for _ in range(draw(st.integers(1, 4)))
    ]


def reference_list(snap: CustomerSnapshot, now: datetime, v2: bool) -> bytes:
    result = entitlement_list(snap, now, include_credits=v2, global_fallbacks={})
    message = convert.list_v2(result) if v2 else convert.list_v1(result)
    return message.SerializeToString(deterministic=True)


def reference_metered(
    snap: CustomerSnapshot, feature_id: str, now: datetime, requested: float
) -> tuple[bytes, tuple[bool, bool, DenialReason | None]]:
    result = typed_entitlement(
        snap, Kind.METERED, feature_id, now, requested_usage=requested, global_fallbacks={}
    )
    message = pb.GetMeteredEntitlementResponse(
        **convert.header(result), requested_usage=requested, entitlement=convert.metered(result)
    )
    return message.SerializeToString(deterministic=True), (
        result.is_fallback,
        result.has_access,
        result.reason,
    )


def reference_stable_until(snap: CustomerSnapshot, now: datetime) -> datetime | None:
    """stable_until as first written: the earliest effective period end of a metered feature."""
    ends = [
        effective_usage(ent, snap.feature_usage.get(fid), now).period_end
        for fid, ent in snap.state.features.items()
        if ent.feature.is_metered
    ]
    return min((end for end in ends if end is not None), default=None)


def check_run(answers: Answers, run: Sequence[tuple[CustomerSnapshot, datetime, float]]) -> None:
    for snap, now, requested in run:
        # Every memoized answer lives until this instant; it is computed per new snapshot.
        assert stable_until(snap, now) == reference_stable_until(snap, now)
        for v2 in (True, False):
            assert answers.entitlement_list(snap, now, v2=v2) == reference_list(snap, now, v2)
        for feature_id, entitlement in snap.state.features.items():
            fast = answers.metered(snap, feature_id, now, requested)
            if fast is None:
                # Left to the reference path: another type (a type mismatch, answered with a
                # fallback). Credit-backed features are answered here too.
                assert not entitlement.feature.is_metered
                continue
            assert fast == reference_metered(snap, feature_id, now, requested)
        assert answers.metered(snap, "missing", now, requested) is None


@SETTINGS
@given(runs())
def test_answers_equal_the_reference_path(
    run: list[tuple[CustomerSnapshot, datetime, float]],
) -> None:
    check_run(Answers(), run)


@SETTINGS
@given(runs())
def test_without_plans_answers_are_the_same(
    run: list[tuple[CustomerSnapshot, datetime, float]],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(answers_module, "MAX_PLANS", 0)
        answers = Answers()
        check_run(answers, run)
        assert not answers._plans


def _sharing(
    run: list[tuple[CustomerSnapshot, datetime, float]], reason: DenialReason | None
) -> list[tuple[CustomerSnapshot, datetime, float]]:
    """The run again, each snapshot a new state of another customer holding the very same
    entitlement objects (as decoders share them between customers on one plan)."""
    return [
        (
            dataclasses.replace(
                snap,
                state=dataclasses.replace(
                    snap.state, customer_id=snap.state.customer_id + "-other", denial_reason=reason
                ),
            ),
            now,
            requested,
        )
        for snap, now, requested in run
    ]


@SETTINGS
@given(runs(), st.none() | st.sampled_from(list(DenialReason)))
def test_states_sharing_entitlements_get_their_own_answers(
    run: list[tuple[CustomerSnapshot, datetime, float]], reason: DenialReason | None
) -> None:
    answers = Answers()
    check_run(answers, run)
    check_run(answers, _sharing(run, reason))


@SETTINGS
@given(runs())
def test_without_shared_feature_plans_answers_are_the_same(
    run: list[tuple[CustomerSnapshot, datetime, float]],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(answers_module, "MAX_COMPILED", 0)
        answers = Answers()
        check_run(answers, run)
        check_run(answers, _sharing(run, None))
        assert not answers._compiled._plans


def test_shared_feature_plans_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers_module, "MAX_COMPILED", 4)
    answers = Answers()
    snaps = [snapshot(f"c{i}", metered("api", 10 + i), boolean("sso")) for i in range(10)]
    for snap in snaps:
        answers.entitlement_list(snap, NOW, v2=True)
    assert len(answers._compiled._plans) == 4


def test_a_new_state_with_shared_entitlements_reuses_their_plans() -> None:
    answers = Answers()
    first = snapshot("a", metered("api", 10), boolean("sso"))
    answers.entitlement_list(first, NOW, v2=True)
    second = dataclasses.replace(first, state=dataclasses.replace(first.state, customer_id="b"))
    answers.entitlement_list(second, NOW, v2=True)
    plans = [answers._plans[id(snap.state)] for snap in (first, second)]
    assert plans[0] is not plans[1]
    for feature_id in ("api", "sso"):
        assert plans[0].features[feature_id] is plans[1].features[feature_id]


def test_a_plan_follows_its_state_through_usage_changes_and_period_ends() -> None:
    """One state, read again after its usage changed and after its period ended."""
    answers = Answers()
    end = NOW + timedelta(days=1)
    first = snapshot(
        "c", metered("api", 10), boolean("sso"), feature_usage={"api": usage(7, end=end)}
    )
    later = first.with_feature_usage("api", UsageRecord(10, NOW, end, version=5))
    reads = [
        (first, NOW, 3.0),
        (later, NOW, 1.0),  # new usage, same state: the plan is reused
        (later, end, 1.0),  # the period ended: usage rolls over to zero in the next one
        (later, end + timedelta(days=40), 1.0),  # and again, a period later
        (first, NOW, 4.0),
    ]
    check_run(answers, reads)
    after_end = pb.GetMeteredEntitlementResponse.FromString(
        answers.metered(later, "api", end, 1.0)[0]  # type: ignore[index]
    )
    assert after_end.has_access and after_end.entitlement.current_usage == 0


def test_plans_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers_module, "MAX_PLANS", 3)
    answers = Answers()
    snaps = [snapshot(f"c{i}", metered("api", 10)) for i in range(10)]
    for snap in snaps:
        answers.entitlement_list(snap, NOW, v2=True)
    assert len(answers._plans) == 3
    # The newest are kept, each with the very state it was built from.
    assert [plan.state for plan in answers._plans.values()] == [s.state for s in snaps[-3:]]


def test_a_wallet_and_a_credit_backed_feature_are_written_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once their plans are built, neither reaches the reference path's results or messages."""
    snap = snapshot(
        "c",
        credit_backed("gen", "ai", 2.0),
        boolean("sso"),
        credits=(wallet("ai", 100),),
        credit_usage={"ai": usage(40)},
        feature_usage={"gen": usage(3)},
    )
    spent = snap.with_credit_usage("ai", UsageRecord(100, NOW, NOW + timedelta(days=1), version=2))
    reads = [(snap, NOW, 10.0), (snap, NOW, 40.0), (spent, NOW, 1.0), (spent, NOW, 0.0)]
    answers = Answers()
    check_run(answers, reads)  # the plans are built, and the answers right
    plan = answers._plans[id(snap.state)]
    assert isinstance(plan.features["gen"], answers_module._CreditBacked)
    assert any(isinstance(s, answers_module._Wallet) for s in plan.segments(True, snap, NOW))

    def reference(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reference path was taken")

    for name in ("entitlement_v2", "entitlement_v1", "metered", "credit"):
        monkeypatch.setattr(convert, name, reference)
    monkeypatch.setattr(answers_module, "credit_entitlement", reference)
    made = [
        (
            answers.entitlement_list(s, now, v2=True),
            answers.entitlement_list(s, now, v2=False),
            answers.metered(s, "gen", now, requested),
        )
        for s, now, requested in reads
    ]
    monkeypatch.undo()
    for (s, now, requested), (v2, v1, single) in zip(reads, made, strict=True):
        assert v2 == reference_list(s, now, True)
        assert v1 == reference_list(s, now, False)
        assert single == reference_metered(s, "gen", now, requested)
    # The wallet spent: its feature is denied for want of credits, and the wallet itself.
    wallet_entry = pb.GetEntitlementsStateV2Response.FromString(made[2][0]).entitlements[-1]
    assert not wallet_entry.has_access and wallet_entry.credit.remaining == 0
    assert made[2][2] is not None and made[2][2][1] == (
        False,
        False,
        DenialReason.INSUFFICIENT_CREDITS,
    )


def test_a_wallet_s_metadata_is_written_sorted_whatever_its_order() -> None:
    """Equal metadata built in other orders: the same bytes, the reference path's."""
    items = [("b", 1), ("a", {"z": [1, "x", None, True], "c": {}}), ("", "empty"), ("é", -0.0)]
    snaps = [
        snapshot(
            "c",
            credits=(
                dataclasses.replace(
                    wallet("ai", 10),
                    currency=dataclasses.replace(wallet("ai", 10).currency, metadata=dict(order)),
                ),
            ),
        )
        for order in (items, items[::-1], items[1:] + items[:1])
    ]
    written = {Answers().entitlement_list(s, NOW, v2=True) for s in snaps}
    assert written == {reference_list(snaps[0], NOW, True)}


def test_equal_period_ends_in_other_zones_are_written_as_their_own() -> None:
    """A wallet's (and a credit-backed feature's) period end, the same instant in another zone
    with a sub-second offset: other local microseconds, another encoding, read after it."""
    zone = timezone(timedelta(hours=5, minutes=30, microseconds=250_000))
    end = NOW + timedelta(days=3)
    snap = snapshot(
        "c",
        credit_backed("gen", "ai", 2.0),
        credits=(wallet("ai", 100),),
        credit_usage={"ai": usage(40, end=end)},
        feature_usage={"gen": usage(3, end=end)},
    )
    zoned_end = end.astimezone(zone)
    other = snap.with_credit_usage("ai", UsageRecord(40, None, zoned_end, version=2))
    other = other.with_feature_usage("gen", UsageRecord(3, None, zoned_end, version=2))
    check_run(Answers(), [(snap, NOW, 1.0), (other, NOW, 1.0), (snap, NOW, 1.0)])

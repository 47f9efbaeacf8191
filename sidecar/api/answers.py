"""Evaluated answers as bytes, straight from a snapshot: the read path when nothing is memoized.

The reference path (``sidecar.evaluation.getters`` -> ``convert`` -> ``SerializeToString``)
builds a result object and a protobuf message per entitlement, which made an evaluated
20-entitlement list cost 60 times its memoized bytes. Here the same answers are written with
the wire format directly (``wire.py``), and everything about them that does not depend on usage,
the instant or the request is computed once per entitlement state (a *plan*):

* an entitlement whose decision ``rules.usage_dependent`` says is fixed (boolean, numeric,
  enum, or one upstream already denied) is decided once by ``rules.decide_feature`` itself and
  kept as its finished bytes;
* a metered feature keeps its constant fields pre-encoded; per call only its usage is read,
  ``rules.metered_denial`` applied and the changing fields written. The current usage period
  of a rolled-over or absent record is derived once per period, not per call;
* a credit-backed feature is written as a metered one is, its usage read the same way; per call
  the rule of ``rules.decide_feature`` for it (``decide_credit_backed``) reads the wallet of its
  currency in the snapshot's state, and the answer carries the soft limit that rule decided;
* a credit wallet (V2 lists) keeps its currency, serialized once per state plan by ``convert``
  itself (its metadata is a ``Struct``, a protobuf map: written sorted, as ``deterministic``
  serialization writes it), and its granted amount and soft limit pre-encoded; per call
  ``rules.decide_credit`` decides it and its consumption is written.

A missing entitlement, a type mismatch and fallbacks are left to the caller.

Plans are keyed by the identity of the ``EntitlementState`` and hold it, so an id cannot be
reused while its plan lives, and a plan never describes another state. Usage updates replace the
snapshot but keep its state object (``CustomerSnapshot.with_feature_usage``), so the read after a
usage report finds the plan warm; a new state from upstream or Redis starts a new plan, built
mostly from feature plans compiled for other states: a feature plan depends on its entitlement
alone, and decoders share the entitlements of customers on one plan, so they are kept per
entitlement (``_Compiled``, at most ``MAX_COMPILED``). At most ``MAX_PLANS`` state plans are kept,
oldest first out: besides the plans (a few kB each) they may keep states alive that the hot
cache has dropped, so the bound is small.

tests/unit/api/test_answers.py holds every answer equal to the reference path's, byte for byte,
for generated snapshots, instants and requests.
"""

from __future__ import annotations

from datetime import datetime

from entitlements.model.state import (
    CustomerSnapshot,
    DenialReason,
    EntitlementState,
    Feature,
    FeatureEntitlement,
    UsageRecord,
)
from entitlements.periods import current_period, rolled_over
from sidecar.api import convert, wire
from sidecar.evaluation.getters import Kind, credit_entitlement, kind_of, numeric_value
from sidecar.evaluation.rules import (
    EffectiveUsage,
    decide_credit,
    decide_credit_backed,
    decide_feature,
    metered_denial,
    usage_dependent,
)

#: Entitlement states whose plans are kept (0: none, every answer is computed from scratch).
MAX_PLANS = 256
#: Entitlements whose feature plans are kept, across states (0: none).
MAX_COMPILED = 4096

#: What a single-feature answer is counted as: (is_fallback, has_access, denial reason).
Outcome = tuple[bool, bool, DenialReason | None]

# The numbers convert.py maps the domain's enums to, as varints.
_REASON = wire.varints(convert.REASONS)
_FEATURE_TYPE = wire.varints(convert.FEATURE_TYPES)
_METER_TYPE = wire.varints(convert.METER_TYPES)
_RESET_PERIOD = wire.varints(convert.RESET_PERIODS)

# has_access = 1 and access_denied_reason = 3 of EntitlementV2 and every single-feature response.
_GRANTED = b"\x08\x01"
_DENIED = {reason: b"\x18" + number for reason, number in _REASON.items()}
# The oneof member of an EntitlementV2 (and GetEntitlementResponse), and of a v1 Entitlement.
_V2_VARIANT = {
    Kind.BOOLEAN: b"\x22",
    Kind.NUMERIC: b"\x2a",
    Kind.METERED: b"\x32",
    Kind.ENUM: b"\x3a",
}
_V1_VARIANT = {
    Kind.BOOLEAN: b"\x0a",
    Kind.NUMERIC: b"\x12",
    Kind.METERED: b"\x1a",
    Kind.ENUM: b"\x22",
}
_ITEM = b"\x0a"  # entitlements = 1 of both list responses
_CREDIT = b"\x42"  # credit = 8 of EntitlementV2
# has_soft_limit = 14 of MeteredEntitlement is optional: written even when false.
_SOFT_LIMIT = {True: b"\x70\x01", False: b"\x70\x00"}
_LIST_REASON = b"\x10"  # access_denied_reason = 2 of both list responses


def _header(has_access: bool, reason: DenialReason | None) -> bytes:
    head = _GRANTED if has_access else b""
    return head + _DENIED[reason] if reason is not None else head


def _feature(feature: Feature) -> bytes:
    """``EntitlementFeature`` of a present entitlement (``convert.feature``)."""
    body = wire.string(b"\x0a", feature.id) if feature.id else b""
    body += b"\x10" + _FEATURE_TYPE[feature.feature_type]
    if feature.units is not None:
        body += wire.string(b"\x1a", feature.units)
    if feature.units_plural is not None:
        body += wire.string(b"\x22", feature.units_plural)
    body += b"\x28" + _METER_TYPE[feature.meter_type]
    if feature.is_metered:
        body += b"\x30\x01"
    return body


def _same_instant(a: datetime | None, b: datetime | None) -> bool:
    # Equal instants in the same zone encode alike; in different zones they need not.
    return a is b or (a is not None and b is not None and a == b and a.tzinfo is b.tzinfo)


class _Metered:
    """A metered feature's ``MeteredEntitlement``, its constant fields encoded once."""

    __slots__ = ("_anchor", "_head", "_period", "_reset", "_tail", "entitlement", "soft")

    kind = Kind.METERED

    def __init__(self, entitlement: FeatureEntitlement) -> None:
        self.entitlement = entitlement
        # feature = 4, usage_limit = 5, is_unlimited = 6: before current_usage = 7.
        head = wire.framed(b"\x22", _feature(entitlement.feature))
        if entitlement.usage_limit is not None:
            head += wire.double(b"\x29", entitlement.usage_limit)
        if entitlement.unlimited:
            head += b"\x30\x01"
        self._head = head
        period, anchor = entitlement.reset_period, entitlement.usage_period_anchor
        self._reset = b"\x48" + _RESET_PERIOD[period] if period is not None else b""
        self._anchor = wire.framed(b"\x5a", wire.timestamp(anchor)) if anchor is not None else b""
        # The current period when the record has none (rolled over, absent), while it lasts.
        self._period: tuple[datetime, datetime] | None = None
        # (start, end, the fields from next_reset_date = 10 to usage_period_end = 13) last written.
        self._tail: tuple[datetime | None, datetime | None, bytes] | None = None
        # Non-credit metered decisions carry the entitlement's own soft limit
        # (rules.decide_feature); a credit-backed one's is decided per call.
        self.soft = _SOFT_LIMIT[entitlement.soft_limit]

    def usage(
        self, record: UsageRecord | None, now: datetime
    ) -> tuple[float, datetime | None, datetime | None]:
        """``rules.effective_usage`` as (current usage, period start, period end)."""
        if record is not None and not rolled_over(record.period_end, now):
            return record.current_usage, record.period_start, record.period_end
        entitlement = self.entitlement
        period, anchor = entitlement.reset_period, entitlement.usage_period_anchor
        if period is None or anchor is None:
            return 0.0, None, None
        held = self._period
        # current_period is the unique [start, end) holding now: if the one held still holds
        # it, it is what current_period would return again.
        if held is None or not held[0] <= now < held[1]:
            held = self._period = current_period(anchor, period, now)
        return 0.0, held[0], held[1]

    def body(
        self, current_usage: float, start: datetime | None, end: datetime | None, soft: bytes
    ) -> bytes:
        """The message, ``soft`` its has_soft_limit field (``_SOFT_LIMIT``)."""
        tail = self._tail
        if tail is None or not (
            # The same record's (or period's) datetimes, usually: identity first.
            (start is tail[0] and end is tail[1])
            or (_same_instant(start, tail[0]) and _same_instant(end, tail[1]))
        ):
            ends = wire.framed(b"\x52", wire.timestamp(end)) if end is not None else b""
            fields = ends + self._anchor
            if start is not None:
                fields += wire.framed(b"\x62", wire.timestamp(start))
            if end is not None:
                fields += b"\x6a" + ends[1:]  # usage_period_end = 13: next_reset_date's body
            tail = self._tail = (start, end, fields)
        return (
            self._head + wire.implicit_double(b"\x39", current_usage) + self._reset + tail[2] + soft
        )


class _CreditBacked:
    """A credit-backed metered feature's ``MeteredEntitlement``: written as ``_Metered`` writes
    it, and decided per call by ``rules.decide_feature``'s rule for it, which reads the wallet of
    its currency in the snapshot's state (a plan is shared between states: nothing of the wallet
    is kept) and decides the soft limit the answer carries, the wallet's or its own."""

    __slots__ = ("metered",)

    kind = Kind.METERED

    def __init__(self, entitlement: FeatureEntitlement) -> None:
        self.metered = _Metered(entitlement)

    def answer(
        self,
        snapshot: CustomerSnapshot,
        record: UsageRecord | None,
        now: datetime,
        requested_usage: float,
    ) -> tuple[bool, DenialReason | None, bytes]:
        """(has_access, denial reason, the message) for ``record``, the feature's usage."""
        metered = self.metered
        current, start, end = metered.usage(record, now)
        decision = decide_credit_backed(
            snapshot, metered.entitlement, EffectiveUsage(current, start, end), requested_usage
        )
        body = metered.body(current, start, end, _SOFT_LIMIT[decision.soft_limit])
        return decision.has_access, decision.reason, body


class _Wallet:
    """A credit wallet's entry in a V2 list, its constant fields encoded once per state plan.

    The currency (``EntitlementCurrency``, with its metadata ``Struct``) is what ``convert``
    builds for it, serialized once with ``deterministic``, as the reference serializes the whole
    list: a map's entries sorted by key. (Otherwise upb writes a map in hash-table order, which
    can differ between two equal messages: the same answer, other bytes.) Per call,
    ``rules.decide_credit`` decides the wallet and gives its consumption and period end.
    """

    __slots__ = ("_end", "_head", "_soft", "currency_id")

    def __init__(self, snapshot: CustomerSnapshot, currency_id: str) -> None:
        self.currency_id = currency_id
        reference = convert.credit(credit_entitlement(snapshot, currency_id))
        currency = reference.currency.SerializeToString(deterministic=True)
        # currency = 1 (a message: written even when empty), usage_limit = 2 (granted).
        credit = snapshot.state.credits[currency_id]
        self._head = wire.framed(b"\x0a", currency) + wire.implicit_double(b"\x11", credit.granted)
        self._soft = b"\x30\x01" if credit.soft_limit else b""  # has_soft_limit = 6
        # (period end, its usage_period_end = 5 field) last written.
        self._end: tuple[datetime, bytes] | None = None

    def item(self, snapshot: CustomerSnapshot) -> bytes:
        """The entry (entitlements = 1 of ``GetEntitlementsStateV2Response``)."""
        decision = decide_credit(snapshot, self.currency_id)
        wallet = decision.wallet
        assert wallet is not None  # the currency is one of the state's own wallets
        # current_usage = 3, remaining = 4.
        body = (
            self._head
            + wire.implicit_double(b"\x19", wallet.consumed)
            + wire.implicit_double(b"\x21", wallet.remaining)
        )
        end = wallet.period_end
        if end is not None:
            held = self._end
            if held is None or not (held[0] is end or _same_instant(held[0], end)):
                held = self._end = (end, wire.framed(b"\x2a", wire.timestamp(end)))
            body += held[1]
        entry = _header(decision.has_access, decision.reason) + wire.framed(
            _CREDIT, body + self._soft
        )
        return wire.framed(_ITEM, entry)


class _Fixed:
    """An entitlement whose decision depends on nothing but itself: its finished bytes."""

    __slots__ = ("has_access", "item_v1", "item_v2", "kind", "reason", "variant")

    def __init__(
        self, kind: Kind, has_access: bool, reason: DenialReason | None, variant: bytes
    ) -> None:
        self.kind = kind
        self.has_access = has_access
        self.reason = reason
        self.variant = variant  # the body of the oneof member's message
        v2 = _header(has_access, reason) + wire.framed(_V2_VARIANT[kind], variant)
        # The entry as a list response carries it (entitlements = 1), in either version.
        self.item_v2 = wire.framed(_ITEM, v2)
        self.item_v1 = wire.framed(_ITEM, wire.framed(_V1_VARIANT[kind], variant))


_FeaturePlan = _Fixed | _Metered | _CreditBacked


def _variant(kind: Kind, entitlement: FeatureEntitlement) -> bytes:
    """The variant message of a fixed answer (``convert.boolean``, ``numeric``, ``enum``)."""
    feature = wire.framed(b"\x22", _feature(entitlement.feature))
    if kind is Kind.BOOLEAN:
        return feature
    if kind is Kind.NUMERIC:
        value = numeric_value(entitlement.usage_limit)
        body = feature + (b"\x28" + wire.varint(value) if value is not None else b"")
        return body + (b"\x30\x01" if entitlement.unlimited else b"")
    if kind is Kind.ENUM:
        return feature + b"".join(wire.string(b"\x2a", v) for v in entitlement.enum_values)
    # Metered, denied by upstream: decided without usage, so none is shown; the decision
    # carries the entitlement's own soft limit, credit-backed or not.
    return _Metered(entitlement).body(0.0, None, None, _SOFT_LIMIT[entitlement.soft_limit])


def _compile(
    feature_id: str, entitlement: FeatureEntitlement, snapshot: CustomerSnapshot, now: datetime
) -> _FeaturePlan:
    kind = kind_of(entitlement.feature)
    if usage_dependent(entitlement):
        if entitlement.credit_rate is not None:
            return _CreditBacked(entitlement)
        return _Metered(entitlement)
    # The rules themselves decide; being fixed, the decision reads neither usage nor ``now``.
    decision = decide_feature(snapshot, feature_id, now)
    return _Fixed(kind, decision.has_access, decision.reason, _variant(kind, entitlement))


# A list is written as runs of finished bytes between the entries computed per call: features
# by id, wallets (V2 lists) last.
_Segment = bytes | tuple[str, _Metered | _CreditBacked] | _Wallet


class _Compiled:
    """Feature plans by entitlement, shared by every state holding that entitlement.

    A plan depends on its entitlement alone (``_compile``: a fixed decision reads nothing else
    when the entitlement is present, and a metered plan's caches are checked on every use), and
    decoders share the entitlements of customers on one plan (``entitlements.model.state``), so
    the first read of a new state mostly finds its plans compiled. Keyed by identity, holding
    the entitlement so an id is not reused while its plan lives; oldest out first.
    """

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        self._plans: dict[int, tuple[FeatureEntitlement, _FeaturePlan]] = {}

    def clear(self) -> None:
        self._plans.clear()

    def get(
        self,
        feature_id: str,
        entitlement: FeatureEntitlement,
        snapshot: CustomerSnapshot,
        now: datetime,
    ) -> _FeaturePlan:
        held = self._plans.get(id(entitlement))
        if held is not None and held[0] is entitlement:
            return held[1]
        plan = _compile(feature_id, entitlement, snapshot, now)
        if MAX_COMPILED > 0:
            while len(self._plans) >= MAX_COMPILED:
                del self._plans[next(iter(self._plans))]
            self._plans[id(entitlement)] = (entitlement, plan)
        return plan


class _Plan:
    __slots__ = ("compiled", "features", "lists", "state")

    def __init__(self, state: EntitlementState, compiled: _Compiled) -> None:
        self.state = state
        self.compiled = compiled
        self.features: dict[str, _FeaturePlan] = {}
        self.lists: dict[bool, list[_Segment]] = {}

    def feature(
        self, feature_id: str, snapshot: CustomerSnapshot, now: datetime
    ) -> _FeaturePlan | None:
        found = self.features.get(feature_id)
        if found is None:
            entitlement = self.state.features.get(feature_id)
            if entitlement is None:
                return None
            found = self.features[feature_id] = self.compiled.get(
                feature_id, entitlement, snapshot, now
            )
        return found

    def segments(self, v2: bool, snapshot: CustomerSnapshot, now: datetime) -> list[_Segment]:
        found = self.lists.get(v2)
        if found is not None:
            return found
        segments: list[_Segment] = []
        run = b""
        for feature_id in self.state.features:
            plan = self.feature(feature_id, snapshot, now)
            if isinstance(plan, _Fixed):
                run += plan.item_v2 if v2 else plan.item_v1
                continue
            assert plan is not None
            if run:
                segments.append(run)
                run = b""
            segments.append((feature_id, plan))
        if run:
            segments.append(run)
        if v2:
            segments.extend(_Wallet(snapshot, currency_id) for currency_id in self.state.credits)
        self.lists[v2] = segments
        return segments


class Answers:
    """Evaluated answers as bytes, with the plans of recently evaluated states."""

    def __init__(self) -> None:
        self._plans: dict[int, _Plan] = {}
        self._compiled = _Compiled()

    def clear(self) -> None:
        self._plans.clear()
        self._compiled.clear()

    def _plan(self, state: EntitlementState) -> _Plan:
        plan = self._plans.get(id(state))
        if plan is not None and plan.state is state:
            return plan
        plan = _Plan(state, self._compiled)
        limit = MAX_PLANS
        if limit > 0:
            while len(self._plans) >= limit:
                del self._plans[next(iter(self._plans))]
            self._plans[id(state)] = plan
        return plan

    def metered(
        self, snapshot: CustomerSnapshot, feature_id: str, now: datetime, requested_usage: float
    ) -> tuple[bytes, Outcome] | None:
        """``GetMeteredEntitlementResponse`` bytes, or None: ask the reference path."""
        state = snapshot.state
        held = self._plans.get(id(state))
        # Every read of a metered feature comes here: the plan's lookups inlined.
        plan = held.features.get(feature_id) if held is not None and held.state is state else None
        if plan is None:
            plan = self._plan(state).feature(feature_id, snapshot, now)
            if plan is None:
                return None
        if plan.kind is not Kind.METERED:
            return None
        if isinstance(plan, _Metered):
            current, start, end = plan.usage(snapshot.feature_usage.get(feature_id), now)
            reason = metered_denial(plan.entitlement, current, requested_usage)
            has_access = reason is None
            body = plan.body(current, start, end, plan.soft)
        elif isinstance(plan, _Fixed):
            has_access, reason, body = plan.has_access, plan.reason, plan.variant
        else:
            has_access, reason, body = plan.answer(
                snapshot, snapshot.feature_usage.get(feature_id), now, requested_usage
            )
        data = (
            _header(has_access, reason)
            + wire.implicit_double(b"\x21", requested_usage)
            + wire.framed(b"\x2a", body)
        )
        return data, (False, has_access, reason)

    def entitlement_list(self, snapshot: CustomerSnapshot, now: datetime, *, v2: bool) -> bytes:
        """``GetEntitlementsStateV2Response`` (``v2``, with wallets) or
        ``GetEntitlementsResponse`` bytes of a snapshot."""
        plan = self._plan(snapshot.state)
        usage = snapshot.feature_usage
        parts: list[bytes] = []
        for segment in plan.segments(v2, snapshot, now):
            if isinstance(segment, bytes):
                parts.append(segment)
                continue
            if isinstance(segment, _Wallet):
                parts.append(segment.item(snapshot))
                continue
            feature_id, entry = segment
            if isinstance(entry, _Metered):
                current, start, end = entry.usage(usage.get(feature_id), now)
                reason = metered_denial(entry.entitlement, current, 0.0)
                has_access = reason is None
                body = entry.body(current, start, end, entry.soft)
            else:
                has_access, reason, body = entry.answer(snapshot, usage.get(feature_id), now, 0.0)
            if v2:
                item = _header(has_access, reason) + wire.framed(b"\x32", body)
            else:
                item = wire.framed(b"\x1a", body)
            parts.append(wire.framed(_ITEM, item))
        state = snapshot.state
        if state.denial_reason:
            parts.append(_LIST_REASON + _REASON[state.denial_reason])
        return b"".join(parts)

"""Translation between protobuf messages and the domain: nothing else happens here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.model.state import DenialReason, FeatureType, MeterType, ResetPeriod
from sidecar.evaluation.fallback import FallbackValues
from sidecar.evaluation.getters import Kind, ListResult, Result
from sidecar.model.usage import DimensionValue, RawEvent, UpdateBehavior, UsageAck, UsageReport
from sidecar.pb import sidecar_pb2 as pb

REASONS: Mapping[DenialReason, pb.AccessDeniedReason.ValueType] = {
    r: pb.AccessDeniedReason.Value(f"ACCESS_DENIED_REASON_{r.value}") for r in DenialReason
}
FEATURE_TYPES: Mapping[FeatureType, pb.FeatureType.ValueType] = {
    t: pb.FeatureType.Value(f"FEATURE_TYPE_{t.value}") for t in FeatureType
}
METER_TYPES: Mapping[MeterType, pb.MeterType.ValueType] = {
    t: pb.MeterType.Value(f"METER_TYPE_{t.value}") for t in MeterType
}
RESET_PERIODS: Mapping[ResetPeriod, pb.EntitlementResetPeriod.ValueType] = {
    p: pb.EntitlementResetPeriod.Value(f"ENTITLEMENT_RESET_PERIOD_{p.value}") for p in ResetPeriod
}


def timestamp(value: datetime) -> Timestamp:
    seconds = int(value.timestamp())
    return Timestamp(seconds=seconds, nanos=value.microsecond * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_timestamp(value: Timestamp) -> datetime:
    # Integer arithmetic: a float of seconds + nanos rounds 9999-12-31T23:59:59.9999999 up
    # into year 10000, which datetime cannot hold.
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def _present(**fields: Any) -> dict[str, Any]:
    # proto3 `optional` fields stay absent (not zero) when the domain has no value.
    return {k: v for k, v in fields.items() if v is not None}


# ----------------------------------------------------------------------- requests


def fallback_values(message: Any) -> FallbackValues:
    """Any of the per-request fallback messages; fields it lacks stay unset."""

    def opt(name: str) -> Any:
        return getattr(message, name) if message.HasField(name) else None

    fields = message.DESCRIPTOR.fields_by_name
    return FallbackValues(
        has_access=message.has_access,
        value=opt("value") if "value" in fields else None,
        is_unlimited=opt("is_unlimited") if "is_unlimited" in fields else None,
        usage_limit=opt("usage_limit") if "usage_limit" in fields else None,
        enum_values=tuple(message.enum_values) if "enum_values" in fields else (),
    )


def _dimensions(raw: Mapping[str, pb.EventDimensionValue]) -> dict[str, DimensionValue]:
    out: dict[str, DimensionValue] = {}
    for key, value in raw.items():
        which = value.WhichOneof("value")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def usage_report(message: pb.ReportUsageRequest) -> UsageReport:
    behavior = UpdateBehavior.DELTA
    if message.update_behavior == pb.USAGE_UPDATE_BEHAVIOR_SET:
        behavior = UpdateBehavior.SET
    return UsageReport(
        customer_id=message.customer_id,
        feature_id=message.feature_id,
        value=message.value,
        resource_id=message.resource_id or None,
        behavior=behavior,
        dimensions=_dimensions(message.dimensions),
        timestamp=from_timestamp(message.timestamp) if message.HasField("timestamp") else None,
        idempotency_key=message.idempotency_key or None,
    )


def raw_event(message: pb.Event) -> RawEvent:
    return RawEvent(
        event_name=message.event_name,
        customer_id=message.customer_id,
        idempotency_key=message.idempotency_key,
        resource_id=message.resource_id or None,
        dimensions=_dimensions(message.dimensions),
        timestamp=from_timestamp(message.timestamp) if message.HasField("timestamp") else None,
    )


# ---------------------------------------------------------------------- responses


def feature(result: Result) -> pb.EntitlementFeature:
    ent = result.entitlement
    if ent is None:
        return pb.EntitlementFeature(id=result.subject_id, is_metered=result.kind is Kind.METERED)
    f = ent.feature
    return pb.EntitlementFeature(
        id=f.id,
        feature_type=FEATURE_TYPES[f.feature_type],
        meter_type=METER_TYPES[f.meter_type],
        is_metered=f.is_metered,
        **_present(units=f.units, units_plural=f.units_plural),
    )


def boolean(result: Result) -> pb.BooleanEntitlement:
    return pb.BooleanEntitlement(feature=feature(result))


def numeric(result: Result) -> pb.NumericEntitlement:
    return pb.NumericEntitlement(
        feature=feature(result), is_unlimited=result.is_unlimited, **_present(value=result.value)
    )


def metered(result: Result) -> pb.MeteredEntitlement:
    ent = result.entitlement
    usage = result.usage
    fields = _present(
        usage_limit=result.usage_limit,
        reset_period=RESET_PERIODS[ent.reset_period] if ent and ent.reset_period else None,
        usage_period_anchor=(
            timestamp(ent.usage_period_anchor) if ent and ent.usage_period_anchor else None
        ),
        usage_period_start=timestamp(usage.period_start) if usage.period_start else None,
        usage_period_end=timestamp(usage.period_end) if usage.period_end else None,
        next_reset_date=timestamp(usage.period_end) if usage.period_end else None,
    )
    return pb.MeteredEntitlement(
        feature=feature(result),
        is_unlimited=result.is_unlimited,
        current_usage=usage.current_usage,
        has_soft_limit=result.soft_limit,
        **fields,
    )


def enum(result: Result) -> pb.EnumEntitlement:
    return pb.EnumEntitlement(feature=feature(result), enum_values=result.enum_values)


def _struct(metadata: Mapping[str, Any] | None) -> Struct | None:
    if metadata is None:
        return None
    value = Struct()
    value.update(metadata)
    return value


def credit(result: Result) -> pb.CreditEntitlement:
    wallet = result.wallet
    if wallet is None:
        limit = result.usage_limit or 0.0
        return pb.CreditEntitlement(
            currency=pb.EntitlementCurrency(currency_id=result.subject_id),
            usage_limit=limit,
            remaining=limit,
            has_soft_limit=result.soft_limit,
        )
    c = wallet.credit.currency
    return pb.CreditEntitlement(
        currency=pb.EntitlementCurrency(
            currency_id=c.currency_id,
            display_name=c.display_name,
            **_present(
                description=c.description,
                unit_singular=c.unit_singular,
                unit_plural=c.unit_plural,
                additional_meta_data=_struct(c.metadata),
            ),
        ),
        usage_limit=wallet.granted,
        current_usage=wallet.consumed,
        remaining=wallet.remaining,
        has_soft_limit=wallet.credit.soft_limit,
        **_present(usage_period_end=timestamp(wallet.period_end) if wallet.period_end else None),
    )


_BUILDERS = {
    Kind.BOOLEAN: boolean,
    Kind.NUMERIC: numeric,
    Kind.METERED: metered,
    Kind.ENUM: enum,
    Kind.CREDIT: credit,
}


def header(result: Result) -> dict[str, Any]:
    """has_access / is_fallback / access_denied_reason, shared by every response."""
    fields: dict[str, Any] = {"has_access": result.has_access, "is_fallback": result.is_fallback}
    if result.reason is not None:
        fields["access_denied_reason"] = REASONS[result.reason]
    return fields


def variant(result: Result) -> dict[str, Any]:
    """The oneof member for unified responses, keyed by its field name."""
    return {result.kind.value: _BUILDERS[result.kind](result)}


def entitlement_v2(result: Result) -> pb.EntitlementV2:
    return pb.EntitlementV2(**header(result), **variant(result))


def entitlement_v1(result: Result) -> pb.Entitlement:
    return pb.Entitlement(**variant(result))


def list_v1(result: ListResult) -> pb.GetEntitlementsResponse:
    items = [entitlement_v1(r) for r in result.entitlements if r.kind is not Kind.CREDIT]
    return pb.GetEntitlementsResponse(entitlements=items, **_list_reason(result))


def list_v2(result: ListResult) -> pb.GetEntitlementsStateV2Response:
    items = [entitlement_v2(r) for r in result.entitlements]
    return pb.GetEntitlementsStateV2Response(entitlements=items, **_list_reason(result))


def _list_reason(result: ListResult) -> dict[str, Any]:
    return {"access_denied_reason": REASONS[result.reason]} if result.reason else {}


def usage_response(ack: UsageAck) -> pb.ReportUsageResponse:
    fields: dict[str, Any] = {}
    if ack.usage is not None:
        fields["current_usage"] = ack.usage.current_usage
        if ack.usage.period_start:
            fields["usage_period_start"] = timestamp(ack.usage.period_start)
        if ack.usage.period_end:
            fields["usage_period_end"] = timestamp(ack.usage.period_end)
    if ack.credit is not None:
        record = ack.credit.record
        fields["credit"] = pb.UsageCredit(
            currency_id=ack.credit.currency_id,
            current_usage=record.current_usage,
            usage_limit=ack.credit.granted,
            consumed=ack.credit.consumed,
            **_present(
                usage_period_end=timestamp(record.period_end) if record.period_end else None,
                timestamp=timestamp(record.updated_at) if record.updated_at else None,
            ),
        )
    return pb.ReportUsageResponse(
        measurement_id=ack.measurement_id,
        customer_id=ack.customer_id,
        feature_id=ack.feature_id,
        **_present(resource_id=ack.resource_id),
        **fields,
    )

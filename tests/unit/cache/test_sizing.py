"""snapshot_size charges what deep_size measures: never less, and for a decoded snapshot (what
sources hand the cache) hardly more."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

from hypothesis import given, settings

from entitlements.model import state as model
from entitlements.model.state import CustomerSnapshot, decode_snapshot, encode_snapshot
from sidecar.cache.sizing import deep_size, snapshot_size
from tests.unit.entitlements.model.state_strategies import ms_datetimes, snapshots

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)


@PROPERTY
@given(snapshot=snapshots(ms_datetimes))
def test_never_charges_less_than_deep_size(snapshot: CustomerSnapshot) -> None:
    # Built by hypothesis, objects are shared freely (the same text in several fields, cached
    # small ints and one-letter strings): the bound must hold anyway.
    assert snapshot_size(snapshot) >= deep_size(snapshot)


@PROPERTY
@given(snapshot=snapshots(ms_datetimes))
def test_a_decoded_snapshot_is_charged_close_to_its_deep_size(snapshot: CustomerSnapshot) -> None:
    decoded = decode_snapshot(encode_snapshot(snapshot))
    measured, charged = deep_size(decoded), snapshot_size(decoded)
    assert measured <= charged
    # What remains shared in a decoded snapshot is what CPython caches (the empty string,
    # one-character strings, small ints): a few dozen bytes per field at most.
    assert charged <= measured * 1.25 + 256


def test_a_realistic_snapshot_is_charged_close_to_its_deep_size() -> None:
    features = {}
    usage = {}
    for i in range(20):
        feature_id = f"feature-{i:03d}"
        metered = i % 3 == 0
        features[feature_id] = model.FeatureEntitlement(
            model.Feature(
                feature_id,
                model.FeatureType.NUMBER if metered else model.FeatureType.ENUM,
                model.MeterType.INCREMENTAL if metered else model.MeterType.NONE,
                "call",
                "calls",
                f"Feature {i}",
            ),
            usage_limit=1000.0 + i,
            enum_values=() if metered else ("small", "medium", "large"),
            reset_period=model.ResetPeriod.MONTH if metered else None,
            usage_period_anchor=model.decode_usage(
                b'{"schemaVersion":1,"usagePeriodStart":1700000000000}'
            ).period_start,
        )
        if metered:
            usage[feature_id] = model.UsageRecord(5.0 + i, version=10_000 + i)
    built = CustomerSnapshot(model.EntitlementState("customer-0001", features=features), usage)
    decoded = decode_snapshot(encode_snapshot(built))
    # Within 10 %: decoders share instants (one anchor here), which deep_size counts once per
    # snapshot and snapshot_size once per field holding it.
    assert deep_size(decoded) <= snapshot_size(decoded) <= deep_size(decoded) * 1.1


def test_every_model_field_is_sized() -> None:
    # snapshot_size reads fields by name: a field added to the model must be added there too,
    # or the byte bound silently stops covering it. This list is what it knows.
    sized = {
        "CustomerSnapshot": {"state", "feature_usage", "credit_usage"},
        "EntitlementState": {
            "customer_id",
            "resource_id",
            "denial_reason",
            "features",
            "credits",
            "version",
            "updated_at",
        },
        "FeatureEntitlement": {
            "feature",
            "usage_limit",
            "unlimited",
            "soft_limit",
            "denial_reason",
            "enum_values",
            "reset_period",
            "usage_period_anchor",
            "credit_rate",
            "valid_until",
        },
        "Feature": {"id", "feature_type", "meter_type", "units", "units_plural", "display_name"},
        "CreditRate": {"amount", "currency_id"},
        "CreditEntitlement": {"currency", "granted", "soft_limit", "denial_reason", "valid_until"},
        "Currency": {
            "currency_id",
            "display_name",
            "description",
            "unit_singular",
            "unit_plural",
            "metadata",
        },
        "UsageRecord": {"current_usage", "period_start", "period_end", "updated_at", "version"},
    }
    for name, names in sized.items():
        kind = getattr(model, name)
        assert is_dataclass(kind)
        assert {f.name for f in fields(kind)} == names, name

"""JSON shapes of upstream's resources."""

from __future__ import annotations

from typing import Any

from entitlements.model.state import epoch_ms
from upstream.credits import Balance
from upstream.domain import CreditGrant, Customer, PromotionalEntitlement, Subscription


def customer(c: Customer) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "email": c.email,
        "metadata": dict(c.metadata),
        "createdAt": epoch_ms(c.created_at),
        "archivedAt": epoch_ms(c.archived_at),
    }


def subscription(s: Subscription) -> dict[str, Any]:
    return {
        "id": s.id,
        "customerId": s.customer_id,
        "planId": s.plan_id,
        "resourceId": s.resource_id,
        "status": s.status.value,
        "startDate": epoch_ms(s.start_date),
        "trialEnd": epoch_ms(s.trial_end),
        "cancellationDate": epoch_ms(s.cancel_at),
        "endedAt": epoch_ms(s.ended_at),
        "addons": [{"addonId": k, "quantity": v} for k, v in sorted(s.addons.items())],
        "billableFeatures": [
            {"featureId": k, "quantity": v} for k, v in sorted(s.billable_quantities.items())
        ],
    }


def promotion(p: PromotionalEntitlement) -> dict[str, Any]:
    return {
        "id": p.id,
        "customerId": p.customer_id,
        "featureId": p.feature_id,
        "resourceId": p.resource_id,
        "value": p.value,
        "unlimited": p.unlimited,
        "softLimit": p.soft_limit,
        "enumValues": list(p.enum_values),
        "resetPeriod": p.reset_period,
        "expiresAt": epoch_ms(p.expires_at),
        "revokedAt": epoch_ms(p.revoked_at),
    }


def grant(g: CreditGrant) -> dict[str, Any]:
    return {
        "id": g.id,
        "customerId": g.customer_id,
        "currencyId": g.currency_id,
        "resourceId": g.resource_id,
        "amount": g.amount,
        "consumed": g.consumed,
        "grantType": g.grant_type.value,
        "priority": g.priority,
        "effectiveAt": epoch_ms(g.effective_at),
        "expiresAt": epoch_ms(g.expires_at),
        "voidedAt": epoch_ms(g.voided_at),
        "createdAt": epoch_ms(g.created_at),
        "idempotencyKey": g.idempotency_key,
    }


def balance(currency_id: str, b: Balance) -> dict[str, Any]:
    return {
        "currencyId": currency_id,
        "granted": b.granted,
        "consumed": b.consumed,
        "remaining": b.remaining,
    }

"""Upstream's operations: each is one transaction, so facts, states and events commit together."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from entitlements.model.state import CustomerSnapshot, ResetPeriod
from entitlements.periods import add_periods, current_period
from upstream.catalog.model import Catalog, CreditConfig
from upstream.credits import LedgerEntry, LedgerEventType, settle_deficit
from upstream.domain import (
    CreditGrant,
    Customer,
    GrantType,
    PromotionalEntitlement,
    Subscription,
    SubscriptionStatus,
)
from upstream.errors import Conflict, Invalid, NotFound, UpstreamError
from upstream.publisher import StatePublisher
from upstream.store.sqlite import Store, Tx

CANCEL_NOW = object()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    customer_id: str
    plan_id: str
    resource_id: str | None = None
    addons: Mapping[str, int] = field(default_factory=dict)
    billable_quantities: Mapping[str, float] = field(default_factory=dict)
    skip_trial: bool = False
    start_date: datetime | None = None
    subscription_id: str | None = None


class Upstream:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.publisher = StatePublisher(catalog)
        self.clock = clock
        # Wakes the outbox relay after a commit so events go out at once.
        self._on_commit = on_commit

    @property
    def catalog(self) -> Catalog:
        return self.publisher.catalog

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.store.transaction() as tx:
            yield tx
        self._on_commit()

    # ------------------------------------------------------------------ catalog

    def reload_catalog(self, catalog: Catalog) -> int:
        """Swap the catalog and republish every state it changes; returns how many changed."""
        self.publisher = StatePublisher(catalog)
        return self.refresh_all()

    def refresh_all(self) -> int:
        now = self.clock()
        changed = 0
        with self.transaction() as tx:
            for customer_id in tx.customer_ids():
                before = tx.head_seq()
                self.publisher.refresh(tx, customer_id, None, now)
                changed += tx.head_seq() - before
        return changed

    # ---------------------------------------------------------------- customers

    def provision_customer(
        self,
        customer_id: str,
        *,
        name: str | None = None,
        email: str | None = None,
        metadata: Mapping[str, str] | None = None,
        subscription: SubscriptionRequest | None = None,
    ) -> tuple[Customer, Subscription | None]:
        now = self.clock()
        with self.transaction() as tx:
            if tx.get_customer(customer_id) is not None:
                raise Conflict(f"customer {customer_id!r} already exists", field="id")
            customer = Customer(customer_id, name, email, None, dict(metadata or {}), now)
            tx.put_customer(customer)
            sub = None
            if subscription is not None:
                try:
                    sub = self._provision_subscription(tx, subscription, now)
                except UpstreamError as exc:
                    # The subscription is nested in the request: name the field as sent.
                    if exc.field is not None:
                        exc.field = f"subscription.{exc.field}"
                    raise
            self.publisher.refresh(tx, customer_id, self._resources(tx, customer_id), now)
        return customer, sub

    def update_customer(
        self,
        customer_id: str,
        *,
        name: str | None = None,
        email: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Customer:
        with self.transaction() as tx:
            customer = self._customer(tx, customer_id)
            customer = replace(
                customer,
                name=name if name is not None else customer.name,
                email=email if email is not None else customer.email,
                metadata=dict(metadata) if metadata is not None else customer.metadata,
            )
            tx.put_customer(customer)
        return customer

    def get_customer(self, customer_id: str) -> tuple[Customer, list[Subscription]]:
        with self.store.transaction() as tx:
            return self.read_customer(tx, customer_id)

    @classmethod
    def read_customer(cls, tx: Tx, customer_id: str) -> tuple[Customer, list[Subscription]]:
        """:meth:`get_customer` within ``tx`` (e.g. a ``Store.snapshot``)."""
        return cls._customer(tx, customer_id), tx.subscriptions_for(customer_id)

    def archive_customer(self, customer_id: str) -> Customer:
        now = self.clock()
        with self.transaction() as tx:
            customer = self._customer(tx, customer_id)
            if customer.archived_at is None:
                customer = replace(customer, archived_at=now)
                tx.put_customer(customer)
                self.publisher.refresh(tx, customer_id, None, now)
        return customer

    @staticmethod
    def _customer(tx: Tx, customer_id: str) -> Customer:
        customer = tx.get_customer(customer_id)
        if customer is None:
            raise NotFound(f"customer {customer_id!r} does not exist", field="customerId")
        return customer

    @staticmethod
    def _resources(tx: Tx, customer_id: str) -> set[str | None]:
        keys: set[str | None] = {None, *tx.state_resources(customer_id)}
        keys.update(s.resource_id for s in tx.subscriptions_for(customer_id))
        return keys

    # ------------------------------------------------------------ subscriptions

    def provision_subscription(self, request: SubscriptionRequest) -> Subscription:
        now = self.clock()
        with self.transaction() as tx:
            self._customer(tx, request.customer_id)
            sub = self._provision_subscription(tx, request, now)
            self.publisher.refresh(
                tx, request.customer_id, self._resources(tx, request.customer_id), now
            )
        return sub

    def _check_request(self, request: SubscriptionRequest) -> str:
        plan = self.catalog.plans.get(request.plan_id)
        if plan is None:
            raise Invalid(f"unknown plan {request.plan_id!r}", field="planId", code="UNKNOWN_PLAN")
        product = self.catalog.products[plan.product_id]
        if product.multiple_subscriptions and request.resource_id is None:
            raise Invalid(f"product {product.id!r} needs a resourceId", field="resourceId")
        if not product.multiple_subscriptions and request.resource_id is not None:
            raise Invalid(f"product {product.id!r} takes no resourceId", field="resourceId")
        self._check_quantities(request.addons, request.billable_quantities, plan.product_id)
        return plan.product_id

    def _check_quantities(
        self, addons: Mapping[str, int], billable: Mapping[str, float], product_id: str
    ) -> None:
        for addon_id, quantity in addons.items():
            addon = self.catalog.addons.get(addon_id)
            if addon is None:
                raise Invalid(f"unknown add-on {addon_id!r}", field="addons", code="UNKNOWN_ADDON")
            if addon.product_id != product_id:
                raise Invalid(
                    f"add-on {addon_id!r} is not for product {product_id!r}", field="addons"
                )
            if quantity < 1:
                raise Invalid(f"quantity of {addon_id!r} must be >= 1", field="addons")
        for feature_id, amount in billable.items():
            if feature_id not in self.catalog.features:
                raise Invalid(f"unknown feature {feature_id!r}", field="billableFeatures")
            if amount < 0:
                raise Invalid(f"quantity of {feature_id!r} must be >= 0", field="billableFeatures")

    def _provision_subscription(
        self, tx: Tx, request: SubscriptionRequest, now: datetime
    ) -> Subscription:
        product_id = self._check_request(request)
        plan = self.catalog.plans[request.plan_id]
        if request.subscription_id and tx.get_subscription(request.subscription_id) is not None:
            raise Conflict(f"subscription {request.subscription_id!r} already exists", field="id")
        previous = tx.subscriptions_of_product(request.customer_id, product_id, request.resource_id)
        start = request.start_date or now
        # One trial per customer and product: a returning customer starts paid.
        trial = plan.trial_days > 0 and not request.skip_trial and not previous
        for old in previous:
            if old.status in (SubscriptionStatus.TRIAL, SubscriptionStatus.ACTIVE):
                tx.put_subscription(
                    replace(old, status=SubscriptionStatus.REPLACED, ended_at=start),
                    product_id,
                    now,
                )
                if old.plan_id != request.plan_id:
                    # A plan change starts usage afresh.
                    tx.delete_usage(request.customer_id, request.resource_id)
        sub = Subscription(
            id=request.subscription_id or f"sub-{uuid.uuid4().hex[:16]}",
            customer_id=request.customer_id,
            plan_id=request.plan_id,
            resource_id=request.resource_id,
            status=SubscriptionStatus.TRIAL if trial else SubscriptionStatus.ACTIVE,
            start_date=start,
            trial_end=add_days(start, plan.trial_days) if trial else None,
            addons=dict(request.addons),
            billable_quantities=dict(request.billable_quantities),
        )
        tx.put_subscription(sub, product_id, now)
        self._issue_recurring_credits(tx, sub, now)
        return sub

    def update_subscription(
        self,
        subscription_id: str,
        *,
        addons: Mapping[str, int] | None = None,
        billable_quantities: Mapping[str, float] | None = None,
    ) -> Subscription:
        now = self.clock()
        with self.transaction() as tx:
            sub = self._subscription(tx, subscription_id)
            product_id = self.catalog.plans[sub.plan_id].product_id
            self._check_quantities(addons or {}, billable_quantities or {}, product_id)
            if sub.status not in (SubscriptionStatus.TRIAL, SubscriptionStatus.ACTIVE):
                raise Invalid(f"subscription {subscription_id!r} is {sub.status.value.lower()}")
            sub = replace(
                sub,
                addons=dict(addons) if addons is not None else sub.addons,
                billable_quantities=(
                    dict(billable_quantities)
                    if billable_quantities is not None
                    else sub.billable_quantities
                ),
            )
            tx.put_subscription(sub, product_id, now)
            self._issue_recurring_credits(tx, sub, now)
            self.publisher.refresh(tx, sub.customer_id, self._resources(tx, sub.customer_id), now)
        return sub

    def cancel_subscription(self, subscription_id: str, at: object = CANCEL_NOW) -> Subscription:
        """Cancel now (default), schedule at a future instant, or clear a schedule (None)."""
        now = self.clock()
        with self.transaction() as tx:
            sub = self._subscription(tx, subscription_id)
            if sub.status not in (SubscriptionStatus.TRIAL, SubscriptionStatus.ACTIVE):
                raise Invalid(f"subscription {subscription_id!r} is {sub.status.value.lower()}")
            if at is CANCEL_NOW:
                sub = replace(sub, status=SubscriptionStatus.CANCELLED, ended_at=now, cancel_at=now)
            elif at is None:
                sub = replace(sub, cancel_at=None)
            else:
                assert isinstance(at, datetime)
                if at <= now:
                    raise Invalid("must be in the future", field="cancellationDate")
                sub = replace(sub, cancel_at=at)
            tx.put_subscription(sub, self.catalog.plans[sub.plan_id].product_id, now)
            self.publisher.refresh(tx, sub.customer_id, self._resources(tx, sub.customer_id), now)
        return sub

    @staticmethod
    def _subscription(tx: Tx, subscription_id: str) -> Subscription:
        sub = tx.get_subscription(subscription_id)
        if sub is None:
            raise NotFound(
                f"subscription {subscription_id!r} does not exist", field="subscriptionId"
            )
        return sub

    def _issue_recurring_credits(self, tx: Tx, sub: Subscription, now: datetime) -> None:
        """Grant the current cadence period's recurring credits if not granted yet."""
        if not sub.is_live(now):
            return
        sources: list[tuple[str, CreditConfig, int]] = [
            (f"plan:{sub.plan_id}", c, 1)
            for c in self.catalog.resolved_plan_credits(sub.plan_id).values()
        ]
        for addon_id, quantity in sub.addons.items():
            sources += [
                (f"addon:{addon_id}", c, quantity) for c in self.catalog.addons[addon_id].credits
            ]
        for source, config, quantity in sources:
            start, end = current_period(sub.start_date, config.cadence.period, now)
            index = period_index(sub.start_date, config.cadence.period, start)
            grant_id = f"rec:{sub.id}:{source}:{config.currency_id}:{index}"
            if tx.has_grant(grant_id):
                continue
            grant = CreditGrant(
                id=grant_id,
                customer_id=sub.customer_id,
                currency_id=config.currency_id,
                amount=config.amount * quantity,
                grant_type=GrantType.RECURRING,
                resource_id=sub.resource_id,
                effective_at=start,
                expires_at=min(end, sub.cancel_at) if sub.cancel_at else end,
                created_at=now,
            )
            deficit = tx.deficits_for(sub.customer_id, sub.resource_id).get(config.currency_id, 0.0)
            grant, deficit, entry = settle_deficit(grant, deficit)
            tx.put_grant(grant)
            tx.set_deficit(sub.customer_id, sub.resource_id, config.currency_id, deficit)
            granted = LedgerEntry(
                LedgerEventType.CREDITS_GRANTED, grant.id, config.currency_id, grant.amount
            )
            tx.add_ledger(
                sub.customer_id, sub.resource_id, [granted, *([entry] if entry else [])], now
            )

    # --------------------------------------------------------------- promotions

    def grant_promotion(self, promo: PromotionalEntitlement) -> PromotionalEntitlement:
        now = self.clock()
        with self.transaction() as tx:
            self._customer(tx, promo.customer_id)
            if promo.feature_id not in self.catalog.features:
                raise Invalid(f"unknown feature {promo.feature_id!r}", field="featureId")
            if promo.expires_at is not None and promo.expires_at <= now:
                raise Invalid("must be in the future", field="expiresAt")
            if tx.get_promotion(promo.id) is not None:
                raise Conflict(f"promotion {promo.id!r} already exists", field="id")
            tx.put_promotion(promo, now)
            self.publisher.refresh(
                tx, promo.customer_id, self._resources(tx, promo.customer_id), now
            )
        return promo

    def revoke_promotion(self, promotion_id: str) -> PromotionalEntitlement:
        now = self.clock()
        with self.transaction() as tx:
            promo = tx.get_promotion(promotion_id)
            if promo is None:
                raise NotFound(f"promotion {promotion_id!r} does not exist", field="promotionId")
            if promo.revoked_at is None:
                promo = replace(promo, revoked_at=now)
                tx.put_promotion(promo, now)
                self.publisher.refresh(
                    tx, promo.customer_id, self._resources(tx, promo.customer_id), now
                )
        return promo

    # -------------------------------------------------------------------- state

    def entitlements(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        now = self.clock()
        with self.transaction() as tx:
            return self.publisher.current(tx, customer_id, resource_id, now)

    def peek_entitlements(
        self, tx: Tx, customer_id: str, resource_id: str | None
    ) -> CustomerSnapshot | None:
        """What :meth:`entitlements` answers, read within ``tx`` when answering writes nothing;
        None when it would (time changed the state since it was published)."""
        return self.publisher.peek(tx, customer_id, resource_id, self.clock())

    def process_due(self) -> int:
        """Apply what time changed (trial ends, expiries, period ends); returns keys refreshed."""
        now = self.clock()
        refreshed = 0
        with self.transaction() as tx:
            due = tx.due_states(now)
            for customer_id in dict.fromkeys(c for c, _ in due):
                for sub in tx.subscriptions_for(customer_id):
                    self._issue_recurring_credits(tx, sub, now)
                refreshed += len(self.publisher.refresh(tx, customer_id, None, now))
        return refreshed

    def process_all_due(self, max_passes: int = 10_000) -> int:
        """Process everything due as of now, in as many passes as that takes.

        :meth:`process_due` handles a bounded batch per transaction; after a jump of the clock
        (the test clock) many states can be due at once. Returns how many states changed, that is
        how many change events were written. Stops after ``max_passes`` batches in any case.
        """
        with self.store.transaction() as tx:
            before = tx.head_seq()
        for _ in range(max_passes):
            if not self.process_due():
                break
            due = self.next_due()
            if due is None or due > self.clock():
                break
        with self.store.transaction() as tx:
            return tx.head_seq() - before

    def next_due(self) -> datetime | None:
        with self.store.transaction() as tx:
            return tx.next_due()


def add_days(start: datetime, days: int) -> datetime:
    return start + timedelta(days=days)


def period_index(anchor: datetime, period: ResetPeriod, start: datetime) -> int:
    """Which period (0, 1, ...) after ``anchor`` begins at ``start``."""
    index = 0
    # Periods are months or years here, so this loop is short even for old subscriptions.
    while add_periods(anchor, period, index) < start:
        index += 1
    return index

"""The SQLite schema. Bump ``SCHEMA_VERSION`` and add a step to ``MIGRATIONS`` to change it."""

from __future__ import annotations

SCHEMA_VERSION = 1

# resource_key is '' for customer-level rows: SQLite treats NULLs as distinct in
# primary keys, which would let duplicate customer-level rows in.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT,
    email TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    archived_at INTEGER
);
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    plan_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    status TEXT NOT NULL,
    start_date INTEGER NOT NULL,
    trial_end INTEGER,
    cancel_at INTEGER,
    ended_at INTEGER,
    addons TEXT NOT NULL DEFAULT '{}',
    billable TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE INDEX subscriptions_by_customer ON subscriptions(customer_id);
CREATE TABLE promotions (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    feature_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX promotions_by_customer ON promotions(customer_id);
CREATE TABLE credit_grants (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    currency_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    amount REAL NOT NULL,
    grant_type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    effective_at INTEGER,
    expires_at INTEGER,
    voided_at INTEGER,
    consumed REAL NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    idempotency_key TEXT
);
CREATE INDEX grants_by_customer ON credit_grants(customer_id, currency_id);
CREATE TABLE credit_deficits (
    customer_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    currency_id TEXT NOT NULL,
    deficit REAL NOT NULL,
    PRIMARY KEY (customer_id, resource_key, currency_id)
);
CREATE TABLE credit_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    currency_id TEXT NOT NULL,
    grant_id TEXT,
    event_type TEXT NOT NULL,
    amount REAL NOT NULL,
    feature_id TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX ledger_by_customer ON credit_ledger(customer_id, currency_id, id);
CREATE TABLE usage (
    customer_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    feature_id TEXT NOT NULL,
    value REAL NOT NULL,
    period_start INTEGER,
    period_end INTEGER,
    updated_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    meter_state TEXT,
    PRIMARY KEY (customer_id, resource_key, feature_id)
);
CREATE TABLE idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE states (
    customer_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    valid_until INTEGER,
    PRIMARY KEY (customer_id, resource_key)
);
CREATE INDEX states_by_valid_until ON states(valid_until) WHERE valid_until IS NOT NULL;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    resource_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    committed_at INTEGER NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unpublished ON outbox(seq) WHERE published = 0;
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters(name, value) VALUES ('version', 0);
""",
}

"""The OpenAPI 3.0.3 document served at ``/openapi.json``.

It describes exactly what ``upstream.api.app.build_app`` serves: every route, the
request bodies the handlers in ``routes.py`` accept (with the limits ``body.py``
enforces), and the JSON they answer with (``views.py``, ``changes.py`` and the
canonical snapshot of ``entitlements.model.state``). Response objects are closed
(``additionalProperties: false``) so a field added to a view without being added
here fails the contract tests; request objects stay open because the handlers
ignore fields they do not know.

Every failure is ``{"error": {"code", "message", "field"?}}`` (``upstream.errors``).
"""

from __future__ import annotations

from typing import Any

from upstream.api.body import MAX_ID, MAX_MAGNITUDE
from upstream.api.routes import MAX_EVENT_BATCH, MAX_USAGE_BATCH
from upstream.testclock import MAX_OFFSET

Schema = dict[str, Any]

MAX_SAFE_INTEGER = 2**53 - 1  # Body.integer refuses larger magnitudes
# upstream.api.app.MAX_BODY_BYTES (app imports this module, so it cannot be imported here)
MAX_BODY_BYTES = 4 * 2**20

# ----------------------------------------------------------------- helpers


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    # OpenAPI 3.0 ignores siblings of $ref, so a nullable reference goes through allOf.
    if "$ref" in schema:
        return {"nullable": True, "allOf": [schema]}
    return {**schema, "nullable": True}


def _obj(required: tuple[str, ...] = (), /, *, closed: bool = False, **props: Schema) -> Schema:
    """An object schema; ``closed`` (responses) forbids properties not listed."""
    return _object(required, props, closed=closed)


def _object(required: tuple[str, ...], props: dict[str, Schema], *, closed: bool = False) -> Schema:
    unknown = set(required) - set(props)
    assert not unknown, f"required but not defined: {sorted(unknown)}"
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def _closed(**props: Schema) -> Schema:
    """A response object: every property always present, nothing else."""
    return _obj(tuple(props), closed=True, **props)


def _array(items: Schema, **limits: int) -> Schema:
    return {"type": "array", "items": items, **limits}


def _map(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def _enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
EPOCH_MS: Schema = {"type": "integer", "format": "int64", "description": "epoch milliseconds"}
ID: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID}
# Body.number: a JSON number (never a string such as "NaN"), finite, |n| <= 1e15.
FINITE: Schema = {
    "type": "number",
    "minimum": -MAX_MAGNITUDE,
    "maximum": MAX_MAGNITUDE,
    "description": "finite, at most 1e15 in magnitude",
}
# Body.time: ISO-8601 with a zone ("Z" accepted), or epoch milliseconds.
TIMESTAMP: Schema = {
    "oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "format": "int64"}],
    "description": "ISO-8601 date-time with a time zone, or epoch milliseconds",
}


def _id(description: str) -> Schema:
    return {**ID, "description": description}


def _path_param(name: str, description: str) -> Schema:
    # aiohttp's {name} matches one non-empty path segment.
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _json(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def _body(name: str, *, required: bool = True) -> Schema:
    return {"required": required, **_json(_ref(name))}


_ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    413: "PayloadTooLarge",
}


def _responses(
    status: int, description: str, schema: Schema, *errors: int, auth: bool = True
) -> Schema:
    """The success response plus the shared error responses (401 too when ``auth``)."""
    out: Schema = {str(status): {"description": description, **_json(schema)}}
    for code in sorted({*errors, 401} if auth else set(errors)):
        out[str(code)] = {"$ref": f"#/components/responses/{_ERRORS[code]}"}
    return out


def _op(
    op_id: str,
    summary: str,
    responses: Schema,
    *,
    tag: str,
    params: list[Schema] | None = None,
    body: Schema | None = None,
    public: bool = False,
) -> Schema:
    op: Schema = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses
    if public:
        op["security"] = []
    return op


# ------------------------------------------------------------ response shapes

ERROR = _obj(
    ("error",),
    error=_obj(
        ("code", "message"),
        closed=True,
        code={**STRING, "description": "e.g. INVALID_ARGUMENT, UNKNOWN_PLAN, NOT_FOUND"},
        message=STRING,
        field={**STRING, "description": "the offending request field, when there is one"},
    ),
    closed=True,
)

HEALTH = _obj(("status",), closed=True, status=_enum("UP", "DOWN"), reason=STRING)

CUSTOMER = _closed(
    id=STRING,
    name=_nullable(STRING),
    email=_nullable(STRING),
    metadata=_map(STRING),
    createdAt=_nullable(EPOCH_MS),
    archivedAt=_nullable(EPOCH_MS),
)

SUBSCRIPTION = _closed(
    id=STRING,
    customerId=STRING,
    planId=STRING,
    resourceId=_nullable(STRING),
    status=_enum("TRIAL", "ACTIVE", "CANCELLED", "REPLACED"),
    startDate=EPOCH_MS,
    trialEnd=_nullable(EPOCH_MS),
    cancellationDate=_nullable(EPOCH_MS),
    endedAt=_nullable(EPOCH_MS),
    addons=_array(_closed(addonId=STRING, quantity=INTEGER)),
    billableFeatures=_array(_closed(featureId=STRING, quantity=NUMBER)),
)

PROMOTION = _closed(
    id=STRING,
    customerId=STRING,
    featureId=STRING,
    resourceId=_nullable(STRING),
    value=_nullable(NUMBER),
    unlimited=BOOLEAN,
    softLimit=BOOLEAN,
    enumValues=_array(STRING),
    resetPeriod=_nullable(STRING),
    expiresAt=_nullable(EPOCH_MS),
    revokedAt=_nullable(EPOCH_MS),
)

CREDIT_GRANT = _closed(
    id=STRING,
    customerId=STRING,
    currencyId=STRING,
    resourceId=_nullable(STRING),
    amount=NUMBER,
    consumed=NUMBER,
    grantType=_enum("PAID", "PROMOTIONAL", "RECURRING"),
    priority=INTEGER,
    effectiveAt=_nullable(EPOCH_MS),
    expiresAt=_nullable(EPOCH_MS),
    voidedAt=_nullable(EPOCH_MS),
    createdAt=_nullable(EPOCH_MS),
    idempotencyKey=_nullable(STRING),
)

CREDIT_BALANCE = _closed(
    currencyId=STRING,
    granted=NUMBER,
    consumed={**NUMBER, "description": "includes the overdraft"},
    remaining={**NUMBER, "description": "negative while in overdraft"},
)

LEDGER_ENTRY = _closed(
    id=INTEGER,
    currencyId=STRING,
    resourceId=_nullable(STRING),
    grantId=_nullable(STRING),
    eventType=_enum(
        "CREDITS_CONSUMED",
        "CREDITS_GRANTED",
        "CREDITS_VOIDED",
        "CREDITS_EXPIRED",
        "DEFICIT_SETTLED",
    ),
    amount=NUMBER,
    featureId=_nullable(STRING),
    timestamp=EPOCH_MS,
)

_CLOCK_FIELDS: dict[str, Schema] = {
    "now": {**STRING, "format": "date-time", "description": "RFC 3339, UTC"},
    "nowMs": EPOCH_MS,
    "offsetSeconds": {**NUMBER, "minimum": 0, "description": "how far ahead of real time"},
}
TEST_CLOCK = _closed(**_CLOCK_FIELDS)
TEST_CLOCK_ADVANCED = _closed(
    **_CLOCK_FIELDS,
    statesChanged={**INTEGER, "minimum": 0, "description": "change events written"},
)
_MAX_ADVANCE_SECONDS = MAX_OFFSET.total_seconds()
# Exactly one of seconds or to (the handler refuses both, and neither).
TEST_CLOCK_ADVANCE: Schema = {
    "type": "object",
    "properties": {
        "seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": _MAX_ADVANCE_SECONDS,
            "description": "move forward by this many seconds (0: just apply what is due)",
        },
        "to": {
            **TIMESTAMP,
            "description": "move forward to this instant: RFC 3339 with a time zone, or epoch"
            " milliseconds; not before the clock's current time",
        },
    },
    "oneOf": [
        {"required": ["seconds"], "not": {"required": ["to"]}},
        {"required": ["to"], "not": {"required": ["seconds"]}},
    ],
    "description": (
        "Exactly one of seconds or to. The clock runs at most"
        f" {MAX_OFFSET.days} days ahead of real time."
    ),
}

RESET_PERIOD = _enum("HOUR", "DAY", "WEEK", "MONTH", "YEAR")
DENIAL_REASON = _enum(
    "UNKNOWN",
    "CUSTOMER_IS_ARCHIVED",
    "CUSTOMER_NOT_FOUND",
    "CUSTOMER_RESOURCE_NOT_FOUND",
    "FEATURE_NOT_FOUND",
    "NO_ACTIVE_SUBSCRIPTION",
    "NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION",
    "REQUESTED_USAGE_EXCEEDING_LIMIT",
    "BUDGET_EXCEEDED",
    "REQUESTED_VALUES_MISMATCH",
    "FEATURE_TYPE_MISMATCH",
    "INSUFFICIENT_CREDITS",
    "REVOKED",
    "ENTITLEMENT_NOT_FOUND",
)
SCHEMA_VERSION: Schema = {"type": "integer", "enum": [1]}

# entitlements.model.state.encode_usage_record
USAGE_RECORD = _closed(
    schemaVersion=SCHEMA_VERSION,
    currentUsage=NUMBER,
    usagePeriodStart=_nullable(EPOCH_MS),
    usagePeriodEnd=_nullable(EPOCH_MS),
    updatedAt=_nullable(EPOCH_MS),
    version=INTEGER,
)

# entitlements.model.state.encode_feature
FEATURE_ENTITLEMENT = _closed(
    feature=_closed(
        id=STRING,
        featureType=_enum("BOOLEAN", "NUMBER", "ENUM"),
        meterType=_enum("NONE", "FLUCTUATING", "INCREMENTAL"),
        units=_nullable(STRING),
        unitsPlural=_nullable(STRING),
        displayName=_nullable(STRING),
    ),
    usageLimit=_nullable(NUMBER),
    hasUnlimitedUsage=BOOLEAN,
    hasSoftLimit=BOOLEAN,
    accessDeniedReason=_nullable(DENIAL_REASON),
    enumValues=_array(STRING),
    resetPeriod=_nullable(RESET_PERIOD),
    usagePeriodAnchor=_nullable(EPOCH_MS),
    creditRate=_nullable(_closed(amount=NUMBER, currencyId=STRING)),
    validUntil=_nullable(EPOCH_MS),
)

# entitlements.model.state.encode_credit
CREDIT_ENTITLEMENT = _closed(
    currency=_closed(
        currencyId=STRING,
        displayName=STRING,
        description=_nullable(STRING),
        unitSingular=_nullable(STRING),
        unitPlural=_nullable(STRING),
        metadata=_nullable({"type": "object"}),
    ),
    granted=NUMBER,
    hasSoftLimit=BOOLEAN,
    accessDeniedReason=_nullable(DENIAL_REASON),
    validUntil=_nullable(EPOCH_MS),
)

# entitlements.model.state.encode_snapshot_dict
ENTITLEMENT_SNAPSHOT = _closed(
    schemaVersion=SCHEMA_VERSION,
    customerId=STRING,
    resourceId=_nullable(STRING),
    accessDeniedReason=_nullable(DENIAL_REASON),
    features=_array(_ref("FeatureEntitlement")),
    credits=_array(_ref("CreditEntitlement")),
    version=INTEGER,
    updatedAt=_nullable(EPOCH_MS),
    featureUsage=_map(_ref("UsageRecord")),
    creditUsage=_map(_ref("UsageRecord")),
)

# entitlements.model.events.encode_event_dict: snapshot for entitlements.updated;
# featureId/currencyId/usage for usage.updated.
CHANGE_EVENT = _obj(
    ("schemaVersion", "kind", "seq", "customerId", "resourceId", "version", "committedAt"),
    closed=True,
    schemaVersion=SCHEMA_VERSION,
    kind=_enum("entitlements.updated", "usage.updated", "customer.deleted"),
    seq=INTEGER,
    customerId=STRING,
    resourceId=_nullable(STRING),
    version=INTEGER,
    committedAt=EPOCH_MS,
    snapshot=_ref("EntitlementSnapshot"),
    featureId=_nullable(STRING),
    currencyId=_nullable(STRING),
    usage=_ref("UsageRecord"),
)

USAGE_RESULT = _closed(
    measurementId=STRING,
    customerId=STRING,
    resourceId=_nullable(STRING),
    featureId=STRING,
    usage=_ref("UsageRecord"),
    credit=_nullable(
        _closed(
            currencyId=STRING,
            granted=NUMBER,
            consumed={**NUMBER, "description": "credits this report burnt; 0 on a replay"},
            usage=_ref("UsageRecord"),
        )
    ),
)

# ------------------------------------------------------------- request shapes
# Optional fields (``_opt``) take null as "absent", as body.py reads them; flags,
# integers and enumValues do not (null is a 400 there), so they are not nullable.


def _opt(schema: Schema, description: str | None = None) -> Schema:
    out = _nullable(schema)
    if "enum" in out:
        out["enum"] = [*out["enum"], None]  # OpenAPI 3.0.3: nullable enums list null
    if description is not None:
        out["description"] = description
    return out


ADDON_QUANTITY = _obj(
    ("addonId",),
    addonId=_id("add-on id from the catalog"),
    quantity={**INTEGER, "minimum": 1, "maximum": MAX_SAFE_INTEGER, "default": 1},
)
BILLABLE_QUANTITY = _obj(
    ("featureId", "quantity"),
    featureId=_id("feature id from the catalog"),
    quantity={**FINITE, "minimum": 0},
)


def _subscription_request(*, with_customer: bool) -> Schema:
    props: dict[str, Schema] = {
        "planId": _id("plan id from the catalog"),
        "resourceId": _opt(ID, "required by, and only allowed for, multi-subscription products"),
        "addons": _opt(_array(ADDON_QUANTITY)),
        "billableFeatures": _opt(_array(BILLABLE_QUANTITY)),
        "skipTrial": {**BOOLEAN, "default": False},
        "startDate": _opt(TIMESTAMP, "default: now"),
        "id": _opt(ID, "subscription id; generated when absent"),
    }
    if with_customer:
        props = {"customerId": _id("customer id"), **props}
        return _object(("customerId", "planId"), props)
    return _object(("planId",), props)


STRING_MAP = _map(STRING)

CUSTOMER_CREATE = _obj(
    ("id",),
    id=_id("customer id"),
    name=_opt(STRING),
    email=_opt(STRING),
    metadata=_opt(STRING_MAP),
    subscription=_opt(_ref("CustomerSubscription"), "a first subscription"),
)

CUSTOMER_UPDATE = _obj(
    name=_opt(STRING, "absent or null: unchanged"),
    email=_opt(STRING, "absent or null: unchanged"),
    metadata=_opt(STRING_MAP, "replaces the metadata when present; null clears it"),
)

SUBSCRIPTION_UPDATE = _obj(
    addons=_opt(_array(ADDON_QUANTITY), "replaces the add-ons when present; null clears them"),
    billableFeatures=_opt(
        _array(BILLABLE_QUANTITY), "replaces the billable quantities when present"
    ),
)

SUBSCRIPTION_CANCEL = _obj(
    cancellationDate=_opt(
        TIMESTAMP, "absent: cancel now; a future instant: schedule; null: clear a schedule"
    ),
)

PROMOTION_CREATE = _obj(
    ("customerId", "featureId"),
    id=_opt(ID, "promotion id; generated when absent"),
    customerId=_id("customer id"),
    featureId=_id("feature id from the catalog"),
    resourceId=_opt(ID, "resource the promotion applies to"),
    value=_opt(FINITE),
    unlimited={**BOOLEAN, "default": False},
    softLimit={**BOOLEAN, "default": False},
    enumValues=_array(STRING),
    resetPeriod=_opt(STRING, "HOUR, DAY, WEEK, MONTH or YEAR; any other value never resets"),
    expiresAt=_opt(TIMESTAMP, "must be in the future"),
)

CREDIT_GRANT_CREATE = _obj(
    ("customerId", "currencyId", "amount"),
    customerId=_id("customer id"),
    currencyId=_id("currency id from the catalog"),
    amount={**FINITE, "minimum": 0, "exclusiveMinimum": True},
    grantType=_opt({**_enum("PAID", "PROMOTIONAL"), "default": "PAID"}),
    resourceId=_opt(ID, "resource the credits are scoped to"),
    priority={**INTEGER, "minimum": 0, "maximum": MAX_SAFE_INTEGER, "default": 0},
    effectiveAt=_opt(TIMESTAMP, "default: now"),
    expiresAt=_opt(TIMESTAMP, "must be in the future"),
    idempotencyKey=_opt(ID, "a repeated key answers with the first grant and grants nothing"),
)

USAGE_ITEM = _obj(
    ("customerId", "featureId", "value"),
    customerId=_id("customer id"),
    featureId=_id("metered feature id"),
    value={**FINITE, "description": "DELTA: added; SET: the new level (>= 0)"},
    resourceId=_opt(ID, "resource id"),
    updateBehavior=_opt({**_enum("DELTA", "SET"), "default": "DELTA"}),
    idempotencyKey=_opt(ID, "a repeated key answers as before and counts nothing"),
    timestamp=_opt(TIMESTAMP),
)

USAGE_REPORT = _obj(
    ("usages",),
    usages={
        **_array(_ref("UsageItem"), minItems=1, maxItems=MAX_USAGE_BATCH),
        "description": "applied all or nothing",
    },
)

DIMENSION_VALUE: Schema = {"oneOf": [STRING, FINITE, BOOLEAN]}

EVENT = _obj(
    ("eventName", "customerId", "idempotencyKey"),
    eventName=_id("event name matched by the catalog's event meters"),
    customerId=_id("customer id"),
    idempotencyKey=_id("deduplicates per customer, resource and event name"),
    resourceId=_opt(ID, "resource id"),
    dimensions=_opt(_map(DIMENSION_VALUE)),
    timestamp=_opt(TIMESTAMP),
)

EVENT_BATCH = _obj(
    ("events",),
    events={
        **_array(_ref("Event"), maxItems=MAX_EVENT_BATCH),
        "description": "applied all or nothing",
    },
)

# -------------------------------------------------------------------- paths

CUSTOMER_ID = _path_param("customer_id", "customer id")
SUBSCRIPTION_ID = _path_param("subscription_id", "subscription id")
PROMOTION_ID = _path_param("promotion_id", "promotion id")
GRANT_ID = _path_param("grant_id", "credit grant id")
CURRENCY_ID = _path_param("currency_id", "currency id")
RESOURCE_QUERY = _query("resourceId", {"type": "string", "maxLength": MAX_ID}, "resource id")


def _cursor(default: int, maximum: int = 2**62) -> Schema:
    return {"type": "integer", "minimum": 0, "maximum": maximum, "default": default}


_PATHS: dict[str, dict[str, Schema]] = {
    "/livez": {
        "get": _op(
            "livez",
            "Liveness",
            _responses(200, "The process is up", _ref("Health"), auth=False),
            tag="operations",
            public=True,
        ),
    },
    "/readyz": {
        "get": _op(
            "readyz",
            "Readiness: the database answers",
            {
                **_responses(200, "Ready", _ref("Health"), auth=False),
                "503": {"description": "The database does not answer", **_json(_ref("Health"))},
            },
            tag="operations",
            public=True,
        ),
    },
    "/metrics": {
        "get": _op(
            "metrics",
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": STRING}},
                }
            },
            tag="operations",
            public=True,
        ),
    },
    "/openapi.json": {
        "get": _op(
            "openapi",
            "This document",
            _responses(200, "OpenAPI 3.0.3 document", {"type": "object"}, auth=False),
            tag="operations",
            public=True,
        ),
    },
    "/v1/customers": {
        "post": _op(
            "provisionCustomer",
            "Create a customer, optionally with a first subscription",
            _responses(
                201,
                "Created",
                _closed(customer=_ref("Customer"), subscription=_nullable(_ref("Subscription"))),
                400,
                409,
                413,
            ),
            tag="customers",
            body=_body("CustomerCreate"),
        ),
    },
    "/v1/customers/{customer_id}": {
        "get": _op(
            "getCustomer",
            "A customer and all its subscriptions",
            _responses(
                200,
                "The customer",
                _closed(customer=_ref("Customer"), subscriptions=_array(_ref("Subscription"))),
                404,
            ),
            tag="customers",
            params=[CUSTOMER_ID],
        ),
        "patch": _op(
            "updateCustomer",
            "Change name, email or metadata",
            _responses(200, "Updated", _closed(customer=_ref("Customer")), 400, 404, 413),
            tag="customers",
            params=[CUSTOMER_ID],
            body=_body("CustomerUpdate"),
        ),
    },
    "/v1/customers/{customer_id}/archive": {
        "post": _op(
            "archiveCustomer",
            "Archive a customer (idempotent); its entitlements are denied from then on",
            _responses(200, "Archived", _closed(customer=_ref("Customer")), 404),
            tag="customers",
            params=[CUSTOMER_ID],
        ),
    },
    "/v1/customers/{customer_id}/entitlements": {
        "get": _op(
            "getEntitlements",
            "The canonical entitlement snapshot (unknown customers: CUSTOMER_NOT_FOUND)",
            _responses(200, "The snapshot", _ref("EntitlementSnapshot"), 400),
            tag="customers",
            params=[CUSTOMER_ID, RESOURCE_QUERY],
        ),
    },
    "/v1/customers/{customer_id}/credits/ledger": {
        "get": _op(
            "getCreditLedger",
            "Credit ledger entries after a cursor, oldest first",
            _responses(
                200,
                "A page of entries; next is the cursor for the following page",
                _closed(entries=_array(_ref("LedgerEntry")), next=_nullable(INTEGER)),
                400,
                404,
            ),
            tag="credits",
            params=[
                CUSTOMER_ID,
                _query("currencyId", {"type": "string", "maxLength": MAX_ID}, "currency id"),
                _query("after", _cursor(0), "entry id cursor"),
                _query("limit", _cursor(100, 1000), "page size"),
            ],
        ),
    },
    "/v1/customers/{customer_id}/credits/{currency_id}": {
        "get": _op(
            "getCreditBalance",
            "Balance of one currency (zero for a currency never granted)",
            _responses(200, "The balance", _ref("CreditBalance"), 400, 404),
            tag="credits",
            params=[CUSTOMER_ID, CURRENCY_ID, RESOURCE_QUERY],
        ),
    },
    "/v1/subscriptions": {
        "post": _op(
            "provisionSubscription",
            "Subscribe a customer to a plan, replacing its subscription to the same product",
            _responses(
                201,
                "Created",
                _closed(subscription=_ref("Subscription")),
                400,
                404,
                409,
                413,
            ),
            tag="subscriptions",
            body=_body("SubscriptionCreate"),
        ),
    },
    "/v1/subscriptions/{subscription_id}": {
        "patch": _op(
            "updateSubscription",
            "Change add-ons or billable quantities of a live subscription",
            _responses(200, "Updated", _closed(subscription=_ref("Subscription")), 400, 404, 413),
            tag="subscriptions",
            params=[SUBSCRIPTION_ID],
            body=_body("SubscriptionUpdate"),
        ),
    },
    "/v1/subscriptions/{subscription_id}/cancel": {
        "post": _op(
            "cancelSubscription",
            "Cancel now, schedule a cancellation, or clear a scheduled one",
            _responses(200, "Updated", _closed(subscription=_ref("Subscription")), 400, 404, 413),
            tag="subscriptions",
            params=[SUBSCRIPTION_ID],
            body=_body("SubscriptionCancel", required=False),
        ),
    },
    "/v1/promotions": {
        "post": _op(
            "grantPromotion",
            "Grant a feature outside any plan",
            _responses(
                201,
                "Created",
                _closed(promotion=_ref("Promotion")),
                400,
                404,
                409,
                413,
            ),
            tag="promotions",
            body=_body("PromotionCreate"),
        ),
    },
    "/v1/promotions/{promotion_id}": {
        "delete": _op(
            "revokePromotion",
            "Revoke a promotion (idempotent)",
            _responses(200, "Revoked", _closed(promotion=_ref("Promotion")), 404),
            tag="promotions",
            params=[PROMOTION_ID],
        ),
    },
    "/v1/credits/grants": {
        "post": _op(
            "grantCredits",
            "Grant credits; a repeated idempotencyKey answers with the first grant",
            _responses(201, "Granted", _closed(grant=_ref("CreditGrant")), 400, 404, 413),
            tag="credits",
            body=_body("CreditGrantCreate"),
        ),
    },
    "/v1/credits/grants/{grant_id}/void": {
        "post": _op(
            "voidCreditGrant",
            "Void a grant's remaining credits (idempotent)",
            _responses(200, "Voided", _closed(grant=_ref("CreditGrant")), 404),
            tag="credits",
            params=[GRANT_ID],
        ),
    },
    "/v1/usage": {
        "post": _op(
            "reportUsage",
            "Report usage of metered features, all or nothing",
            _responses(
                200,
                "One result per item",
                _closed(results=_array(_ref("UsageResult"))),
                400,
                404,
                413,
            ),
            tag="metering",
            body=_body("UsageReport"),
        ),
    },
    "/v1/events": {
        "post": _op(
            "reportEvents",
            "Report raw events for the catalog's event meters, all or nothing",
            _responses(
                202,
                "Accepted; duplicates counts repeated idempotency keys",
                _closed(accepted={**INTEGER, "minimum": 0}, duplicates={**INTEGER, "minimum": 0}),
                400,
                404,
                413,
            ),
            tag="metering",
            body=_body("EventBatch"),
        ),
    },
    "/v1/changes": {
        "get": _op(
            "getChanges",
            "Change events after a cursor, oldest first",
            _responses(
                200,
                "A page; next is the cursor to pass as after, head the newest seq",
                _closed(events=_array(_ref("ChangeEvent")), next=INTEGER, head=INTEGER),
                400,
            ),
            tag="changes",
            params=[
                _query("after", _cursor(0), "seq cursor"),
                _query("limit", _cursor(500, 5000), "page size"),
            ],
        ),
    },
    "/v1/changes/stream": {
        "get": _op(
            "streamChanges",
            "Server-Sent Events: hello {seq} first, then every change, pings meanwhile",
            {
                "200": {
                    "description": "event: hello | change (id: seq, data: ChangeEvent)",
                    "content": {"text/event-stream": {"schema": STRING}},
                },
                "401": {"$ref": "#/components/responses/Unauthorized"},
            },
            tag="changes",
        ),
    },
    "/v1/snapshot": {
        "get": _op(
            "getSnapshot",
            "Every known state and the feed position it is consistent with",
            _responses(
                200,
                "Load this, then follow /v1/changes from seq (the first page's, when paged)",
                _closed(
                    seq=INTEGER,
                    states=_array(_ref("EntitlementSnapshot")),
                    next=_nullable(STRING),
                ),
                400,
            ),
            tag="changes",
            params=[
                _query("after", STRING, "cursor: the previous page's next"),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 5000},
                    "page size; without it, every state in one answer",
                ),
            ],
        ),
    },
    "/v1/catalog/reload": {
        "post": _op(
            "reloadCatalog",
            "Reload the catalog file and republish the states it changes",
            _responses(
                200,
                "Reloaded",
                _closed(reloaded={**BOOLEAN, "enum": [True]}, statesChanged=INTEGER),
                400,
            ),
            tag="operations",
        ),
    },
    "/v1/test-clock": {
        "get": _op(
            "getTestClock",
            "Upstream's time on the test clock (404 unless TEST_CLOCK_ENABLED=1)",
            _responses(200, "The test clock", _ref("TestClock"), 404),
            tag="operations",
        ),
    },
    "/v1/test-clock/advance": {
        "post": _op(
            "advanceTestClock",
            "Move upstream's time forward, then apply and publish everything that became due"
            " (404 unless TEST_CLOCK_ENABLED=1)",
            _responses(
                200,
                "Advanced; every change due at the new time is committed",
                _ref("TestClockAdvanced"),
                400,
                404,
                413,
            ),
            tag="operations",
            body=_body("TestClockAdvance"),
        ),
    },
}


def _error_response(description: str) -> Schema:
    return {"description": description, **_json(_ref("Error"))}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "upstream",
        "version": "1",
        "description": (
            "Reference entitlement backend: customers, subscriptions, promotions, credits,"
            " metering and the change feed. Request bodies are JSON objects of at most"
            f" {MAX_BODY_BYTES} bytes; every error is"
            ' {"error": {"code", "message", "field"?}}.'
        ),
    },
    "tags": [
        {"name": name}
        for name in (
            "customers",
            "subscriptions",
            "promotions",
            "credits",
            "metering",
            "changes",
            "operations",
        )
    ],
    "security": [{"ApiKey": []}],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}},
        "responses": {
            "BadRequest": _error_response(
                "Invalid request (INVALID_ARGUMENT, UNKNOWN_PLAN, UNKNOWN_ADDON, INVALID_CATALOG)"
            ),
            "Unauthorized": _error_response("Missing or wrong X-API-KEY (UNAUTHENTICATED)"),
            "NotFound": _error_response(
                "A referenced resource does not exist (NOT_FOUND), or the test clock is off"
                " (TEST_CLOCK_DISABLED)"
            ),
            "Conflict": _error_response("The id is taken (CONFLICT)"),
            "PayloadTooLarge": _error_response(
                f"Body larger than {MAX_BODY_BYTES} bytes (REQUEST_ENTITY_TOO_LARGE)"
            ),
        },
        "schemas": {
            "Error": ERROR,
            "Health": HEALTH,
            "Customer": CUSTOMER,
            "Subscription": SUBSCRIPTION,
            "Promotion": PROMOTION,
            "CreditGrant": CREDIT_GRANT,
            "CreditBalance": CREDIT_BALANCE,
            "LedgerEntry": LEDGER_ENTRY,
            "UsageRecord": USAGE_RECORD,
            "FeatureEntitlement": FEATURE_ENTITLEMENT,
            "CreditEntitlement": CREDIT_ENTITLEMENT,
            "EntitlementSnapshot": ENTITLEMENT_SNAPSHOT,
            "ChangeEvent": CHANGE_EVENT,
            "UsageResult": USAGE_RESULT,
            "CustomerCreate": CUSTOMER_CREATE,
            "CustomerSubscription": _subscription_request(with_customer=False),
            "CustomerUpdate": CUSTOMER_UPDATE,
            "SubscriptionCreate": _subscription_request(with_customer=True),
            "SubscriptionUpdate": SUBSCRIPTION_UPDATE,
            "SubscriptionCancel": SUBSCRIPTION_CANCEL,
            "PromotionCreate": PROMOTION_CREATE,
            "CreditGrantCreate": CREDIT_GRANT_CREATE,
            "UsageItem": USAGE_ITEM,
            "UsageReport": USAGE_REPORT,
            "Event": EVENT,
            "EventBatch": EVENT_BATCH,
            "TestClock": TEST_CLOCK,
            "TestClockAdvanced": TEST_CLOCK_ADVANCED,
            "TestClockAdvance": TEST_CLOCK_ADVANCE,
        },
    },
}

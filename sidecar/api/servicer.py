"""stigg.sidecar.v1.SidecarService over grpc.aio.

Each handler validates, asks the service for state, evaluates, converts. Reads
never fail because of the backend (they fall back); only malformed requests
and write-path failures surface as gRPC errors.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from entitlements.errors import (
    InvalidArgument,
    ResourceExhausted,
    SidecarError,
    SourceRejected,
    SourceUnavailable,
    SpoolUnavailable,
)
from entitlements.model.state import CustomerSnapshot, DenialReason
from sidecar.api import convert, validation
from sidecar.api.answers import Answers
from sidecar.api.validation import MalformedBody
from sidecar.evaluation.fallback import FallbackValues
from sidecar.evaluation.getters import (
    Kind,
    ListResult,
    Result,
    credit_entitlement,
    entitlement_list,
    feature_entitlement,
    typed_entitlement,
)
from sidecar.model.usage import UsageReport
from sidecar.observability import Metrics
from sidecar.pb import sidecar_pb2 as pb
from sidecar.service.entitlements import EntitlementService

log = structlog.get_logger("sidecar.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]
# What a single-feature answer is counted as: (is_fallback, has_access, denial reason).
Outcome = tuple[bool, bool, DenialReason | None]
# Answers written straight as bytes (sidecar/api/answers.py): None leaves the answer to
# evaluate() and build().
Fast = Callable[[CustomerSnapshot, datetime], tuple[bytes, Outcome] | None]


def status_for(exc: SidecarError) -> grpc.StatusCode:
    """The one place domain errors become gRPC status codes."""
    if isinstance(exc, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, SourceRejected):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, SourceUnavailable | SpoolUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, ResourceExhausted):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INTERNAL


def rpc(method: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Time the handler and turn domain errors into status codes."""

    def decorate(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(
            self: SidecarServicer, request: Req, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Resp:
            started = time.perf_counter()
            try:
                if isinstance(request, MalformedBody):
                    raise request.error()
                return await handler(self, request, context)
            except SidecarError as exc:
                if isinstance(exc, InvalidArgument):
                    self._metrics.invalid_requests.labels(method).inc()
                else:
                    log.warning("rpc_failed", method=method, error=str(exc))
                await context.abort(status_for(exc), str(exc))
                raise  # unreachable: abort raises
            except grpc.aio.AbortError:
                raise
            except Exception:
                # A bug of ours: the caller gets an id to quote, never a Python message.
                error_id = secrets.token_hex(8)
                log.exception("rpc_crashed", method=method, error_id=error_id)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error (error id {error_id})"
                )
                raise  # unreachable: abort raises
            finally:
                self._latency[method].observe(time.perf_counter() - started)

        return wrapper

    return decorate


METHODS = (
    "GetEntitlements",
    "GetEntitlement",
    "GetBooleanEntitlement",
    "GetNumericEntitlement",
    "GetMeteredEntitlement",
    "GetEnumEntitlement",
    "ReportUsage",
    "ReportEvents",
    "ReloadEntitlements",
    "ReportUsageBulk",
    "GetEntitlementV2",
    "GetEntitlementsStateV2",
)


def _deadline(context: Any) -> float | None:
    """The caller's deadline on the monotonic clock, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _opt(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _view_name(method: str, feature_id: str, options: Any, memo: tuple[object, ...]) -> str | None:
    """The memo key of a single-feature answer, or None when it must not be memoized.

    A request's own fallback changes the answer and is rarely sent twice alike, so such
    requests are always evaluated.
    """
    if options is not None and options.HasField("fallback"):
        return None
    return "\x00".join((method, feature_id, *map(repr, memo)))


def _fallback(options: Any) -> FallbackValues | None:
    if options is None or not options.HasField("fallback"):
        return None
    return convert.fallback_values(options.fallback)


class SidecarServicer:
    """Implements every RPC of ``stigg.sidecar.v1.SidecarService`` (see grpc_server)."""

    def __init__(
        self,
        service: EntitlementService,
        metrics: Metrics,
        fallbacks: Mapping[str, FallbackValues],
    ) -> None:
        self._service = service
        self._metrics = metrics
        self._fallbacks = fallbacks
        self._latency = {m: metrics.request_latency.labels(m) for m in METHODS}
        self._fallback_counters = {m: metrics.fallbacks.labels(m) for m in METHODS}
        self._answers = Answers()

    def _count(self, method: str, result: Result) -> None:
        self._count_outcome(method, (result.is_fallback, result.has_access, result.reason))

    def _count_outcome(self, method: str, outcome: Outcome) -> None:
        is_fallback, has_access, reason = outcome
        if is_fallback:
            self._fallback_counters[method].inc()
        if has_access:
            self._metrics.granted.inc()
        elif reason is not None:
            self._metrics.decisions[reason].inc()

    def _count_list(self, method: str, result: ListResult) -> None:
        if result.is_fallback:
            self._fallback_counters[method].inc()

    def _recall(
        self, method: str, snapshot: CustomerSnapshot | None, name: str | None
    ) -> bytes | None:
        """A single-feature answer memoized for this very snapshot, counted as if computed."""
        if snapshot is None or name is None:
            return None
        found = self._service.view_with_meta(snapshot, name)
        if found is None:
            return None
        data, outcome = found
        self._count_outcome(method, outcome)  # type: ignore[arg-type]
        return data

    def _answer(
        self,
        method: str,
        snapshot: CustomerSnapshot | None,
        name: str | None,
        evaluate: Callable[[datetime], Result],
        build: Callable[[Result], Message],
        fast: Fast | None = None,
    ) -> bytes:
        """A single-feature answer: memoized bytes, or evaluated, counted and memoized."""
        memoized = self._recall(method, snapshot, name)
        if memoized is not None:
            return memoized
        now = self._service.now()
        answered = fast(snapshot, now) if fast is not None and snapshot is not None else None
        if answered is not None:
            data, outcome = answered
            self._count_outcome(method, outcome)
        else:
            result = evaluate(now)
            self._count(method, result)
            data = build(result).SerializeToString()
            outcome = (result.is_fallback, result.has_access, result.reason)
        if snapshot is not None and name is not None:
            until = self._service.horizon(snapshot, now)
            self._service.remember_view(snapshot, name, data, until, outcome)
        return data

    async def _typed(
        self,
        method: str,
        request: Any,
        kind: Kind,
        build: Callable[[Result], Message],
        memo: tuple[object, ...] = (),
        fast: Fast | None = None,
        **extra: Any,
    ) -> bytes:
        """Evaluate one typed getter, memoized per cached snapshot and request parameters."""
        customer_id = validation.require_id(request.customer_id, "customer_id")
        feature_id = validation.require_id(request.feature_id, "feature_id")
        resource_id = validation.optional_id(_opt(request, "resource_id"), "resource_id")
        options = _opt(request, "options")
        snapshot = await self._service.snapshot(customer_id, resource_id)

        def evaluate(now: datetime) -> Result:
            return typed_entitlement(
                snapshot,
                kind,
                feature_id,
                now,
                request_fallback=_fallback(options),
                global_fallbacks=self._fallbacks,
                **extra,
            )

        name = _view_name(method, feature_id, options, memo)
        return self._answer(method, snapshot, name, evaluate, build, fast)

    @rpc("GetBooleanEntitlement")
    async def GetBooleanEntitlement(
        self, request: pb.GetBooleanEntitlementRequest, context: Any
    ) -> bytes:
        def build(result: Result) -> Message:
            return pb.GetBooleanEntitlementResponse(
                **convert.header(result), entitlement=convert.boolean(result)
            )

        return await self._typed("GetBooleanEntitlement", request, Kind.BOOLEAN, build)

    @rpc("GetNumericEntitlement")
    async def GetNumericEntitlement(
        self, request: pb.GetNumericEntitlementRequest, context: Any
    ) -> bytes:
        def build(result: Result) -> Message:
            return pb.GetNumericEntitlementResponse(
                **convert.header(result), entitlement=convert.numeric(result)
            )

        return await self._typed("GetNumericEntitlement", request, Kind.NUMERIC, build)

    @rpc("GetMeteredEntitlement")
    async def GetMeteredEntitlement(
        self, request: pb.GetMeteredEntitlementRequest, context: Any
    ) -> bytes:
        options = _opt(request, "options")
        requested = validation.requested_usage(
            _opt(options, "requested_usage") if options else None, "options.requested_usage"
        )

        def build(result: Result) -> Message:
            return pb.GetMeteredEntitlementResponse(
                **convert.header(result),
                requested_usage=requested,
                entitlement=convert.metered(result),
            )

        def fast(snapshot: CustomerSnapshot, now: datetime) -> tuple[bytes, Outcome] | None:
            return self._answers.metered(snapshot, request.feature_id, now, requested)

        return await self._typed(
            "GetMeteredEntitlement",
            request,
            Kind.METERED,
            build,
            (requested,),
            fast,
            requested_usage=requested,
        )

    @rpc("GetEnumEntitlement")
    async def GetEnumEntitlement(
        self, request: pb.GetEnumEntitlementRequest, context: Any
    ) -> bytes:
        options = _opt(request, "options")
        values = validation.requested_values(
            options.requested_values if options else (), "options.requested_values"
        )

        def build(result: Result) -> Message:
            return pb.GetEnumEntitlementResponse(
                **convert.header(result),
                requested_values=result.requested_values,
                entitlement=convert.enum(result),
            )

        return await self._typed(
            "GetEnumEntitlement", request, Kind.ENUM, build, tuple(values), requested_values=values
        )

    async def _unified(
        self,
        method: str,
        request: Any,
        feature_id: str,
        resource_id: str | None,
        v2: bool,
        build: Callable[[Result], Message],
    ) -> bytes:
        customer_id = validation.require_id(request.customer_id, "customer_id")
        options = _opt(request, "options")
        requested = validation.requested_usage(
            _opt(options, "requested_usage") if options else None, "options.requested_usage"
        )
        values = validation.requested_values(
            options.requested_values if options else (), "options.requested_values"
        )
        snapshot = await self._service.snapshot(customer_id, resource_id)

        def evaluate(now: datetime) -> Result:
            return feature_entitlement(
                snapshot,
                feature_id,
                now,
                requested_usage=requested,
                requested_values=values,
                request_fallback=_fallback(options),
                global_fallbacks=self._fallbacks,
                v2=v2,
            )

        name = _view_name(method, feature_id, options, (requested, *values))
        return self._answer(method, snapshot, name, evaluate, build)

    @rpc("GetEntitlement")
    async def GetEntitlement(self, request: pb.GetEntitlementRequest, context: Any) -> bytes:
        feature_id = validation.require_id(request.feature_id, "feature_id")
        resource_id = validation.optional_id(_opt(request, "resource_id"), "resource_id")

        def build(result: Result) -> Message:
            return pb.GetEntitlementResponse(**convert.header(result), **convert.variant(result))

        return await self._unified("GetEntitlement", request, feature_id, resource_id, False, build)

    @rpc("GetEntitlementV2")
    async def GetEntitlementV2(
        self, request: pb.GetEntitlementV2Request, context: Any
    ) -> bytes | pb.GetEntitlementV2Response:
        feature_id = _opt(request, "feature_id")
        currency_id = _opt(request, "currency_id")
        validation.exactly_one(feature_id, currency_id)
        resource_id = validation.optional_id(_opt(request, "resource_id"), "resource_id")
        if feature_id:
            validation.require_id(feature_id, "feature_id")

            def build(result: Result) -> Message:
                return pb.GetEntitlementV2Response(entitlement=convert.entitlement_v2(result))

            return await self._unified(
                "GetEntitlementV2", request, feature_id, resource_id, True, build
            )
        result = await self._credit(request, validation.require_id(currency_id, "currency_id"))
        return pb.GetEntitlementV2Response(entitlement=convert.entitlement_v2(result))

    async def _credit(self, request: pb.GetEntitlementV2Request, currency_id: str) -> Result:
        customer_id = validation.require_id(request.customer_id, "customer_id")
        resource_id = validation.optional_id(_opt(request, "resource_id"), "resource_id")
        options = _opt(request, "options")
        requested = validation.requested_usage(
            _opt(options, "requested_usage") if options else None, "options.requested_usage"
        )
        snapshot = await self._service.snapshot(customer_id, resource_id)
        result = credit_entitlement(
            snapshot, currency_id, requested_usage=requested, request_fallback=_fallback(options)
        )
        self._count("GetEntitlementV2", result)
        return result

    async def _list(self, method: str, request: Any, include_credits: bool) -> bytes:
        """The serialized list, memoized per cached snapshot until time could change it."""
        customer_id = validation.require_id(request.customer_id, "customer_id")
        resource_id = validation.optional_id(_opt(request, "resource_id"), "resource_id")
        snapshot = await self._service.snapshot(customer_id, resource_id)
        if snapshot is not None:
            memoized = self._service.view(snapshot, method)
            if memoized is not None:
                return memoized
        now = self._service.now()
        if snapshot is not None:
            # Evaluated from the state, never a fallback: nothing to count.
            data = self._answers.entitlement_list(snapshot, now, v2=include_credits)
        else:
            result = entitlement_list(
                snapshot, now, include_credits=include_credits, global_fallbacks=self._fallbacks
            )
            self._count_list(method, result)
            build = convert.list_v2 if include_credits else convert.list_v1
            data = build(result).SerializeToString()
        if snapshot is not None:
            self._service.remember_view(
                snapshot, method, data, self._service.horizon(snapshot, now)
            )
        return data

    @rpc("GetEntitlements")
    async def GetEntitlements(self, request: pb.GetEntitlementsRequest, context: Any) -> bytes:
        return await self._list("GetEntitlements", request, False)

    @rpc("GetEntitlementsStateV2")
    async def GetEntitlementsStateV2(
        self, request: pb.GetEntitlementsStateV2Request, context: Any
    ) -> bytes:
        return await self._list("GetEntitlementsStateV2", request, True)

    # ------------------------------------------------------------------ writes

    @staticmethod
    def _usage(request: pb.ReportUsageRequest, prefix: str = "") -> UsageReport:
        """The report of a valid request; an invalid one raises naming ``prefix`` + its field."""
        try:
            validation.require_id(request.customer_id, "customer_id")
            validation.require_id(request.feature_id, "feature_id")
            # Unset reads as "", which these treat as absent too.
            validation.optional_id(request.resource_id, "resource_id")
            is_set = request.update_behavior == pb.USAGE_UPDATE_BEHAVIOR_SET
            validation.usage_value(request.value, is_set, "value")
            validation.timestamp(request, "timestamp")
            validation.optional_id(request.idempotency_key, "idempotency_key")
        except InvalidArgument as exc:
            if not prefix:
                raise
            # Named only on failure: formatting every field name of every report costs.
            raise InvalidArgument(prefix + exc.field, exc.problem) from None
        return convert.usage_report(request)

    @rpc("ReportUsage")
    async def ReportUsage(
        self, request: pb.ReportUsageRequest, context: Any
    ) -> pb.ReportUsageResponse:
        acks = await self._service.report_usage([self._usage(request)], deadline=_deadline(context))
        return convert.usage_response(acks[0])

    @rpc("ReportUsageBulk")
    async def ReportUsageBulk(
        self, request: pb.ReportUsageBulkRequest, context: Any
    ) -> pb.ReportUsageBulkResponse:
        validation.batch_size(len(request.usages), validation.MAX_USAGE_BATCH, "usages")
        reports = [self._usage(u, f"usages[{i}].") for i, u in enumerate(request.usages)]
        acks = (
            await self._service.report_usage(reports, deadline=_deadline(context))
            if reports
            else []
        )
        return pb.ReportUsageBulkResponse(usages=[convert.usage_response(a) for a in acks])

    @rpc("ReportEvents")
    async def ReportEvents(self, request: pb.ReportEventsRequest, context: Any) -> Empty:
        validation.batch_size(len(request.events), validation.MAX_EVENT_BATCH, "events")
        for i, event in enumerate(request.events):
            validation.require_id(event.event_name, f"events[{i}].event_name")
            validation.require_id(event.customer_id, f"events[{i}].customer_id")
            validation.require_id(event.idempotency_key, f"events[{i}].idempotency_key")
            validation.optional_id(_opt(event, "resource_id"), f"events[{i}].resource_id")
            validation.timestamp(event, f"events[{i}].timestamp")
        if request.events:
            await self._service.report_events([convert.raw_event(e) for e in request.events])
        return Empty()

    @rpc("ReloadEntitlements")
    async def ReloadEntitlements(
        self, request: pb.ReloadEntitlementsRequest, context: Any
    ) -> pb.ReloadEntitlementsResponse:
        customer_id = validation.require_id(request.customer_id, "customer_id")
        resource_id = validation.optional_id(_opt(request, "resource_id"), "resource_id")
        exists = await self._service.reload(customer_id, resource_id)
        return pb.ReloadEntitlementsResponse(entitled_entity_exists=exists)

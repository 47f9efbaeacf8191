"""The entitlement source backed by upstream's HTTP API.

Reads, writes and the change stream are plain HTTP: JSON request/response for
``fetch``, ``report_usage`` and ``report_events``; Server-Sent Events for
``changes``. Every aiohttp error is translated here, at the edge, into
:class:`SourceUnavailable` (transient) or :class:`SourceRejected` (4xx), so
nothing above this module knows HTTP exists.

Retries differ per call because their safety differs:

* ``fetch`` is a read, and ``report_events`` carries idempotency keys, so both
  are retried on any transport failure and on 429/502/503/504.
* ``report_usage`` with an idempotency key on every report (the service adds one
  when the caller did not) is safe to send again: upstream counts a key once and
  answers a repeat with the first acknowledgement. It is retried on any transport
  failure (a read timeout or a reset may come after upstream applied it) and on
  429 and every 5xx, within the caller's deadline.
* ``report_usage`` without keys is not idempotent: a DELTA applied twice
  double-counts. It is retried only when the request provably never left this
  process (the connection was refused or could not be established in time).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import structlog
import yarl

from entitlements.errors import (
    InvalidApiKey,
    InvalidArgument,
    SourceError,
    SourceRejected,
    SourceUnavailable,
)
from entitlements.model.events import ChangeEvent, EventKind, decode_event_dict
from entitlements.model.state import (
    CustomerSnapshot,
    JsonReader,
    StateDecodeError,
    decode_snapshot_dict,
    decode_usage_dict,
    epoch_ms,
    load_json,
)
from sidecar.model.usage import CreditAck, DimensionValue, RawEvent, UsageAck, UsageReport
from sidecar.source.base import (
    Change,
    CustomerRemoved,
    Resumed,
    Resync,
    SnapshotChanged,
    UsageChanged,
)
from sidecar.source.sse import SseError, SseEvent, SseParser

log = structlog.get_logger("sidecar.source.http")

_T = TypeVar("_T")

#: Statuses that say "not now" rather than "no": another attempt may succeed.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Replaying missed changes after a reconnect: pages of this many, at most this many pages.
#: Past that, revalidating what is held on demand is cheaper than catching up on everything.
REPLAY_PAGE_SIZE = 1000
MAX_REPLAY_PAGES = 20
#: Upstream sends a ``: ping`` comment every 15 s; three missed pings mean the stream is dead.
STREAM_READ_TIMEOUT = 45.0
# Pooled connections are dropped before any common server idle timeout (uvicorn: 5 s)
# closes them under us: a POST on a half-closed connection fails in a way that is
# indistinguishable from a lost reply, and usage reports cannot be retried then.
_KEEPALIVE_SECONDS = 4.0
_POOL_SIZE = 100
# Left of the caller's deadline for our answer to reach it, and the shortest attempt worth
# starting: a call that cannot finish before the deadline only adds load.
_DEADLINE_MARGIN = 0.05
_MIN_ATTEMPT_SECONDS = 0.05


class _RetryableFailure(Exception):
    """One attempt failed in a way another attempt might not."""

    def __init__(self, message: str, *, delivered: bool, retry_after: float | None = None):
        super().__init__(message)
        # False only when the request provably never reached upstream.
        self.delivered = delivered
        self.retry_after = retry_after


class HttpUpstreamSource:
    """:class:`~sidecar.source.base.EntitlementSource` over upstream's HTTP API."""

    def __init__(
        self,
        *,
        api_url: str,
        api_key: str,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        retries: int = 3,
        backoff_base: float = 0.1,
        backoff_max: float = 2.0,
        stream: bool = True,
        stream_read_timeout: float = STREAM_READ_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
        on_usage_retry: Callable[[], None] | None = None,
    ) -> None:
        self._base = _parse_base_url(api_url)
        self._on_usage_retry = on_usage_retry
        for name, value in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
            ("stream_read_timeout", stream_read_timeout),
        ):
            _require_positive(name, value)
        if not api_key:
            raise ValueError("api_key must not be empty")
        if retries < 0:
            raise ValueError(f"retries must not be negative, got {retries}")
        self._headers = {"X-API-KEY": api_key, "Accept": "application/json"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._usage_url = self._url(("v1", "usage"))
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        # No total timeout: the stream is meant to stay open; silence is what kills it.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=stream_read_timeout
        )
        self._retries = retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._stream = stream
        self._session = session
        self._owns_session = session is None
        self._closed = asyncio.Event()
        self._random = random.Random()
        #: Change events that could not be decoded and were skipped.
        self.invalid_events = 0
        #: Position of the last change (or hello) received on the stream.
        self.last_seq: int | None = None
        #: Usage reports sent again after a transient failure (their keys make that safe).
        self.usage_retries = 0

    # ------------------------------------------------------------------ reads

    async def reload(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        # Upstream is the source of truth; there is no cache in front of it to skip.
        return await self.fetch(customer_id, resource_id)

    async def fetch(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        query = None if resource_id is None else {"resourceId": resource_id}
        url = self._url(("v1", "customers", customer_id, "entitlements"), query)
        payload = await self._call("GET", url, idempotent=True)
        snapshot = _decode("fetch", payload, decode_snapshot_dict)
        state = snapshot.state
        if (state.customer_id, state.resource_id) != (customer_id, resource_id or None):
            # Caching another key's state would answer for the wrong customer.
            _log_invalid("fetch", f"state is for {state.customer_id!r}/{state.resource_id!r}")
            raise SourceUnavailable("invalid payload: state for another customer or resource")
        return snapshot

    # ----------------------------------------------------------------- writes

    async def report_usage(
        self, reports: Sequence[UsageReport], *, deadline: float | None = None
    ) -> list[UsageAck]:
        """Forward usage; acks come back in request order.

        An answer that cannot be read raises SourceUnavailable although upstream has
        most likely applied the reports: an ack we cannot match to its report must not
        be written to the cache, and there is nothing better to return.
        """
        if not reports:
            return []
        body = _encode_usages(reports)
        keyed = all(r.idempotency_key for r in reports)
        payload = await self._call(
            "POST",
            self._usage_url,
            body=body,
            idempotent=keyed,
            # Upstream's 500 may be a failure after the commit; with keys a repeat is harmless.
            retry_server_errors=keyed,
            deadline=deadline,
            on_retry=self._count_usage_retry,
        )
        return _decode("report_usage", payload, lambda data: _decode_acks(data, reports))

    def _count_usage_retry(self) -> None:
        self.usage_retries += 1
        if self._on_usage_retry is not None:
            self._on_usage_retry()

    async def report_events(self, events: Sequence[RawEvent]) -> None:
        if not events:
            return
        body = _dumps({"events": [_encode_event(e) for e in events]}, "events")
        await self._call("POST", self._url(("v1", "events")), body=body, idempotent=True)

    # ---------------------------------------------------------------- changes

    async def changes(self) -> AsyncIterator[Change]:
        if not self._stream:
            # Without the push channel nothing tells us when upstream changes, so the
            # cache cannot be kept coherent: it only ever holds what a read fetched.
            # One Resync still marks the service synced so it starts serving.
            yield Resync()
            await self._closed.wait()
            return
        async with self._open_stream() as response:
            parser = SseParser()
            hello_seen = False
            while True:
                for event in _parse(parser, await _read_chunk(response)):
                    if event.event == "hello":
                        hello_seen = True
                        async for caught_up in self._catch_up(event.data):
                            yield caught_up
                        continue
                    change = self._to_change(event, hello_seen)
                    if change is not None:
                        yield change

    async def _catch_up(self, hello: str) -> AsyncIterator[Change]:
        """On (re)connecting: replay what was missed since the last position, if we can.

        The stream only carries what is committed after its hello; upstream's durable log has
        the rest. Replaying (last seen, hello] makes a reconnect lossless, so nothing held has
        to be distrusted. A first connection, or a replay that fails or is too long, yields
        Resync instead: what is held is then revalidated before it is trusted.
        """
        previous = self.last_seq
        self._note_hello(hello)
        head = self.last_seq
        if previous is None or head is None or previous > head:
            yield Resync()
            return
        try:
            replayed = await self._replay(previous, head)
        except SourceError as exc:
            log.warning("change_stream_replay_failed", after=previous, head=head, error=str(exc))
            replayed = None
        if replayed is None:
            yield Resync()
            return
        for change in replayed:
            yield change
        log.info("change_stream_resumed", after=previous, head=head, replayed=len(replayed))
        yield Resumed()

    async def _replay(self, after: int, head: int) -> list[Change] | None:
        """The changes in (after, head] from ``GET /v1/changes``; None when too many."""
        changes: list[Change] = []
        cursor = after
        for _ in range(MAX_REPLAY_PAGES):
            if cursor >= head:
                return changes
            url = self._url(
                ("v1", "changes"), {"after": str(cursor), "limit": str(REPLAY_PAGE_SIZE)}
            )
            page = _decode("replay", await self._call("GET", url, idempotent=True), _decode_page)
            for event in page.events:
                if event.seq <= head:
                    changes.append(_change_for(event))
            if page.next <= cursor:
                return changes  # nothing more in the log: it ends before head
            cursor = page.next
        return None if cursor < head else changes

    def _to_change(self, event: SseEvent, hello_seen: bool) -> Change | None:
        if event.event != "change":
            # Unknown event types are reserved for future use: skipping them is safe.
            return None
        if not hello_seen:
            raise SourceUnavailable("change stream protocol error: change before hello")
        try:
            decoded = decode_event_dict(load_json(event.data))
        except StateDecodeError as exc:
            self.invalid_events += 1
            log.warning("change_event_invalid", error=str(exc), invalid=self.invalid_events)
            return None
        self.last_seq = decoded.seq
        return _change_for(decoded)

    def _note_hello(self, data: str) -> None:
        try:
            seq = JsonReader(load_json(data), "$hello").int_("seq", default=-1)
        except StateDecodeError:
            seq = -1
        self.last_seq = seq if seq >= 0 else None
        log.info("change_stream_connected", seq=self.last_seq)

    @asynccontextmanager
    async def _open_stream(self) -> AsyncIterator[aiohttp.ClientResponse]:
        url = self._url(("v1", "changes", "stream"))
        headers = {**self._headers, "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        try:
            response = await self._client().get(
                url,
                headers=headers,
                timeout=self._stream_timeout,
                allow_redirects=False,
                raise_for_status=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceUnavailable(f"change stream: cannot connect: {exc!r}") from exc
        try:
            await _check_stream_response(response)
            yield response
        finally:
            # A half-read stream must not go back to the pool.
            response.close()

    # ------------------------------------------------------------------ HTTP

    def _client(self) -> aiohttp.ClientSession:
        if self._closed.is_set():
            raise SourceUnavailable("source is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=_POOL_SIZE, keepalive_timeout=_KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _url(self, segments: Sequence[str], query: Mapping[str, str] | None = None) -> yarl.URL:
        path = self._base.raw_path.rstrip("/") + "/" + "/".join(map(_quote_segment, segments))
        # Built pre-encoded so no layer re-quotes (or decodes) what we escaped.
        query_string = "&".join(f"{k}={quote(v, safe='')}" for k, v in (query or {}).items())
        return yarl.URL.build(
            scheme=self._base.scheme,
            authority=self._base.raw_authority,
            path=path,
            query_string=query_string,
            encoded=True,
        )

    async def _call(
        self,
        method: str,
        url: yarl.URL,
        *,
        idempotent: bool,
        body: bytes | None = None,
        retry_server_errors: bool = False,
        deadline: float | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> bytes:
        """One logical request's 2xx body: attempts, with backoff, while retrying is safe.

        ``deadline`` (monotonic clock) caps every attempt and every pause: no attempt is
        started or waited for past it, so the caller gets our answer before its own deadline.
        """
        attempt = 0
        while True:
            limits = self._attempt_timeout(deadline)
            if limits is None:
                raise SourceUnavailable("upstream: no time left before the caller's deadline")
            try:
                return await self._attempt(method, url, body, limits, retry_server_errors)
            except _RetryableFailure as failure:
                if attempt >= self._retries or (failure.delivered and not idempotent):
                    raise SourceUnavailable(str(failure)) from failure
                delay = self._backoff(attempt, failure.retry_after)
                if deadline is not None and time.monotonic() + delay >= deadline - _DEADLINE_MARGIN:
                    raise SourceUnavailable(str(failure)) from failure
            log.debug("upstream_retry", method=method, attempt=attempt + 1, delay=delay)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
            attempt += 1

    def _attempt_timeout(self, deadline: float | None) -> aiohttp.ClientTimeout | None:
        """This attempt's timeout: the configured one, cut to what is left before ``deadline``;
        None when nothing useful is left."""
        if deadline is None:
            return self._timeout
        left = deadline - time.monotonic() - _DEADLINE_MARGIN
        if left <= _MIN_ATTEMPT_SECONDS:
            return None
        total = self._timeout.total
        if total is not None and total <= left:
            return self._timeout
        connect = self._timeout.connect
        return aiohttp.ClientTimeout(
            total=left, connect=None if connect is None else min(connect, left)
        )

    async def _attempt(
        self,
        method: str,
        url: yarl.URL,
        body: bytes | None,
        limits: aiohttp.ClientTimeout,
        retry_server_errors: bool = False,
    ) -> bytes:
        try:
            async with self._client().request(
                method,
                url,
                data=body,
                headers=self._headers if body is None else self._json_headers,
                timeout=limits,
                # Redirects would replay the API key to wherever they point.
                allow_redirects=False,
                raise_for_status=False,
            ) as response:
                payload = await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _RetryableFailure(f"cannot connect to upstream: {exc}", delivered=False) from exc
        except TimeoutError as exc:
            raise _RetryableFailure("upstream timed out", delivered=True) from exc
        except aiohttp.ClientError as exc:
            raise _RetryableFailure(f"upstream request failed: {exc!r}", delivered=True) from exc
        _check_status(response, payload, retry_server_errors)
        return payload

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, or the server's wish; never over the cap."""
        # The exponent is bounded so a long retry budget cannot overflow the float.
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(attempt, 32))
        delay = self._random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        # A caller is usually waiting on this read: a long Retry-After is not worth it.
        return min(delay, self._backoff_max)

    async def aclose(self) -> None:
        self._closed.set()
        if self._owns_session and self._session is not None:
            await self._session.close()


# ------------------------------------------------------------------- responses


def _check_status(
    response: aiohttp.ClientResponse, payload: bytes, retry_server_errors: bool = False
) -> None:
    """Raise what a non-2xx status means; return quietly on success."""
    status = response.status
    if 200 <= status < 300:
        return
    if status in (401, 403):
        raise InvalidApiKey(f"invalid API key (upstream answered {status})")
    message = _error_message(payload) or f"{status} {response.reason or ''}".strip()
    if status in RETRYABLE_STATUSES or (retry_server_errors and status >= 500):
        raise _RetryableFailure(
            f"upstream answered {status}: {message}",
            delivered=True,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise SourceUnavailable(f"upstream answered {status}: {message}")
    raise SourceRejected(message)


async def _check_stream_response(response: aiohttp.ClientResponse) -> None:
    if response.status != 200:
        try:
            payload = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            payload = b""
        try:
            _check_status(response, payload)
        except _RetryableFailure as failure:
            raise SourceUnavailable(f"change stream: {failure}") from failure
        raise SourceUnavailable(f"change stream: unexpected status {response.status}")
    if response.content_type != "text/event-stream":
        raise SourceUnavailable(f"change stream: unexpected content type {response.content_type}")


def _error_message(payload: bytes) -> str | None:
    """The message of upstream's ``{"error": {"code", "message"}}`` body, if that is the body."""
    try:
        error = JsonReader(load_json(payload), "$").child("error")
        return error.str_("message") if error is not None else None
    except StateDecodeError:
        return None


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form: an HTTP date would trust the two clocks to agree.
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


async def _read_chunk(response: aiohttp.ClientResponse) -> bytes:
    try:
        chunk = await response.content.readany()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SourceUnavailable(f"change stream lost: {exc!r}") from exc
    if not chunk:
        raise SourceUnavailable("change stream closed by upstream")
    return chunk


def _parse(parser: SseParser, chunk: bytes) -> list[SseEvent]:
    try:
        return parser.feed(chunk)
    except SseError as exc:
        raise SourceUnavailable(f"change stream: {exc}") from exc


def _decode(what: str, payload: bytes, decoder: Callable[[object], _T]) -> _T:
    """Decode a 2xx body; a body that fails validation never reaches a caller."""
    try:
        return decoder(load_json(payload))
    except StateDecodeError as exc:
        _log_invalid(what, str(exc))
        raise SourceUnavailable(f"invalid payload: {exc}") from exc


def _log_invalid(what: str, error: str) -> None:
    log.warning("upstream_invalid_payload", call=what, error=error)


# ------------------------------------------------------------------- encoding


def _parse_base_url(api_url: str) -> yarl.URL:
    url = yarl.URL(api_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"api_url must be an absolute http(s) URL, got {api_url!r}")
    return url


def _require_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _quote_segment(segment: str) -> str:
    # quote() leaves dots alone, and a "." or ".." segment would be resolved away
    # as a relative path by every server and proxy on the way.
    if segment in (".", ".."):
        return segment.replace(".", "%2E")
    return quote(segment, safe="")


# What json.dumps(body, separators=(",", ":"), allow_nan=False) would build per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# A str as json writes it (ensure_ascii).
_json_string = encode_basestring_ascii


def _dumps(body: Mapping[str, Any], field: str) -> bytes:
    try:
        return _ENCODER.encode(body).encode()
    except ValueError as exc:
        raise InvalidArgument(field, "numbers must be finite") from exc


def _encode_usages(reports: Sequence[UsageReport]) -> bytes:
    """The ``POST /v1/usage`` body: what ``_dumps({"usages": [_encode_usage(r), ...]})`` writes,
    byte for byte, with the usual report (a float value, no dimensions) formatted directly;
    building and encoding the dicts cost several times as much."""
    try:
        items = ",".join([_usage_json(r) for r in reports])
    except ValueError as exc:
        raise InvalidArgument("usages", "numbers must be finite") from exc
    return ('{"usages":[' + items + "]}").encode()


def _usage_json(report: UsageReport) -> str:
    value = report.value
    if type(value) is not float or not math.isfinite(value) or report.dimensions:
        # Anything else as json writes it (a non-finite number raises ValueError there).
        return _ENCODER.encode(_encode_usage(report))
    text = (
        '{"customerId":'
        + _json_string(report.customer_id)
        + ',"featureId":'
        + _json_string(report.feature_id)
        + ',"value":'
        + repr(value)
        + ',"updateBehavior":'
        + _json_string(report.behavior.value)
    )
    if report.resource_id is not None:
        text += ',"resourceId":' + _json_string(report.resource_id)
    if report.timestamp is not None:
        text += ',"timestamp":' + str(epoch_ms(report.timestamp))
    if report.idempotency_key is not None:
        text += ',"idempotencyKey":' + _json_string(report.idempotency_key)
    return text + "}"


def _encode_usage(report: UsageReport) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customerId": report.customer_id,
        "featureId": report.feature_id,
        "value": report.value,
        "updateBehavior": report.behavior.value,
    }
    _put_optional(body, report.resource_id, report.dimensions, report.timestamp)
    if report.idempotency_key is not None:
        body["idempotencyKey"] = report.idempotency_key
    return body


def _encode_event(event: RawEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventName": event.event_name,
        "customerId": event.customer_id,
        "idempotencyKey": event.idempotency_key,
    }
    _put_optional(body, event.resource_id, event.dimensions, event.timestamp)
    return body


def _put_optional(
    body: dict[str, Any],
    resource_id: str | None,
    dimensions: Mapping[str, DimensionValue],
    timestamp: datetime | None,
) -> None:
    if resource_id is not None:
        body["resourceId"] = resource_id
    if dimensions:
        body["dimensions"] = dict(dimensions)
    if timestamp is not None:
        body["timestamp"] = epoch_ms(timestamp)


def _decode_acks(data: object, reports: Sequence[UsageReport]) -> list[UsageAck]:
    plain = _plain_acks(data, reports)
    return plain if plain is not None else _checked_acks(data, reports)


def _checked_acks(data: object, reports: Sequence[UsageReport]) -> list[UsageAck]:
    results = JsonReader(data, "$").items("results")
    if len(results) != len(reports):
        raise StateDecodeError("$.results", f"expected {len(reports)} results, got {len(results)}")
    acks = [_decode_ack(item, f"$.results[{i}]") for i, item in enumerate(results)]
    for i, (ack, report) in enumerate(zip(acks, reports, strict=True)):
        if (ack.customer_id, ack.feature_id, ack.resource_id) != (
            report.customer_id,
            report.feature_id,
            report.resource_id,
        ):
            # Acks are matched to reports by position; a mismatch would write usage to the
            # wrong cache entry.
            raise StateDecodeError(f"$.results[{i}]", "does not match the report at its position")
    return acks


def _plain_acks(data: object, reports: Sequence[UsageReport]) -> list[UsageAck] | None:
    """The acks ``_checked_acks`` decodes from an answer it accepts, checked alike but without
    a reader and a path per field (every usage report's answer is decoded); None when anything
    is off, for ``_checked_acks`` to name it."""
    if type(data) is not dict:
        return None
    results = data.get("results")
    if type(results) is not list or len(results) != len(reports):
        return None
    acks = []
    for item, report in zip(results, reports, strict=True):
        if type(item) is not dict:
            return None
        measurement_id = item.get("measurementId")
        customer_id = item.get("customerId")
        feature_id = item.get("featureId")
        resource_id = item.get("resourceId")
        if resource_id == "":
            resource_id = None
        if (
            type(measurement_id) is not str
            or type(customer_id) is not str
            or type(feature_id) is not str
            or (resource_id is not None and type(resource_id) is not str)
            or not (measurement_id and customer_id and feature_id)
            or (customer_id, feature_id, resource_id)
            != (report.customer_id, report.feature_id, report.resource_id)
        ):
            return None
        usage = item.get("usage")
        credit = item.get("credit")
        try:
            acks.append(
                UsageAck(
                    measurement_id,
                    customer_id,
                    feature_id,
                    resource_id,
                    None if usage is None else decode_usage_dict(usage, "$.results[].usage"),
                    None if credit is None else _decode_credit_ack(JsonReader(credit, "$")),
                )
            )
        except StateDecodeError:
            return None
    return acks


def _decode_ack(item: object, path: str) -> UsageAck:
    reader = JsonReader(item, path)
    usage = reader.raw("usage", False)
    credit = reader.child("credit")
    return UsageAck(
        measurement_id=reader.req_str("measurementId"),
        customer_id=reader.req_str("customerId"),
        feature_id=reader.req_str("featureId"),
        resource_id=reader.str_("resourceId") or None,
        usage=None if usage is None else decode_usage_dict(usage, f"{path}.usage"),
        credit=None if credit is None else _decode_credit_ack(credit),
    )


def _decode_credit_ack(reader: JsonReader) -> CreditAck:
    granted = reader.num("granted", required=True)
    consumed = reader.num("consumed", required=True)
    assert granted is not None
    assert consumed is not None
    return CreditAck(
        currency_id=reader.req_str("currencyId"),
        granted=granted,
        record=decode_usage_dict(reader.raw("usage", True), f"{reader.path}.usage"),
        consumed=consumed,
    )


@dataclass(frozen=True, slots=True)
class _ChangePage:
    events: list[ChangeEvent]
    next: int


def _decode_page(data: object) -> _ChangePage:
    reader = JsonReader(data, "$")
    events = [decode_event_dict(item) for item in reader.items("events")]
    next_cursor = reader.int_("next")
    return _ChangePage(events, next_cursor)


def _change_for(event: ChangeEvent) -> Change:
    if event.kind is EventKind.ENTITLEMENTS:
        assert event.snapshot is not None
        return SnapshotChanged(event.snapshot)
    if event.kind is EventKind.USAGE:
        assert event.usage is not None
        return UsageChanged(
            event.customer_id, event.resource_id, event.feature_id, event.currency_id, event.usage
        )
    return CustomerRemoved(event.customer_id, event.resource_id)

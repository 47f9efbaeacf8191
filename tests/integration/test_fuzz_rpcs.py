"""Fuzz every RPC: whatever a client sends, the answer is OK or a status that names the
problem (INVALID_ARGUMENT, or FAILED_PRECONDITION from the source), never UNKNOWN or INTERNAL.

Two generators per RPC: well-formed messages with hostile field values (built from the
message descriptor, so a new field is fuzzed without touching this file), and raw bytes.
The sidecar runs on its own event loop in a thread so Hypothesis can drive it synchronously.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.api.grpc_server import SERVICE
from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import AsyncStub, make_settings

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    # The in-memory source refuses some reports (an unknown customer, say), as upstream would.
    grpc.StatusCode.FAILED_PRECONDITION,
}
METHODS = [m.name for m in SERVICE.methods]
FIELD = FieldDescriptor

# Values that broke handlers before, plus the edges of every scalar type.
TIMESTAMP_SECONDS = st.one_of(
    st.sampled_from([253402300800, 253402300799, 10**15, -62135596801, -62135596800, 0]),
    st.integers(-(2**63), 2**63 - 1),
)
IDS = st.one_of(
    st.sampled_from(["", "cust-1", "api-calls", "sso", "seats", "x" * 300]),
    st.text(max_size=20),
)
DOUBLES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0]))


def scalar(field: Any) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FIELD.TYPE_STRING:
        return IDS
    if kind == FIELD.TYPE_BYTES:
        return st.binary(max_size=16)
    if kind == FIELD.TYPE_BOOL:
        return st.booleans()
    if kind in (FIELD.TYPE_DOUBLE, FIELD.TYPE_FLOAT):
        return DOUBLES if kind == FIELD.TYPE_DOUBLE else st.floats(width=32)
    if kind == FIELD.TYPE_ENUM:
        # Unknown enum numbers are legal on the wire (open enums).
        return st.integers(-3, max(v.number for v in field.enum_type.values) + 3)
    if kind in (FIELD.TYPE_INT32, FIELD.TYPE_SINT32, FIELD.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if kind in (FIELD.TYPE_UINT32, FIELD.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if kind in (FIELD.TYPE_UINT64, FIELD.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    return st.integers(-(2**63), 2**63 - 1)


def message_dict(descriptor: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for the message, each field present or not."""
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.fixed_dictionaries(
            {"seconds": TIMESTAMP_SECONDS, "nanos": st.integers(-(2**31), 2**31 - 1)}
        )
    optional: dict[str, st.SearchStrategy[Any]] = {}
    # Descriptor objects are typed loosely (Any): their stubs mark most attributes optional.
    for field in descriptor.fields:
        if field.type == FIELD.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                values = (
                    message_dict(value_field.message_type, depth + 1)
                    if value_field.type == FIELD.TYPE_MESSAGE
                    else scalar(value_field)
                )
                optional[field.name] = st.dictionaries(IDS, values, max_size=3)
                continue
            inner = message_dict(field.message_type, depth + 1)
            if field.is_repeated:
                optional[field.name] = st.lists(inner, max_size=3)
            else:
                optional[field.name] = inner
        elif field.is_repeated:
            optional[field.name] = st.lists(scalar(field), max_size=3)
        else:
            optional[field.name] = scalar(field)
    return st.fixed_dictionaries({}, optional=optional)


def build(descriptor: Any, fields: dict[str, Any]) -> Message:
    message: Message = GetMessageClass(descriptor)()
    _fill(message, fields)
    return message


def _fill(message: Any, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.type == FIELD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, dict):
                    _fill(target[key], item)
                else:
                    target[key] = item
        elif field.type == FIELD.TYPE_MESSAGE and field.is_repeated:
            for item in value:
                _fill(target.add(), item)
        elif field.type == FIELD.TYPE_MESSAGE:
            target.SetInParent()
            _fill(target, value)
        elif field.is_repeated:
            target.extend(value)
        elif field.containing_oneof is not None and name != field.containing_oneof.name:
            setattr(message, name, value)
        else:
            setattr(message, name, value)


class ThreadedSidecar:
    """A sidecar on an event loop of its own, so synchronous tests can call it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    @staticmethod
    async def _start() -> Sidecar:
        # grpc.aio binds a server to the loop it is created on: build it on ours.
        source = InMemorySource()
        source.put(demo_snapshot("cust-1"))
        app = Sidecar(make_settings(), source)
        await app.start()
        return app

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    running = ThreadedSidecar()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.app.grpc_port}") as open_channel:
            yield open_channel
    finally:
        running.close()


def call_raw(channel: grpc.Channel, method: str, body: bytes) -> grpc.StatusCode:
    invoke = channel.unary_unary(
        f"/{SERVICE.full_name}/{method}",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    code, details = grpc.StatusCode.OK, ""
    try:
        invoke(body, timeout=10)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    assert code in ALLOWED, f"{method}: {code} {details}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert details, "INVALID_ARGUMENT without a message"
    return code


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("method", METHODS)
def test_hostile_field_values_never_get_unknown_or_internal(
    channel: grpc.Channel, method: str
) -> None:
    descriptor = SERVICE.methods_by_name[method].input_type

    @FUZZ
    @given(fields=message_dict(descriptor))
    def check(fields: dict[str, Any]) -> None:
        call_raw(channel, method, build(descriptor, fields).SerializeToString())

    check()


@pytest.mark.parametrize("method", METHODS)
def test_raw_bytes_never_get_unknown_or_internal(channel: grpc.Channel, method: str) -> None:
    @FUZZ
    @given(body=st.binary(max_size=64))
    def check(body: bytes) -> None:
        call_raw(channel, method, body)

    check()


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(253402300800, 0), (10**15, 0), (-62135596801, 0), (0, -1), (0, 10**9)],
)
@pytest.mark.parametrize("method", ["ReportUsage", "ReportUsageBulk", "ReportEvents"])
def test_an_out_of_range_timestamp_names_its_field(
    channel: grpc.Channel, method: str, seconds: int, nanos: int
) -> None:
    stamp = {"timestamp": {"seconds": seconds, "nanos": nanos}}
    usage = {"customer_id": "cust-1", "feature_id": "api-calls", "value": 1.0, **stamp}
    event = {"customer_id": "cust-1", "event_name": "e", "idempotency_key": "k", **stamp}
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "ReportUsage": (usage, "timestamp"),
        "ReportUsageBulk": ({"usages": [usage]}, "usages[0].timestamp"),
        "ReportEvents": ({"events": [event]}, "events[0].timestamp"),
    }
    fields, field = cases[method]
    descriptor = SERVICE.methods_by_name[method].input_type
    invoke = channel.unary_unary(
        f"/{SERVICE.full_name}/{method}",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as caught:
        invoke(build(descriptor, fields).SerializeToString(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ")


def test_an_unparseable_body_is_invalid_argument_naming_the_body(channel: grpc.Channel) -> None:
    invoke = channel.unary_unary(
        f"/{SERVICE.full_name}/GetBooleanEntitlement",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as caught:
        invoke(b"\xff\xff\xff", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(
        "request body: cannot be parsed as GetBooleanEntitlementRequest"
    )


async def test_an_unexpected_exception_is_internal_with_an_error_id_and_no_python_message(
    sidecar: Sidecar,
    stub: AsyncStub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def broken(customer_id: str, resource_id: str | None) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sidecar.service, "snapshot", broken)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetBooleanEntitlement(
            pb.GetBooleanEntitlementRequest(customer_id="cust-1", feature_id="sso")
        )
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    assert details.startswith("internal error (error id ") and "secret" not in details
    error_id = details.removeprefix("internal error (error id ").rstrip(")")
    logged = capsys.readouterr()
    assert error_id in logged.out + logged.err
    assert "secret internals" in logged.out + logged.err

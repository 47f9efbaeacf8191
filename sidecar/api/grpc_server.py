"""The grpc.aio server: our service, standard health checking and reflection (v1 and v1alpha)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from entitlements.errors import StartupError
from sidecar.api.reflection import enable_reflection
from sidecar.api.validation import MalformedBody
from sidecar.pb import sidecar_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["SidecarService"]
SERVICE_NAME = SERVICE.full_name


def _serializer(message_class: Any) -> Callable[[Any], bytes]:
    serialize: Callable[[Any], bytes] = message_class.SerializeToString

    def to_wire(response: Any) -> bytes:
        # Handlers may answer with bytes they memoized earlier: sent as they are.
        return response if isinstance(response, bytes) else serialize(response)

    return to_wire


def _deserializer(message_class: Any) -> Callable[[bytes], Any]:
    parse: Callable[[bytes], Any] = message_class.FromString
    name = message_class.DESCRIPTOR.name

    def from_wire(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or a nesting too deep: bad input either way
            return MalformedBody(name, str(exc) or type(exc).__name__)

    return from_wire


def sidecar_handler(servicer: object) -> grpc.GenericRpcHandler[Any, Any]:
    """Register every RPC of the service on ``servicer``'s methods of the same name."""
    handlers = {}
    for method in SERVICE.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_deserializer(request),
            response_serializer=_serializer(response),
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _check_bindable(host: str, port: int, *, reuse_port: bool = False) -> None:
    """Fail with the reason when the address cannot be bound.

    grpc reports a failed bind with a generic message (and C-core log lines), without the
    errno an operator needs: "in use" and "permission denied" (a port below 1024 as non-root)
    call for different fixes. Binding a probe socket first gives the reason in one line.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind((host, port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EACCES and port < 1024:
            reason += (
                "; a non-root process needs CAP_NET_BIND_SERVICE or the sysctl "
                "net.ipv4.ip_unprivileged_port_start (see docs/deploy.md)"
            )
        raise StartupError(
            f"cannot listen for gRPC on {host}:{port}: {reason} (PORT, BIND_ADDRESS)"
        ) from exc


class GrpcServer:
    """Owns the server's lifecycle; health reports SERVING only after ``mark_serving``."""

    def __init__(
        self,
        servicer: object,
        *,
        address: str,
        max_message_bytes: int,
        reuse_port: bool = False,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Off unless worker processes share the port on purpose: a second sidecar started
            # by mistake on the same port must fail, not silently take half the calls.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        self.server = grpc.aio.server(options=options)
        self.server.add_generic_rpc_handlers((sidecar_handler(servicer),))
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
            self.server,
        )
        host, _, port = address.rpartition(":")
        _check_bindable(host.strip("[]"), int(port), reuse_port=reuse_port)
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc gives no reason; the probe above usually has
            raise StartupError(f"cannot listen for gRPC on {address} (PORT, BIND_ADDRESS)") from exc

    async def start(self) -> None:
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()

    async def mark_serving(self) -> None:
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, give in-flight ones ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

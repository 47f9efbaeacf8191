"""Server reflection under both names clients use: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection (1.76) serves only ``v1alpha``, while newer grpcurl and most recent clients
ask ``v1`` first. The two protocols are the same messages with the same field numbers under
another package, so one servicer answers both: its handler is registered a second time under the
v1 name, and the v1 descriptors (a copy of v1alpha's, renamed) join the pool so that reflection
can describe itself under either name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

V1ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def _rename(type_name: str) -> str:
    return type_name.replace(f".{V1ALPHA}.", f".{V1}.")


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection proto: v1alpha's descriptor with its package renamed."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = V1_FILE
    file.package = V1
    for message in file.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = _rename(field.type_name)
    for service in file.service:
        for method in service.method:
            method.input_type = _rename(method.input_type)
            method.output_type = _rename(method.output_type)
    return file


def _register_v1_descriptors(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
    except KeyError:
        pool.Add(v1_file_descriptor())
    # Present already: a newer grpcio-reflection (or an earlier server) registered it.


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (and reflection itself) under v1 and v1alpha."""
    pool = descriptor_pool.Default()
    _register_v1_descriptors(pool)
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = ReflectionServicer(names, pool=pool)
    handler: Any = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (reflection.SERVICE_NAME, V1_SERVICE_NAME)
        )
    )

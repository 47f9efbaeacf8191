"""The Protocol Buffers wire format, written by hand for the answers the read path builds.

Why by hand: setting a upb message field by field from Python and serializing it costs several
times what concatenating the same bytes does (measured in bench/handlers.py), and the read path
answers with bytes anyway. What is written here is byte for byte what ``SerializeToString``
writes for the same message: fields in field-number order, proto3 implicit-presence scalars left
out at their zero value (a double only when all its bits are zero, so -0.0 is written, as upb
does), explicit-presence (``optional``, message) fields written whenever set, enums and negative
integers as 64-bit two's-complement varints. tests/unit/api/test_wire.py holds each helper to
upb's output.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

_K = TypeVar("_K")

#: Wire types.
VARINT, I64, LEN = 0, 1, 2

_ONE_BYTE = [bytes((n,)) for n in range(128)]
_pack_double = struct.Struct("<d").pack
_ZERO_DOUBLE = bytes(8)


def varint(value: int) -> bytes:
    """An unsigned varint; a negative value as the ten bytes of its 64-bit two's complement."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def framed(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: a sub-message, a string or bytes."""
    size = len(payload)
    return tag + (_ONE_BYTE[size] if size < 0x80 else varint(size)) + payload


def string(tag: bytes, value: str) -> bytes:
    return framed(tag, value.encode())


def double(tag: bytes, value: float) -> bytes:
    return tag + _pack_double(value)


def implicit_double(tag: bytes, value: float) -> bytes:
    """A proto3 double without presence: nothing when it is (positive) zero."""
    packed = _pack_double(value)
    return b"" if packed == _ZERO_DOUBLE else tag + packed


def timestamp(value: datetime) -> bytes:
    """The body of the ``google.protobuf.Timestamp`` that ``convert.timestamp`` builds."""
    seconds = int(value.timestamp())
    nanos = value.microsecond * 1000
    body = b"\x08" + varint(seconds) if seconds else b""
    if nanos:
        body += b"\x10" + varint(nanos)
    return body


def varints(numbers: Mapping[_K, int]) -> Mapping[_K, bytes]:
    """Each key's enum number, as the varint that encodes it."""
    return {k: varint(n) for k, n in numbers.items()}

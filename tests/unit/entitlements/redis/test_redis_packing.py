"""Packing in C sends the same bytes redis-py's own packer would, and falls back to it for
every argument type where the two might differ."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from entitlements.redis.packing import (
    HiredisPackingConnection,
    HiredisPackingSSLConnection,
    use_hiredis_packing,
)

PLAIN = Connection()
FAST = HiredisPackingConnection()

arguments = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(-(2**70), 2**70),
)


def packed(connection: Connection, *args: Any) -> bytes:
    return b"".join(bytes(chunk) for chunk in connection.pack_command(*args))


@given(
    name=st.sampled_from(["EVALSHA", "XINFO GROUPS", b"SCRIPT LOAD", "get"]),
    args=st.lists(arguments, max_size=12),
)
def test_same_bytes_as_redis_py(name: str | bytes, args: list[Any]) -> None:
    assert packed(FAST, name, *args) == packed(PLAIN, name, *args)


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", 0.1),  # floats: redis-py's repr
        ("SET", "k", memoryview(b"abc")),
        ("SET", "k", 10**400),  # beyond what hiredis converts
        ("SET", "k", "\udcff"),  # a lone surrogate cannot be UTF-8
    ],
    ids=["float", "memoryview", "huge int", "surrogate"],
)
def test_other_types_take_redis_pys_path(args: tuple[Any, ...]) -> None:
    try:
        expected: bytes | type[Exception] = packed(PLAIN, *args)
    except Exception as exc:
        expected = type(exc)
    if isinstance(expected, bytes):
        assert packed(FAST, *args) == expected
    else:
        with pytest.raises(expected):
            packed(FAST, *args)


@pytest.mark.parametrize("bad", [True, None, 1.5j])
def test_refused_values_raise_as_redis_py_does(bad: object) -> None:
    with pytest.raises(DataError):
        packed(PLAIN, "SET", "k", bad)
    with pytest.raises(DataError):
        packed(FAST, "SET", "k", bad)


async def test_only_default_tcp_and_tls_clients_are_switched() -> None:
    plain = use_hiredis_packing(aioredis.Redis())
    tls = use_hiredis_packing(aioredis.Redis(ssl=True))
    unix = use_hiredis_packing(aioredis.Redis(unix_socket_path="/tmp/none.sock"))
    latin = use_hiredis_packing(aioredis.Redis(encoding="latin-1"))
    assert plain.connection_pool.connection_class is HiredisPackingConnection
    assert tls.connection_pool.connection_class is HiredisPackingSSLConnection
    assert unix.connection_pool.connection_class is UnixDomainSocketConnection
    assert latin.connection_pool.connection_class is Connection
    assert issubclass(HiredisPackingSSLConnection, SSLConnection)
    for client in (plain, tls, unix, latin):
        await client.aclose()

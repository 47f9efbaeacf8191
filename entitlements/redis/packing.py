"""Command packing in C for redis-py's asyncio connections.

redis-py's synchronous client packs commands with hiredis when it is installed, but its asyncio
``Connection.pack_command`` is pure Python, and for a pipeline of script calls with dozens of
arguments each it was more than half of the persistent cache's CPU. The classes here pack with
``hiredis.pack_command`` instead; everything else about the connection is redis-py's own.

Only ``str``, ``bytes`` and ``int`` arguments take the C path: those encode identically in both
packers (UTF-8 text, decimal integers; a test compares the bytes). Anything else (floats, whose
text forms differ, memoryviews, values redis-py refuses) goes to redis-py's packer unchanged, so
behaviour and errors stay exactly redis-py's.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection


def _pack(args: tuple[Any, ...]) -> bytes | None:
    """The packed command, or None when an argument must go through redis-py's packer."""
    name = args[0]
    # redis-py sends a command name with spaces ('XINFO GROUPS') as separate words.
    if isinstance(name, str):
        if " " in name:
            args = (*name.split(), *args[1:])
    elif isinstance(name, bytes):
        if b" " in name:
            args = (*name.split(), *args[1:])
    else:
        return None
    for arg in args:
        kind = type(arg)
        # Exact types: bool is an int subclass redis-py refuses, and str/bytes subclasses may
        # carry their own encoding rules.
        if kind is not str and kind is not bytes and kind is not int:
            return None
    try:
        packed: bytes = hiredis.pack_command(args)
    except (TypeError, UnicodeError):
        return None
    return packed


class HiredisPackingConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        packed = _pack(args)
        return super().pack_command(*args) if packed is None else [packed]


class HiredisPackingSSLConnection(SSLConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        packed = _pack(args)
        return super().pack_command(*args) if packed is None else [packed]


_FASTER: dict[type[Any], type[Connection]] = {
    Connection: HiredisPackingConnection,
    SSLConnection: HiredisPackingSSLConnection,
}


def _default_encoding(kwargs: dict[str, Any]) -> bool:
    encoding = str(kwargs.get("encoding") or "utf-8").lower().replace("-", "")
    return encoding == "utf8" and (kwargs.get("encoding_errors") or "strict") == "strict"


def use_hiredis_packing(client: Redis) -> Redis:
    """Make ``client``'s new connections pack in C; call before its first command.

    Only TCP and TLS connections with redis-py's default text encoding are switched; a client
    with any other setup (a Unix socket, another encoding) is left as it is.
    """
    pool = client.connection_pool
    faster = _FASTER.get(pool.connection_class)
    if faster is not None and _default_encoding(pool.connection_kwargs):
        pool.connection_class = faster
    return client


def use_hiredis_packing_cluster(client: RedisCluster) -> RedisCluster:
    """The same for a cluster client; call before its first command.

    A cluster client makes one ClusterNode per server it discovers, each creating connections
    of the class named in the client's connection kwargs (the dict its nodes manager shares),
    so switching the class there switches every node. The seed nodes only serve discovery.
    A test on a real cluster checks every node.
    """
    kwargs = client.get_connection_kwargs()
    faster = _FASTER.get(kwargs.get("connection_class") or Connection)
    if faster is not None and _default_encoding(kwargs):
        kwargs["connection_class"] = faster
    return client

"""A throwaway Redis Cluster of real redis-server processes, for tests.

Each master is a :class:`tests.redis_server.RedisServer` started in cluster mode;
``redis-cli --cluster create`` assigns the slots. The context manager returns once every node
reports ``cluster_state:ok`` and tears every process down on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from types import TracebackType

import redis

from tests.redis_server import RedisServer, free_port

# Redis Cluster's bus listens on port + 10000; both must be free and the bus port must exist.
_BUS_OFFSET = 10000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster-bus partner is free too."""
    for _ in range(1000):
        port = free_port()
        bus = port + _BUS_OFFSET
        if port in taken or bus in taken or bus > 65535:
            continue
        if _bindable(bus):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalRedisCluster:
    """``with LocalRedisCluster(3) as cluster:`` — ``cluster.ports[0]`` is a seed node."""

    def __init__(self, masters: int = 3, *, timeout: float = 30.0) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not on PATH (Debian package redis-tools)")
        self.masters = masters
        self.timeout = timeout
        self.servers: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def start(self) -> None:
        taken: set[int] = set()
        for _ in range(self.masters):
            port = cluster_port(taken)
            taken.update({port, port + _BUS_OFFSET})
            server = RedisServer(
                port,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    # Relative to the server's own --dir, so nodes never share a config file.
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "5000",
                ),
            )
            self.servers.append(server)
            server.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=self.timeout,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        """Block until every node sees all slots covered (gossip needs a moment after create)."""
        deadline = time.monotonic() + self.timeout
        for port in self.ports:
            client = redis.Redis(port=port, decode_responses=True)
            try:
                while True:
                    info = client.cluster("INFO")
                    # redis-py parses the reply into a dict; tolerate the raw text as well.
                    if isinstance(info, dict):
                        ok = info.get("cluster_state") == "ok"
                    else:
                        ok = "cluster_state:ok" in str(info)
                    if ok:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {port} never reached cluster_state:ok")
                    # Polling a server-side state with a deadline; there is no event to wait on.
                    time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.__exit__(None, None, None)
        self.servers.clear()

    def __enter__(self) -> LocalRedisCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

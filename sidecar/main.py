"""``entitlement-sidecar``: the console entry point."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from entitlements.cli import parse_command_line
from entitlements.errors import StartupError
from entitlements.logs import configure_logging
from entitlements.redis.packing import use_hiredis_packing, use_hiredis_packing_cluster
from entitlements.redis.reader import PipelinedReader
from entitlements.redis.store import RedisClient, RedisStore
from sidecar.app import serve
from sidecar.observability import Metrics
from sidecar.settings import SPECS, Settings, SettingsError
from sidecar.source.base import EntitlementSource
from sidecar.source.http_upstream import HttpUpstreamSource
from sidecar.source.redis_pubsub import Closable
from sidecar.source.redis_tier import RedisTieredSource
from sidecar.spool.redis_spool import RedisSpool
from sidecar.workers import supervise, worker_index, worker_spool_dir

# Pooled connections idle this long are PINGed before reuse, so a connection the server or a
# proxy dropped meanwhile is replaced before a read depends on it.
REDIS_HEALTH_CHECK_SECONDS = 30
# Stigg's waiters allow the entitlements timeout plus this margin before fetching themselves.
REFETCH_WAIT_MARGIN_SECONDS = 0.5


def redis_clients(settings: Settings) -> tuple[RedisClient, aioredis.Redis]:
    """The command client, and the client that holds the pub/sub subscriptions."""
    timeout = settings.redis_timeout_ms / 1000
    options: dict[str, Any] = {
        "username": settings.redis_username or None,
        "password": settings.redis_password or None,
        "ssl": settings.redis_tls,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    # One immediate retry replaces a pooled connection that died while idle; more would only
    # make a down Redis slower to give up on (reads then go to upstream). Connection errors
    # only: a timed-out command retried would cost each read twice the timeout.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    client: RedisClient
    if settings.redis_cluster:
        client = use_hiredis_packing_cluster(
            RedisCluster(
                host=settings.redis_host,
                port=settings.redis_port,
                retry=retry,
                health_check_interval=REDIS_HEALTH_CHECK_SECONDS,
                **options,
            )
        )
    else:
        # redis-py's default pool fails a command outright ("Too many connections") once 100
        # are open: under a burst of misses that would count as Redis failing and open the
        # circuit breaker. This pool makes the command wait for a connection instead, within
        # the same timeout as any other Redis wait.
        pool = BlockingConnectionPool(
            connection_class=SSLConnection if settings.redis_tls else Connection,
            max_connections=settings.redis_max_connections,
            timeout=timeout,
            host=settings.redis_host,
            port=settings.redis_port,
            db=settings.redis_db,
            username=options["username"],
            password=options["password"],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=retry,
            health_check_interval=REDIS_HEALTH_CHECK_SECONDS,
        )
        # from_pool: closing the client closes the pool too.
        client = use_hiredis_packing(aioredis.Redis.from_pool(pool))
    # A plain connection to one node even in cluster mode: classic PUBLISH reaches every node.
    # No retries and no health check: redis-py would reconnect and resubscribe silently,
    # hiding lost invalidations, and its health check would race the subscription readers.
    pubsub_client = aioredis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        retry=Retry(NoBackoff(), 0),
        **options,
    )
    return client, pubsub_client


def redis_reader(settings: Settings) -> PipelinedReader | None:
    """The read path's client (one pipelined connection); None in cluster mode, where reads
    keep redis-py's cluster client for its slot routing."""
    if settings.redis_cluster:
        return None
    return PipelinedReader(
        settings.redis_host,
        settings.redis_port,
        timeout=settings.redis_timeout_ms / 1000,
        db=settings.redis_db,
        username=settings.redis_username or None,
        password=settings.redis_password or None,
        # What redis-py's ssl=True checks: the server's certificate and its host name.
        ssl=ssl.create_default_context() if settings.redis_tls else None,
    )


def redis_store(settings: Settings) -> tuple[RedisStore, aioredis.Redis, list[Closable]]:
    """The Redis tier's store, its pub/sub client, and every client the tier must close."""
    client, pubsub_client = redis_clients(settings)
    reader = redis_reader(settings)
    store = RedisStore(
        client,
        prefix=settings.redis_prefix,
        ttl_seconds=settings.redis_keys_ttl_seconds,
        reader=reader,
    )
    owned: list[Closable] = [client, pubsub_client]
    if reader is not None:
        owned.append(reader)
    return store, pubsub_client, owned


def _source(settings: Settings, metrics: Metrics) -> EntitlementSource | None:
    if settings.offline:
        return None
    upstream = HttpUpstreamSource(
        api_url=settings.api_url,
        api_key=settings.api_key,
        timeout=settings.upstream_timeout_seconds,
        retries=settings.upstream_retries,
        stream=settings.push_enabled,
        on_usage_retry=metrics.usage_retries.inc,
    )
    if not settings.redis_enabled:
        return upstream
    store, pubsub_client, owned = redis_store(settings)
    wait_timeout = settings.upstream_timeout_seconds + REFETCH_WAIT_MARGIN_SECONDS
    return RedisTieredSource(
        store,
        upstream,
        pubsub_client=pubsub_client,
        # The lock outlives one upstream fetch, so no second leader starts while the first
        # is still fetching; a crashed leader costs its waiters no more than their wait.
        lock_ttl_ms=int(wait_timeout * 1000),
        wait_timeout=wait_timeout,
        metrics=metrics,
        owned_clients=owned,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parse_command_line(
        "entitlement-sidecar",
        "The entitlement sidecar: answers Stigg-compatible entitlement checks over gRPC from a "
        "local cache\n(hot cache -> Redis -> upstream -> stale copy -> fallback values) and "
        "forwards usage and events upstream.",
        docs="README.md, section Configuration",
        variables=SPECS,
        argv=argv,
    )
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"entitlement-sidecar: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, service="entitlement-sidecar")
    index = worker_index(os.environ)
    if index is None and settings.workers > 1:
        return supervise(settings)
    if index is not None:
        structlog.contextvars.bind_contextvars(worker=index)
        settings = replace(
            settings, reuse_port=True, spool_dir=worker_spool_dir(settings.spool_dir, index)
        )
    metrics = Metrics()
    source = _source(settings, metrics)
    spool = None
    if settings.spool_backend == "redis" and source is not None:
        # Its own client (and pool): spool appends must not queue behind the read path's.
        spool_client, _ = redis_clients(settings)
        spool = RedisSpool(spool_client, settings.redis_prefix, settings.spool_max_bytes)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings, source, metrics=metrics, spool=spool))
    except (StartupError, OSError) as exc:
        structlog.get_logger("sidecar").error("startup_failed", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

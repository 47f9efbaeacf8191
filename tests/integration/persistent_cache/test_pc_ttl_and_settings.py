"""KEYS_TTL_IN_SECS: positive TTLs on written keys, none when negative, 0 or garbage refused."""

from __future__ import annotations

import pytest

from entitlements.redis.keys import change_stream, state_key
from entitlements.redis.store import RedisStore
from persistent_cache.main import main
from persistent_cache.service import PersistentCacheService
from persistent_cache.settings import Settings, SettingsError, render_env_table
from tests.conftest import wait_for
from tests.integration.persistent_cache.pc_support import (
    ROOT,
    entry,
    redis_client,
    service_settings,
    state_event,
)
from tests.redis_server import RedisServer

REQUIRED = {"REDIS_ENVIRONMENT_PREFIX": "env", "SERVER_API_KEY": "k"}


@pytest.mark.parametrize(("ttl", "expect_expiry"), [(3600, True), (-1, False)])
async def test_written_keys_carry_the_configured_ttl(
    redis_server: RedisServer, redis_prefix: str, ttl: int, expect_expiry: bool
) -> None:
    prefix = f"{redis_prefix}{'pos' if ttl > 0 else 'neg'}"
    settings = service_settings(prefix, redis_server, None, keys_ttl_seconds=ttl)
    async with redis_client(redis_server) as client:
        await RedisStore(client, prefix=prefix, ttl_seconds=60).set_epoch("complete")
        await client.xadd(change_stream(prefix), entry(state_event("ttl", 1)))
        async with PersistentCacheService(settings) as svc:

            async def written() -> bool:
                return await svc.store.get("ttl", None) is not None

            await wait_for(written, what="the state written")
        pttl = await client.pttl(state_key(prefix, "ttl", None))
        if expect_expiry:
            assert 0 < pttl <= ttl * 1000
        else:
            assert pttl == -1


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("0", "KEYS_TTL_IN_SECS: 0 would expire every key at once"),
        ("abc", "KEYS_TTL_IN_SECS: expected a whole number of seconds, got 'abc'"),
        ("", "KEYS_TTL_IN_SECS: expected a whole number of seconds, got ''"),
    ],
)
def test_bad_ttl_is_a_startup_error_naming_the_variable(raw: str, problem: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**REQUIRED, "KEYS_TTL_IN_SECS": raw})
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(problem)


def test_console_script_refuses_to_start_on_a_bad_ttl(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEYS_TTL_IN_SECS", "0")
    assert main([]) == 2
    assert "KEYS_TTL_IN_SECS" in capsys.readouterr().err


def test_defaults_and_every_problem_at_once() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.keys_ttl_seconds == 604_800
    assert (settings.redis_host, settings.redis_port, settings.redis_db) == ("localhost", 6379, 0)
    assert settings.consumer_group == "persistent-cache"
    assert settings.consumer_name  # hostname-pid
    assert Settings.from_env({**REQUIRED, "KEYS_TTL_IN_SECS": "-1"}).keys_ttl_seconds == -1
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"BATCH_SIZE": "0", "REDIS_CLUSTER": "1", "REDIS_DB": "2"})
    assert [p.split(":")[0] for p in err.value.problems] == [
        "BATCH_SIZE",
        "REDIS_ENVIRONMENT_PREFIX",
        "SERVER_API_KEY",
        "REDIS_DB",
    ]


def test_docs_table_is_fresh() -> None:
    assert render_env_table() in (ROOT / "docs" / "persistent-cache.md").read_text()

"""Settings: parsing, defaults, all problems reported at once, README table freshness."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.evaluation.fallback import FallbackValues
from sidecar.settings import Settings, SettingsError, render_env_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_match_stigg_and_loopback() -> None:
    settings = Settings.from_env({"CACHE_MAX_SIZE_BYTES": "1024", "SERVER_API_KEY": "k"})
    assert settings.port == 80
    assert settings.bind_address == "127.0.0.1"
    assert settings.offline is False
    assert settings.fallbacks == {}
    assert settings.cache_max_bytes == 1024


def test_cache_default_comes_from_memory_detection() -> None:
    assert Settings.from_env({"OFFLINE": "1"}).cache_max_bytes > 0


def test_api_key_required_unless_offline() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"CACHE_MAX_SIZE_BYTES": "1"})
    assert err.value.problems == ["SERVER_API_KEY: is required unless OFFLINE=1"]
    assert Settings.from_env({"OFFLINE": "1", "CACHE_MAX_SIZE_BYTES": "1"}).api_key == ""


def test_api_url_must_be_http() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"OFFLINE": "1", "API_URL": "ftp://x"})
    assert err.value.problems[0].startswith("API_URL:")
    settings = Settings.from_env({"OFFLINE": "1", "API_URL": "http://up:8787/"})
    assert settings.api_url == "http://up:8787"


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "PORT": "8443",
            "OFFLINE": "true",
            "ENTITLEMENTS_FALLBACK": '{"f": {"hasAccess": true, "usageLimit": 5}}',
            "LOG_LEVEL": "WARNING",
            "SHUTDOWN_GRACE_SECONDS": "2.5",
            "CACHE_MAX_SIZE_BYTES": "1",
        }
    )
    assert settings.port == 8443 and settings.offline
    assert settings.fallbacks == {"f": FallbackValues(has_access=True, usage_limit=5.0)}
    assert settings.log_level == "warn"
    assert settings.shutdown_grace_seconds == 2.5


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("PORT", "70000"),
        ("PORT", "eighty"),
        ("OFFLINE", "maybe"),
        ("CACHE_MAX_SIZE_BYTES", "0"),
        ("CACHE_MAX_SIZE_BYTES", "-5"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("SHUTDOWN_GRACE_SECONDS", "nan"),
        ("SHUTDOWN_GRACE_SECONDS", "0"),
        ("MAX_MESSAGE_BYTES", "10"),
        ("SPOOL_MAX_BYTES", "0"),
        ("SPOOL_MAX_BYTES", "lots"),
        ("ENTITLEMENTS_FALLBACK", "[1]"),
        ("ENTITLEMENTS_FALLBACK", '{"f": {"hasAccess": "yes"}}'),
    ],
)
def test_each_bad_value_is_named(env: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"CACHE_MAX_SIZE_BYTES": "1", "OFFLINE": "1", env: value})
    assert any(p.startswith(f"{env}:") for p in err.value.problems)


def test_all_problems_reported_together() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"PORT": "x", "OFFLINE": "x", "LOG_LEVEL": "x"})
    assert [p.split(":")[0] for p in err.value.problems] == [
        "PORT", "OFFLINE", "LOG_LEVEL", "SERVER_API_KEY",
    ]


def test_readme_configuration_table_is_current() -> None:
    assert render_env_table() in README.read_text(), (
        "README.md's configuration table is stale; paste the output of "
        "`python -c 'from sidecar.settings import render_env_table; print(render_env_table())'`"
    )


def test_the_event_spool_defaults_to_a_directory_per_port_and_can_be_switched_off() -> None:
    env = {"SERVER_API_KEY": "k", "PORT": "50051"}
    assert Settings.from_env(env).spool_dir == "/tmp/entitlement-sidecar-spool-50051"
    assert Settings.from_env({**env, "TMPDIR": "/scratch/"}).spool_dir == (
        "/scratch/entitlement-sidecar-spool-50051"
    )
    assert Settings.from_env({**env, "SPOOL_DIR": ""}).spool_dir == ""
    assert Settings.from_env({**env, "SPOOL_DIR": "/data/spool"}).spool_dir == "/data/spool"
    assert Settings.from_env(env).spool_max_bytes == 256 * 2**20


def test_usage_buffering_is_off_by_default_and_needs_a_spool() -> None:
    env = {"SERVER_API_KEY": "k", "CACHE_MAX_SIZE_BYTES": "1"}
    assert not Settings.from_env(env).usage_buffering
    assert Settings.from_env({**env, "USAGE_BUFFERING": "1"}).usage_buffering
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**env, "USAGE_BUFFERING": "1", "SPOOL_DIR": ""})
    assert "USAGE_BUFFERING" in str(err.value) and "SPOOL_DIR" in str(err.value)


def test_the_redis_spool_needs_the_redis_tier() -> None:
    env = {"SERVER_API_KEY": "k", "CACHE_MAX_SIZE_BYTES": "1"}
    assert Settings.from_env(env).spool_backend == "disk"
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**env, "SPOOL_BACKEND": "redis"})
    assert err.value.problems == [
        "SPOOL_BACKEND: redis needs REDIS_ENVIRONMENT_PREFIX (the Redis tier)"
    ]
    redis = {**env, "SPOOL_BACKEND": "Redis", "REDIS_ENVIRONMENT_PREFIX": "p"}
    # Buffered usage goes to Redis then: no SPOOL_DIR needed.
    settings = Settings.from_env({**redis, "USAGE_BUFFERING": "1", "SPOOL_DIR": ""})
    assert (settings.spool_backend, settings.usage_buffering) == ("redis", True)
    with pytest.raises(SettingsError, match="SPOOL_BACKEND"):
        Settings.from_env({**env, "SPOOL_BACKEND": "s3"})

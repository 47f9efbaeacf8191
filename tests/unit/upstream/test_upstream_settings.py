"""Upstream's settings: the shared toolkit, every problem at once, the docs table fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from upstream.catalog import DEMO_CATALOG
from upstream.settings import SettingsError, UpstreamSettings, render_env_table

DOCS = Path(__file__).resolve().parents[3] / "docs" / "upstream.md"


def test_defaults() -> None:
    settings = UpstreamSettings.from_env({"SERVER_API_KEY": "k"})
    assert settings == UpstreamSettings(api_key="k")
    assert (settings.port, settings.bind_address, settings.database) == (
        8787,
        "127.0.0.1",
        "upstream.db",
    )
    assert settings.catalog_path == DEMO_CATALOG
    assert settings.events_redis_url is None
    assert settings.environment_prefix == ""
    assert settings.test_clock_enabled is False


def test_every_variable_is_read(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("{}")
    settings = UpstreamSettings.from_env(
        {
            "SERVER_API_KEY": " k ",
            "UPSTREAM_PORT": "9000",
            "UPSTREAM_BIND_ADDRESS": "0.0.0.0",
            "UPSTREAM_DATABASE": str(tmp_path / "u.db"),
            "CATALOG_PATH": str(catalog),
            "EVENTS_REDIS_URL": "redis://r:6379",
            "REDIS_ENVIRONMENT_PREFIX": "prod",
            "TEST_CLOCK_ENABLED": "1",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
    )
    assert settings == UpstreamSettings(
        api_key="k",
        port=9000,
        bind_address="0.0.0.0",
        database=str(tmp_path / "u.db"),
        catalog_path=catalog,
        events_redis_url="redis://r:6379",
        environment_prefix="prod",
        test_clock_enabled=True,
        log_level="warn",
        log_format="json",
    )
    assert settings.stream_key == "prod:changes"


def test_every_problem_reported_together(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        UpstreamSettings.from_env(
            {
                "UPSTREAM_PORT": "70000",
                "CATALOG_PATH": str(tmp_path / "missing.yaml"),
                "LOG_LEVEL": "loud",
                "LOG_FORMAT": "xml",
                "EVENTS_REDIS_URL": "redis://r:6379",
                "TEST_CLOCK_ENABLED": "maybe",
            }
        )
    assert [p.split(":")[0] for p in err.value.problems] == [
        "UPSTREAM_PORT",
        "CATALOG_PATH",
        "TEST_CLOCK_ENABLED",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "SERVER_API_KEY",
        "REDIS_ENVIRONMENT_PREFIX",
    ]


def test_an_empty_api_key_is_refused() -> None:
    with pytest.raises(SettingsError) as err:
        UpstreamSettings.from_env({"SERVER_API_KEY": "  "})
    assert err.value.problems == ["SERVER_API_KEY: must not be empty"]


def test_the_prefix_means_the_same_as_elsewhere() -> None:
    """The environment's key prefix: no stream without it, and no silent default either."""
    assert UpstreamSettings.from_env({"SERVER_API_KEY": "k", "REDIS_ENVIRONMENT_PREFIX": "p"}) == (
        UpstreamSettings(api_key="k", environment_prefix="p")
    )
    with pytest.raises(SettingsError) as err:
        UpstreamSettings.from_env({"SERVER_API_KEY": "k", "EVENTS_REDIS_URL": "redis://r"})
    assert err.value.problems[0].startswith("REDIS_ENVIRONMENT_PREFIX: is required")


def test_the_test_clock_is_off_unless_asked_for_and_documented_as_test_only() -> None:
    for raw in ("", "0", "false", "off"):
        env = {"SERVER_API_KEY": "k", "TEST_CLOCK_ENABLED": raw}
        assert UpstreamSettings.from_env(env).test_clock_enabled is False
    for raw in ("1", "true", "on"):
        env = {"SERVER_API_KEY": "k", "TEST_CLOCK_ENABLED": raw}
        assert UpstreamSettings.from_env(env).test_clock_enabled is True
    row = next(line for line in render_env_table().splitlines() if "TEST_CLOCK_ENABLED" in line)
    assert "| `0` |" in row
    assert "Test environments only" in row


def test_docs_configuration_table_is_current() -> None:
    assert render_env_table() in DOCS.read_text(), (
        "docs/upstream.md's configuration table is stale; paste the output of "
        "`python -c 'from upstream.settings import render_env_table; print(render_env_table())'`"
    )

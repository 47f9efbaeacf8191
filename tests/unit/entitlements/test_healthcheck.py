"""``healthcheck``: where each service is probed, and which service PID 1 runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from entitlements.envconfig import SettingsError
from entitlements.healthcheck import SIDE_PORTS, running_service, target
from persistent_cache.settings import Settings as CacheSettings
from sidecar.settings import Settings as SidecarSettings
from upstream.settings import UpstreamSettings


def test_sidecar_defaults_to_its_side_port_readiness() -> None:
    where = target("sidecar", {})
    assert (where.host, where.port, where.path) == ("127.0.0.1", 8080, "/readyz")
    assert where.url == "http://127.0.0.1:8080/readyz"


def test_sidecar_reads_its_own_variables() -> None:
    where = target("sidecar", {"HTTP_PORT": "9100", "HTTP_BIND_ADDRESS": "10.1.2.3"}, live=True)
    assert where.url == "http://10.1.2.3:9100/livez"


def test_ipv6_wildcard_is_probed_on_ipv6_loopback() -> None:
    assert target("persistent-cache", {"HTTP_BIND_ADDRESS": "::"}).url.startswith("http://[::1]:")


def test_demo_uses_the_sidecar_side_port() -> None:
    assert target("demo", {"HTTP_PORT": "8181"}).port == 8181


def test_upstream_is_probed_on_livez_of_its_listener() -> None:
    where = target("upstream", {"SERVER_API_KEY": "k", "UPSTREAM_PORT": "9787"})
    assert where.url == "http://127.0.0.1:9787/livez"


def test_the_listed_defaults_are_the_services_own() -> None:
    """SIDE_PORTS restates each service's defaults (the foundation imports no service)."""
    sidecar = SidecarSettings()
    cache = CacheSettings.__dataclass_fields__
    upstream = UpstreamSettings(api_key="k")
    listed = {name: (side.port.default, side.address.default) for name, side in SIDE_PORTS.items()}
    assert listed == {
        "sidecar": (str(sidecar.http_port), sidecar.http_bind_address),
        "demo": (str(sidecar.http_port), sidecar.http_bind_address),
        "persistent-cache": (
            str(cache["http_port"].default),
            cache["http_bind_address"].default,
        ),
        "upstream": (str(upstream.port), upstream.bind_address),
    }


def test_a_malformed_port_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="HTTP_PORT"):
        target("sidecar", {"HTTP_PORT": "eighty"})


def test_port_zero_cannot_be_probed() -> None:
    with pytest.raises(SettingsError, match="port is 0"):
        target("persistent-cache", {"HTTP_PORT": "0"})


@pytest.mark.parametrize(
    ("cmdline", "service"),
    [
        (b"/opt/venv/bin/python\0/opt/venv/bin/entitlement-upstream\0", "upstream"),
        (b"/sbin/docker-init\0--\0entitlement-persistent-cache\0", "persistent-cache"),
        (b"/opt/venv/bin/python\0/opt/venv/bin/entitlement-sidecar\0", "sidecar"),
        (b"/opt/venv/bin/python\0/opt/venv/bin/entitlement-demo\0", "demo"),
        (b"python3\0-m\0http.server\0", None),
    ],
)
def test_running_service_comes_from_pid_1(
    tmp_path: Path, cmdline: bytes, service: str | None
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cmdline").write_bytes(cmdline)
    assert running_service(tmp_path) == service


def test_no_pid_1_to_read_means_unknown(tmp_path: Path) -> None:
    assert running_service(tmp_path) is None

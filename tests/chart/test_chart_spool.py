"""The event spool (sidecar.spool): SPOOL_DIR and SPOOL_MAX_BYTES in the env of every sidecar form,
the spool volume mounted at SPOOL_DIR and declared in the pod, off when disabled, sized and checked."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from tests.chart.chart_support import (
    NAMESPACE,
    NEWEST_KUBE,
    OLDEST_KUBE,
    Manifest,
    deep_merge,
    env_of,
    one,
    parse,
    render,
    render_error,
    scenario_values,
    validate,
)
from tests.chart.conftest import Renders

DEFAULT_DIR = "/var/spool/entitlement-sidecar"
DEFAULT_MAX_BYTES = 268435456
BASE: dict[str, Any] = {"apiKey": {"value": "k"}, "apiUrl": "https://entitlements.example.com"}
STANDALONE: dict[str, Any] = {"sidecar": {"standalone": {"enabled": True}}}


def sidecar_pod(
    chart: helm_python.Chart, parent_chart: helm_python.Chart, mode: str, values: dict[str, Any]
) -> tuple[Manifest, dict[str, Any]]:
    """(the sidecar container, its pod spec) for mode injected | native | standalone."""
    if mode == "standalone":
        docs = render(chart, deep_merge(values, STANDALONE))
        spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
        return spec["containers"][0], spec
    native = {"sidecar": {"injected": {"nativeSidecar": mode == "native"}}}
    rendered = parent_chart.render(
        {"entitlement-sidecar": deep_merge(values, native)}, name="shop", namespace=NAMESPACE
    )
    spec = one(parse(rendered), "Deployment", "shop-shop")["spec"]["template"]["spec"]
    sidecars = [
        c for c in [*(spec["initContainers"] or []), *spec["containers"]] if c["name"] != "shop"
    ]
    (sidecar,) = sidecars
    return sidecar, spec


def spool_volume(container: Manifest, spec: dict[str, Any], directory: str) -> dict[str, Any]:
    """The pod volume mounted at directory, checked to be declared once."""
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    assert len(mounts) == 1, container["volumeMounts"]
    assert "subPath" not in mounts[0] and not mounts[0].get("readOnly")
    declared: list[dict[str, Any]] = [v for v in spec["volumes"] if v["name"] == mounts[0]["name"]]
    assert len(declared) == 1, f"{mounts[0]['name']} declared {len(declared)} times"
    return declared[0]


MODES = ["injected", "native", "standalone"]


@pytest.mark.parametrize("mode", MODES)
def test_default_spool_env_and_volume(
    chart: helm_python.Chart, parent_chart: helm_python.Chart, mode: str
) -> None:
    sidecar, spec = sidecar_pod(chart, parent_chart, mode, BASE)
    env = env_of(sidecar)
    assert env["SPOOL_DIR"] == DEFAULT_DIR
    assert env["SPOOL_MAX_BYTES"] == str(DEFAULT_MAX_BYTES)
    volume = spool_volume(sidecar, spec, DEFAULT_DIR)
    # 2 x maxBytes + 64Mi: SQLite holds the events in up to ~1.8x their bytes on disk
    assert volume["emptyDir"] == {"sizeLimit": "576Mi"}
    assert volume["name"] == ("spool" if mode == "standalone" else "entitlement-sidecar-spool")
    assert set(volume) == {"name", "emptyDir"}


@pytest.mark.parametrize("mode", MODES)
def test_custom_spool_follows_the_values(
    chart: helm_python.Chart, parent_chart: helm_python.Chart, mode: str
) -> None:
    claim = {
        "volumeClaimTemplate": {
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "3Gi"}},
            }
        }
    }
    values = deep_merge(
        BASE,
        {
            "sidecar": {
                "spool": {
                    "dir": "/data/spool/",
                    "maxBytes": 1073741824,
                    "volume": {"ephemeral": claim},
                }
            }
        },
    )
    sidecar, spec = sidecar_pod(chart, parent_chart, mode, values)
    env = env_of(sidecar)
    assert env["SPOOL_DIR"] == "/data/spool", "the path is normalized in env and mount alike"
    assert env["SPOOL_MAX_BYTES"] == "1073741824", "large numbers must not print as floats"
    volume = spool_volume(sidecar, spec, "/data/spool")
    assert volume["ephemeral"] == claim and set(volume) == {"name", "ephemeral"}


@pytest.mark.parametrize("mode", MODES)
def test_disabled_spool_sets_spool_dir_empty_and_mounts_nothing(
    chart: helm_python.Chart, parent_chart: helm_python.Chart, mode: str
) -> None:
    values = deep_merge(BASE, {"sidecar": {"spool": {"enabled": False}}})
    sidecar, spec = sidecar_pod(chart, parent_chart, mode, values)
    env = env_of(sidecar)
    # set, and empty: unset would give the sidecar's own default (a spool under /tmp)
    assert env["SPOOL_DIR"] == ""
    assert "SPOOL_MAX_BYTES" not in env
    assert [m["mountPath"] for m in sidecar["volumeMounts"]] == ["/tmp"]
    assert not [v for v in spec["volumes"] if "spool" in v["name"]]


def test_default_size_limit_scales_with_max_bytes(chart: helm_python.Chart) -> None:
    values = deep_merge(deep_merge(BASE, STANDALONE), {"sidecar": {"spool": {"maxBytes": 10**9}}})
    spec = one(render(chart, values), "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "spool")
    # ceil(2e9 / 2^20) = 1908 Mi, plus 64
    assert volume["emptyDir"] == {"sizeLimit": "1972Mi"}


def test_size_limit_boundary(chart: helm_python.Chart) -> None:
    """1.5 x maxBytes is the least accepted emptyDir; a byte less fails, in any unit."""

    def with_limit(limit: Any) -> dict[str, Any]:
        return deep_merge(
            BASE, {"sidecar": {"spool": {"volume": {"emptyDir": {"sizeLimit": limit}}}}}
        )

    least = DEFAULT_MAX_BYTES * 3 // 2  # 402653184 = 384Mi
    for accepted in ("384Mi", least, str(least), "0.375Gi", "403M", "4.1e8", "1Gi"):
        render(chart, with_limit(accepted))
    for refused in (least - 1, "383Mi", "402M", "4e8", "256Mi", "100Ki"):
        message = render_error(chart, with_limit(refused))
        assert "sidecar.spool.volume.emptyDir.sizeLimit" in message, refused
        assert "at least 384Mi" in message and "better 576Mi" in message, message


def test_empty_dir_without_size_limit_is_accepted(chart: helm_python.Chart) -> None:
    values = deep_merge(
        deep_merge(BASE, STANDALONE), {"sidecar": {"spool": {"volume": {"emptyDir": {}}}}}
    )
    spec = one(render(chart, values), "Deployment")["spec"]["template"]["spec"]
    assert next(v for v in spec["volumes"] if v["name"] == "spool")["emptyDir"] == {}


def test_claim_scenario_recreates_and_validates(renders: Renders) -> None:
    docs = renders("standalone-spool-claim")
    deployment = one(docs, "Deployment")
    # a new pod could not mount the claim (or take the spool's lock) before the old one is gone
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    spec = deployment["spec"]["template"]["spec"]
    volume = spool_volume(spec["containers"][0], spec, DEFAULT_DIR)
    assert volume["persistentVolumeClaim"] == {"claimName": "entitlement-sidecar-spool"}
    # fsGroup makes the claim writable by the non-root sidecar
    assert spec["securityContext"]["fsGroup"] == 65532


def test_ephemeral_scenario_keeps_rolling_updates(renders: Renders) -> None:
    docs = renders("standalone-spool-ephemeral")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    spec = deployment["spec"]["template"]["spec"]
    sidecar = spec["containers"][0]
    env = env_of(sidecar)
    assert env["SPOOL_DIR"] == "/var/lib/entitlement-spool"
    assert env["SPOOL_MAX_BYTES"] == "1073741824"
    volume = spool_volume(sidecar, spec, "/var/lib/entitlement-spool")
    template = scenario_values("standalone-spool-ephemeral")["sidecar"]["spool"]["volume"]
    assert volume == {"name": "spool", **template}


@pytest.mark.parametrize("kube", [OLDEST_KUBE, NEWEST_KUBE])
def test_spool_variants_validate_against_kubernetes(
    chart: helm_python.Chart, parent_chart: helm_python.Chart, kube: str
) -> None:
    variants: list[dict[str, Any]] = [
        {"sidecar": {"spool": {"enabled": False}}},
        {"sidecar": {"spool": {"volume": {"emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}}}},
        {
            "sidecar": {
                "spool": {"volume": {"persistentVolumeClaim": {"claimName": "spool"}}},
                "standalone": {"replicaCount": 1},
            }
        },
    ]
    for variant in variants:
        values = deep_merge(BASE, variant)
        for doc in render(chart, deep_merge(values, STANDALONE)):
            validate(doc, kube)
        rendered = parent_chart.render(
            {"entitlement-sidecar": values}, name="shop", namespace=NAMESPACE
        )
        for doc in parse(rendered):
            validate(doc, kube)


def test_parent_chart_gets_the_spool_validation(parent_chart: helm_python.Chart) -> None:
    values = deep_merge(scenario_values("native-sidecar"), {"sidecar": {"spool": {"dir": "/tmp"}}})
    message = render_error(parent_chart, {"entitlement-sidecar": values})
    assert 'sidecar.spool.dir: "/tmp" would mount the spool volume over /tmp' in message

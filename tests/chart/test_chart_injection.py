"""The exported templates inject the sidecar into a user's own Deployment from their chart
(tests/chart/fixtures/app-chart, with this chart as its dependency)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest

from tests.chart.chart_support import (
    NAMESPACE,
    NATIVE_SIDECAR_KUBE,
    NEWEST_KUBE,
    OLDEST_KUBE,
    Manifest,
    deep_merge,
    env_of,
    kinds,
    one,
    parse,
    render,
    render_error,
    scenario_values,
    validate,
)


def render_parent(chart: helm_python.Chart, values: dict[str, Any]) -> list[Manifest]:
    return parse(chart.render({"entitlement-sidecar": values}, name="shop", namespace=NAMESPACE))


def app_pod(docs: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment", "shop-shop")["spec"]["template"]
    return spec


@pytest.fixture(scope="module")
def injected(parent_chart: helm_python.Chart) -> list[Manifest]:
    return render_parent(parent_chart, scenario_values("injected"))


@pytest.fixture(scope="module")
def native(parent_chart: helm_python.Chart) -> list[Manifest]:
    return render_parent(parent_chart, scenario_values("native-sidecar"))


def test_parent_chart_resources(injected: list[Manifest], native: list[Manifest]) -> None:
    assert kinds(injected) == {"Deployment": 1, "Secret": 1}
    assert kinds(native) == {"Deployment": 1}


@pytest.mark.parametrize("kube", [OLDEST_KUBE, NEWEST_KUBE])
def test_injected_pod_validates(injected: list[Manifest], kube: str) -> None:
    for doc in injected:
        validate(doc, kube)


@pytest.mark.parametrize("kube", [NATIVE_SIDECAR_KUBE, NEWEST_KUBE])
def test_native_sidecar_pod_validates(native: list[Manifest], kube: str) -> None:
    for doc in native:
        validate(doc, kube)


def test_native_sidecar_needs_kubernetes_1_29(native: list[Manifest]) -> None:
    # 1.27's schema has no restartPolicy on containers: the reason nativeSidecar is opt-in.
    with pytest.raises(jsonschema.ValidationError, match="restartPolicy"):
        validate(one(native, "Deployment"), OLDEST_KUBE)


def test_injected_container_joins_the_app(injected: list[Manifest]) -> None:
    pod = app_pod(injected)
    spec = pod["spec"]
    assert [c["name"] for c in spec["containers"]] == ["shop", "entitlement-sidecar"]
    assert not spec["initContainers"]
    sidecar = spec["containers"][1]
    env = env_of(sidecar)
    assert env["BIND_ADDRESS"] == "127.0.0.1", "injected: only the app in the pod reaches it"
    assert env["PORT"] == "80" and env["HTTP_PORT"] == "9464"
    assert env["STARTUP_WAIT_SECONDS"] == "10", "injected readiness is bounded by default"
    assert env["REDIS_ENVIRONMENT_PREFIX"] == "production" and env["REDIS_TLS"] == "1"
    assert env["REDIS_KEYS_TTL_IN_SECS"] == "604800" and env["REDIS_TIMEOUT_MS"] == "100"
    assert env["REDIS_MAX_CONNECTIONS"] == "64"
    assert env["TZ"] == "UTC", "extraEnv is added"
    assert json.loads(env["ENTITLEMENTS_FALLBACK"]) == {
        "premium-reports": {"hasAccess": False},
        "api-calls": {"hasAccess": True, "usageLimit": 1000},
    }
    # the Secret the env reads is the one this chart made in the same release
    secret = one(injected, "Secret")
    assert env["SERVER_API_KEY"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert env["SERVER_API_KEY"]["secretKeyRef"]["key"] in secret["data"]
    # pod-level pieces the include templates add
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in spec["securityContext"][
        "sysctls"
    ]
    assert [v["name"] for v in spec["volumes"]] == [
        "entitlement-sidecar-tmp",
        "entitlement-sidecar-spool",
    ]
    assert pod["metadata"]["annotations"]["checksum/entitlement-sidecar-secret"]
    # a regular container stops with the app: it lingers so in-flight calls finish
    assert "time.sleep(5)" in sidecar["lifecycle"]["preStop"]["exec"]["command"][-1]


def test_no_port_collides_with_the_app(injected: list[Manifest], native: list[Manifest]) -> None:
    for docs in (injected, native):
        spec = app_pod(docs)["spec"]
        every = [*(spec["initContainers"] or []), *spec["containers"]]
        numbers = [p["containerPort"] for c in every for p in c.get("ports", [])]
        names = [p["name"] for c in every for p in c.get("ports", [])]
        assert len(numbers) == len(set(numbers)), numbers
        assert len(names) == len(set(names)), names


def test_native_sidecar_is_an_init_container(native: list[Manifest]) -> None:
    spec = app_pod(native)["spec"]
    assert [c["name"] for c in spec["containers"]] == ["shop"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "entitlement-sidecar" and sidecar["restartPolicy"] == "Always"
    assert "lifecycle" not in sidecar, "a native sidecar already outlives the app"
    assert env_of(sidecar)["STARTUP_WAIT_SECONDS"] == "5"
    assert sidecar["startupProbe"]["httpGet"]["port"] == "es-http"


def test_injected_and_standalone_run_the_same_container(
    injected: list[Manifest], chart: helm_python.Chart
) -> None:
    sidecar = app_pod(injected)["spec"]["containers"][1]
    values = deep_merge(scenario_values("injected"), {"sidecar": {"standalone": {"enabled": True}}})
    standalone_docs = render(chart, values, release="shop")
    standalone = one(standalone_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for field in ("image", "command", "securityContext"):
        assert sidecar[field] == standalone[field], field
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert sidecar[probe]["httpGet"]["path"] == standalone[probe]["httpGet"]["path"]
    differs = {k for k in env_of(sidecar) if env_of(sidecar)[k] != env_of(standalone).get(k)}
    assert differs == {"BIND_ADDRESS", "HTTP_PORT", "STARTUP_WAIT_SECONDS"}


def test_name_overrides_keep_secret_and_reference_together(parent_chart: helm_python.Chart) -> None:
    values = deep_merge(scenario_values("injected"), {"fullnameOverride": "entitlements"})
    docs = render_parent(parent_chart, values)
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == "entitlements-api-key"
    env = env_of(app_pod(docs)["spec"]["containers"][1])
    assert env["SERVER_API_KEY"]["secretKeyRef"]["name"] == "entitlements-api-key"


def test_port_above_1024_needs_no_sysctl(parent_chart: helm_python.Chart) -> None:
    values = deep_merge(scenario_values("native-sidecar"), {"sidecar": {"port": 50051}})
    spec = app_pod(render_parent(parent_chart, values))["spec"]
    assert not spec["securityContext"]["sysctls"]
    assert env_of(spec["initContainers"][0])["PORT"] == "50051"


def test_parent_chart_gets_the_same_validation(parent_chart: helm_python.Chart) -> None:
    values = deep_merge(scenario_values("native-sidecar"), {"apiKey": {"existingSecret": ""}})
    message = render_error(parent_chart, {"entitlement-sidecar": values})
    assert "apiKey: no API key" in message
    message = render_error(parent_chart, {"entitlement-sidecar": {"sidecar": {"port": "80"}}})
    assert "/sidecar/port" in message and "want integer" in message


def test_include_with_the_wrong_argument_says_how(tmp_path: Path, parent_chart_dir: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(parent_chart_dir, broken)
    deployment = broken / "templates" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace('"release" .Release', '"rel" .Release'))
    with helm_python.Chart.load(broken) as chart:
        message = render_error(chart, {"entitlement-sidecar": scenario_values("injected")})
    assert 'take (dict "values"' in message

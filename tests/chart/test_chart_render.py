"""Every scenario in helm/entitlement-sidecar/ci renders, validates against Kubernetes schemas and
keeps the chart's contract: probes, security, resources, names, labels, wiring between objects."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from tests.chart.chart_support import (
    NEWEST_KUBE,
    OLDEST_KUBE,
    Manifest,
    by_kind,
    containers,
    deep_merge,
    env_of,
    is_crd_kind,
    is_hook,
    kinds,
    one,
    pod_template,
    render,
    scenario_names,
    scenario_values,
    validate,
)
from tests.chart.conftest import Renders

SCENARIOS = scenario_names()

#: What each scenario makes. The injected forms make only the Secret (if any): the sidecar itself
#: renders inside the user's chart (test_chart_injection.py).
EXPECTED_KINDS: dict[str, dict[str, int]] = {
    "minimal": {},
    "injected": {"Secret": 1},
    "native-sidecar": {},
    "standalone-hpa": {
        "Deployment": 1,
        "Service": 1,
        "HorizontalPodAutoscaler": 1,
        "PodDisruptionBudget": 1,
        "ServiceMonitor": 1,
        "NetworkPolicy": 1,
        "Pod": 1,
    },
    "standalone-spool-claim": {
        "Deployment": 1,
        "Service": 1,
        "PodDisruptionBudget": 1,
        "Pod": 1,
    },
    "standalone-spool-ephemeral": {
        "Deployment": 1,
        "Service": 1,
        "PodDisruptionBudget": 1,
        "Pod": 1,
    },
    "persistent-cache-redis-tls": {
        "Deployment": 1,
        "Service": 1,
        "HorizontalPodAutoscaler": 1,
        "PodDisruptionBudget": 1,
        "ServiceAccount": 1,
        "Pod": 1,
    },
    "upstream-statefulset": {
        "Secret": 1,
        "ConfigMap": 1,
        "StatefulSet": 1,
        "Deployment": 2,
        "Service": 4,
        "PodDisruptionBudget": 2,
        "ServiceAccount": 1,
        "Pod": 1,
    },
}


def test_every_scenario_has_expectations() -> None:
    assert set(SCENARIOS) == set(EXPECTED_KINDS)
    assert {"minimal", "injected", "native-sidecar", "standalone-hpa"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_resources_per_scenario(renders: Renders, scenario: str) -> None:
    assert kinds(renders(scenario)) == EXPECTED_KINDS[scenario]


@pytest.mark.parametrize("kube", [OLDEST_KUBE, NEWEST_KUBE])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_validate_against_kubernetes(renders: Renders, scenario: str, kube: str) -> None:
    for doc in renders(scenario):
        if is_crd_kind(doc):
            continue  # no schema offline; test_service_monitor_selects_the_service checks it
        validate(doc, kube)


def all_docs(renders: Renders) -> list[tuple[str, Manifest]]:
    return [(s, d) for s in SCENARIOS for d in renders(s)]


def test_probes_on_every_container(renders: Renders) -> None:
    checked = 0
    for scenario in SCENARIOS:
        for ref in containers(renders(scenario)):
            c = ref.container
            port_names = {p["name"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe in c, f"{scenario}: {ref.label} has no {probe}"
                port = c[probe]["httpGet"]["port"]
                assert port in port_names, f"{scenario}: {ref.label} {probe} targets {port}"
            assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            checked += 1
    assert checked >= 5


def test_security_context_everywhere(renders: Renders) -> None:
    checked = 0
    for scenario in SCENARIOS:
        for ref in containers(renders(scenario), hooks=True):
            sc = ref.container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, ref.label
            assert sc["readOnlyRootFilesystem"] is True, ref.label
            assert sc["allowPrivilegeEscalation"] is False, ref.label
            assert sc["capabilities"]["drop"] == ["ALL"], ref.label
            assert "add" not in sc["capabilities"], ref.label
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", ref.label
            pod = ref.pod["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            assert pod["automountServiceAccountToken"] is False or "serviceAccountName" in pod
            # /tmp is a writable emptyDir (the event spool has a volume of its own)
            mounts = {m["mountPath"]: m["name"] for m in ref.container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], ref.label
            checked += 1
    assert checked >= 6


def test_resources_requested_and_memory_limited(renders: Renders) -> None:
    for scenario in SCENARIOS:
        for ref in containers(renders(scenario), hooks=True):
            res = ref.container["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), ref.label
            assert "memory" in res["limits"], ref.label


def test_every_container_runs_our_image_with_an_explicit_command(renders: Renders) -> None:
    commands = set()
    for scenario in SCENARIOS:
        for ref in containers(renders(scenario), hooks=True):
            assert ref.container["image"] == "ghcr.io/entitlement-sidecar/entitlement-sidecar:0.1.0"
            commands.add(ref.container["command"][0])
    assert commands == {
        "entitlement-sidecar",
        "entitlement-persistent-cache",
        "entitlement-upstream",
        "python",
    }


def test_labels_and_release_scoped_names(renders: Renders) -> None:
    for scenario, doc in all_docs(renders):
        meta = doc["metadata"]
        assert meta["name"].startswith("rel-entitlement-sidecar-"), meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "entitlement-sidecar"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "entitlement-sidecar-0.1.0"
        assert labels["app.kubernetes.io/component"], f"{scenario}: {meta['name']}"
        assert meta["namespace"] == "apps"


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_select_their_pods(renders: Renders) -> None:
    for scenario in SCENARIOS:
        docs = renders(scenario)
        workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
        for w in workloads:
            pod_labels = w["spec"]["template"]["metadata"]["labels"]
            assert selector_matches(w["spec"]["selector"]["matchLabels"], pod_labels)
        for svc in by_kind(docs, "Service"):
            matched = [
                w
                for w in workloads
                if selector_matches(
                    svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]
                )
            ]
            assert len(matched) == 1, f"{scenario}: Service {svc['metadata']['name']}"
            ports = {
                p["name"]
                for c in matched[0]["spec"]["template"]["spec"]["containers"]
                for p in c["ports"]
            }
            for port in svc["spec"]["ports"]:
                assert port["targetPort"] in ports
        for pdb in by_kind(docs, "PodDisruptionBudget"):
            assert any(
                selector_matches(
                    pdb["spec"]["selector"]["matchLabels"],
                    w["spec"]["template"]["metadata"]["labels"],
                )
                for w in workloads
            )
        for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]
            scaled = one(docs, target["kind"], target["name"])
            assert "replicas" not in scaled["spec"], (
                "an HPA owns replicas; the Deployment must not set them"
            )


def test_two_releases_in_one_namespace_do_not_collide(chart: helm_python.Chart) -> None:
    values = scenario_values("upstream-statefulset")
    names_a = {(d["kind"], d["metadata"]["name"]) for d in render(chart, values, release="a")}
    names_b = {(d["kind"], d["metadata"]["name"]) for d in render(chart, values, release="b")}
    assert len(names_a) == 13 and not names_a & names_b


def test_standalone_service_port_80_to_the_grpc_container_port(renders: Renders) -> None:
    docs = renders("standalone-hpa")
    svc = one(docs, "Service", "-sidecar")
    grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["port"] == 80 and grpc["targetPort"] == "grpc" and grpc["appProtocol"] == "grpc"
    template = pod_template(one(docs, "Deployment"))
    assert template is not None
    c = template["spec"]["containers"][0]
    assert {"name": "grpc", "containerPort": 80, "protocol": "TCP"} in c["ports"]
    # a non-root process binds port 80 through the safe pod sysctl
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in template["spec"][
        "securityContext"
    ]["sysctls"]
    env = env_of(c)
    assert env["PORT"] == "80" and env["BIND_ADDRESS"] == "0.0.0.0"
    assert env["STARTUP_WAIT_SECONDS"] == "-1", "standalone readiness is strict by default"
    assert env["WORKERS"] == "1", "one process per pod unless asked"
    assert env["CACHE_MAX_SIZE_BYTES"] == "402653184", "large numbers must not print as floats"
    assert env["MAX_MESSAGE_BYTES"] == "4194304"


def test_persistent_cache_env_and_service_account(renders: Renders) -> None:
    docs = renders("persistent-cache-redis-tls")
    template = pod_template(one(docs, "Deployment", "-persistent-cache"))
    assert template is not None
    env = env_of(template["spec"]["containers"][0])
    assert env["REDIS_ENVIRONMENT_PREFIX"] == "production"
    assert env["REDIS_HOST"] == "master.entitlements.abc123.use1.cache.amazonaws.com"
    assert (
        env["REDIS_PORT"] == "6380"
        and env["REDIS_TLS"] == "1"
        and env["REDIS_USERNAME"] == "entitlements"
    )
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    assert env["EVENTS_REDIS_URL"] == {"secretKeyRef": {"name": "events-redis", "key": "url"}}
    assert env["KEYS_TTL_IN_SECS"] == "-1" and env["BATCH_SIZE"] == "1000"
    assert env["HTTP_PORT"] == "8081", "set explicitly: the sidecar's HTTP port is 8080"
    assert env["SERVER_API_KEY"] == {
        "secretKeyRef": {"name": "entitlement-api-key", "key": "SERVER_API_KEY"}
    }
    assert "BLOCK_MS" not in env, "unset tuning values keep the service's defaults"
    sa = one(docs, "ServiceAccount")
    assert template["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_whole_topology_wiring(renders: Renders) -> None:
    docs = renders("upstream-statefulset")
    sts = one(docs, "StatefulSet")
    upstream_svc = one(docs, "Service", "-upstream")
    headless = one(docs, "Service", "-upstream-headless")
    assert (
        sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == headless["metadata"]["name"]
    )
    assert headless["spec"]["clusterIP"] == "None"
    url = f"http://{upstream_svc['metadata']['name']}.apps.svc:{upstream_svc['spec']['ports'][0]['port']}"
    for suffix in ("-sidecar", "-persistent-cache"):
        template = pod_template(one(docs, "Deployment", suffix))
        assert template is not None
        assert env_of(template["spec"]["containers"][0])["API_URL"] == url
    spec = sts["spec"]["template"]["spec"]
    up = spec["containers"][0]
    env = env_of(up)
    mounts = {m["name"]: m["mountPath"] for m in up["volumeMounts"]}
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert env["UPSTREAM_DATABASE"].startswith(mounts[claim["metadata"]["name"]] + "/")
    assert env["UPSTREAM_BIND_ADDRESS"] == "0.0.0.0"
    # the catalog file the env names is the ConfigMap key mounted there
    catalog_volume = next(v for v in spec["volumes"] if v["name"] == "catalog")
    cm = one(docs, "ConfigMap")
    assert catalog_volume["configMap"]["name"] == cm["metadata"]["name"]
    item = catalog_volume["configMap"]["items"][0]
    assert item["key"] in cm["data"]
    assert env["CATALOG_PATH"] == f"{mounts['catalog']}/{item['path']}"
    # upstream publishes its change stream to the cache Redis, over TLS, with the Secret's password
    assert env["EVENTS_REDIS_URL"] == "rediss://:$(REDIS_PASSWORD)@redis-master.redis.svc:6379/0"
    names = [e["name"] for e in up["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("EVENTS_REDIS_URL"), "$(VAR) needs VAR first"
    assert env["REDIS_ENVIRONMENT_PREFIX"] == "staging"


def test_checksums_roll_pods_when_config_changes(chart: helm_python.Chart) -> None:
    base = scenario_values("upstream-statefulset")

    def annotations(values: dict[str, Any]) -> dict[str, dict[str, str]]:
        out = {}
        for doc in render(chart, values):
            template = pod_template(doc)
            if template is not None and not is_hook(doc):
                out[doc["metadata"]["name"]] = template["metadata"]["annotations"]
        return out

    before = annotations(base)
    new_key = annotations(deep_merge(base, {"apiKey": {"value": "rotated"}}))
    new_catalog = annotations(
        deep_merge(base, {"upstream": {"catalog": {"inline": "features: []\n"}}})
    )
    assert len(before) == 3
    for name, ann in before.items():
        assert new_key[name]["checksum/secret"] != ann["checksum/secret"], name
    upstream = next(n for n in before if n.endswith("-upstream"))
    assert new_catalog[upstream]["checksum/catalog"] != before[upstream]["checksum/catalog"]


def test_service_monitor_selects_the_service(renders: Renders) -> None:
    docs = renders("standalone-hpa")
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    svc = one(docs, "Service")
    assert selector_matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["apps"]
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert all(e["port"] in port_names and e["path"] == "/metrics" for e in sm["spec"]["endpoints"])


def test_network_policy_opens_the_container_ports(renders: Renders) -> None:
    docs = renders("standalone-hpa")
    np = one(docs, "NetworkPolicy")
    template = pod_template(one(docs, "Deployment"))
    assert template is not None
    assert selector_matches(
        np["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"]
    )
    container_ports = {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    opened = {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]}
    assert opened == container_ports == {80, 8080}
    grpc_rule = next(r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == 80)
    assert grpc_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"entitlements-client": "true"}}}
    ]


def test_off_by_default_extras(renders: Renders) -> None:
    for scenario in ("persistent-cache-redis-tls", "upstream-statefulset"):
        found = kinds(renders(scenario))
        assert "ServiceMonitor" not in found and "NetworkPolicy" not in found


def test_standalone_workers_reach_the_container(chart: helm_python.Chart) -> None:
    values = deep_merge(
        scenario_values("standalone-hpa"), {"sidecar": {"standalone": {"workers": 2}}}
    )
    template = one(render(chart, values), "Deployment")["spec"]["template"]
    assert env_of(template["spec"]["containers"][0])["WORKERS"] == "2"

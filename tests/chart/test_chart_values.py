"""Bad values fail the render with the message a user needs; lint --strict passes; versions agree."""

from __future__ import annotations

import tomllib
from typing import Any

import helm_python
import pytest
import yaml

from tests.chart.chart_support import (
    CHART_DIR,
    ROOT,
    deep_merge,
    env_of,
    one,
    render,
    render_error,
    render_notes,
    scenario_names,
    scenario_values,
)

BASE: dict[str, Any] = {"apiKey": {"value": "k"}, "apiUrl": "https://entitlements.example.com"}
REDIS = {"environmentPrefix": "prod", "host": "redis.cache.svc"}

# (case id, values on top of BASE (None: instead of BASE), what the message must say)
BAD: list[tuple[str, dict[str, Any] | None, list[str]]] = [
    (
        "unknown key",
        {"sidecar": {"prot": 81}},
        ["at '/sidecar'", "additional properties 'prot' not allowed"],
    ),
    ("unknown top-level key", {"replicas": 3}, ["additional properties 'replicas' not allowed"]),
    (
        "no workers",
        {"sidecar": {"standalone": {"workers": 0}}},
        ["at '/sidecar/standalone/workers'", "minimum"],
    ),
    (
        "misspelled nested key",
        {"persistentCache": {"serviceAccount": {"anotations": {}}}},
        ["'anotations' not allowed"],
    ),
    (
        "port as a string",
        {"sidecar": {"port": "80"}},
        ["at '/sidecar/port'", "got string, want integer"],
    ),
    (
        "boolean as a string",
        {"redis": {"tls": "yes"}},
        ["at '/redis/tls'", "got string, want boolean"],
    ),
    ("unknown log level", {"logLevel": "verbose"}, ["at '/logLevel'"]),
    (
        "ttl zero",
        {"persistentCache": {"keysTtlSeconds": 0}},
        ["at '/persistentCache/keysTtlSeconds'"],
    ),
    ("bad digest", {"image": {"digest": "latest"}}, ["at '/image/digest'"]),
    (
        "extraEnv without a name",
        {"sidecar": {"extraEnv": [{"value": "x"}]}},
        ["missing property 'name'"],
    ),
    (
        "no API key",
        {"apiUrl": "https://x.example"},
        ["apiKey: no API key", "apiKey.existingSecret"],
    ),
    (
        "no backend",
        {"apiKey": {"value": "k"}},
        ["apiUrl: no entitlement backend", "upstream.enabled=true"],
    ),
    (
        "Redis without TLS",
        {"redis": {**REDIS, "tls": False}},
        ["redis.tls: Redis would be reached without TLS", "redis.requireTls=false"],
    ),
    (
        "plaintext events URL",
        {"redis": {**REDIS, "events": {"url": "redis://stream.svc:6379/0"}}},
        ["redis.events.url: a redis:// URL is plaintext"],
    ),
    (
        "Redis tier without host",
        {"redis": {"environmentPrefix": "prod"}},
        ["redis.host: Redis is used"],
    ),
    (
        "persistent cache without prefix",
        {"persistentCache": {"enabled": True}, "redis": {"host": "r"}},
        ["redis.environmentPrefix: the persistent cache needs it"],
    ),
    (
        "cluster with db",
        {"redis": {**REDIS, "cluster": True, "db": 2}},
        ["redis.db: Redis Cluster only has database 0"],
    ),
    (
        "extraEnv overrides a managed variable",
        {
            "sidecar": {
                "extraEnv": [
                    {"name": "TZ", "value": "UTC"},
                    {"name": "LOG_LEVEL", "value": "debug"},
                ]
            }
        },
        ["sidecar.extraEnv[1] sets LOG_LEVEL, which the chart manages (from sidecar.logLevel)"],
    ),
    (
        "extraEnv sets an unset managed variable",
        {
            "persistentCache": {"enabled": True, "extraEnv": [{"name": "BLOCK_MS", "value": "5"}]},
            "redis": REDIS,
        },
        [
            "persistentCache.extraEnv[0] sets BLOCK_MS, which the chart manages (from persistentCache.blockMs)"
        ],
    ),
    (
        "extraEnv twice",
        {"sidecar": {"extraEnv": [{"name": "TZ", "value": "UTC"}, {"name": "TZ", "value": "CET"}]}},
        ["sidecar.extraEnv[1] sets TZ a second time"],
    ),
    (
        "extraEnv sets SPOOL_DIR",
        {"sidecar": {"extraEnv": [{"name": "SPOOL_DIR", "value": "/data"}]}},
        ["sidecar.extraEnv[0] sets SPOOL_DIR, which the chart manages (from sidecar.spool.dir)"],
    ),
    (
        "extraEnv sets SPOOL_MAX_BYTES of a disabled spool",
        {
            "sidecar": {
                "spool": {"enabled": False},
                "extraEnv": [{"name": "SPOOL_MAX_BYTES", "value": "1"}],
            }
        },
        [
            "sidecar.extraEnv[0] sets SPOOL_MAX_BYTES, which the chart manages (from sidecar.spool.maxBytes)"
        ],
    ),
    (
        "spool dir relative",
        {"sidecar": {"spool": {"dir": "var/spool"}}},
        ['sidecar.spool.dir: "var/spool" is not an absolute path'],
    ),
    (
        "spool dir /tmp",
        {"sidecar": {"spool": {"dir": "/tmp/"}}},
        ['sidecar.spool.dir: "/tmp/" would mount the spool volume over /tmp'],
    ),
    ("spool dir empty", {"sidecar": {"spool": {"dir": ""}}}, ["at '/sidecar/spool/dir'"]),
    (
        "spool emptyDir only as big as maxBytes",
        {
            "sidecar": {
                "spool": {"maxBytes": 1073741824, "volume": {"emptyDir": {"sizeLimit": "1Gi"}}}
            }
        },
        [
            "sidecar.spool.volume.emptyDir.sizeLimit: 1Gi cannot hold a full spool of sidecar.spool.maxBytes=1073741824",
            "Set sizeLimit to at least 1536Mi (1.5 x maxBytes), better 2112Mi",
        ],
    ),
    (
        "spool sizeLimit not a quantity",
        {"sidecar": {"spool": {"volume": {"emptyDir": {"sizeLimit": "lots"}}}}},
        ['sidecar.spool.volume.emptyDir.sizeLimit: "lots" is not a Kubernetes quantity'],
    ),
    (
        "spool volume with two sources",
        {"sidecar": {"spool": {"volume": {"emptyDir": {}, "hostPath": {"path": "/x"}}}}},
        ["sidecar.spool.volume: sets emptyDir and hostPath; a volume has exactly one source"],
    ),
    (
        "spool volume read-only",
        {"sidecar": {"spool": {"volume": {"configMap": {"name": "c"}}}}},
        ["sidecar.spool.volume: configMap is read-only"],
    ),
    (
        "spool volume named",
        {"sidecar": {"spool": {"volume": {"name": "mine", "emptyDir": {}}}}},
        ["sidecar.spool.volume: give only the volume source", "the chart names the volume"],
    ),
    (
        "spool claim shared by standalone replicas",
        {
            "sidecar": {
                "spool": {"volume": {"persistentVolumeClaim": {"claimName": "spool"}}},
                "standalone": {
                    "enabled": True,
                    "replicaCount": 1,
                    "autoscaling": {"enabled": True},
                },
            }
        },
        ["sidecar.spool.volume: one persistentVolumeClaim holds the spool of one sidecar"],
    ),
    (
        "spool maxBytes below the sidecar's floor",
        {"sidecar": {"spool": {"maxBytes": 10}}},
        ["at '/sidecar/spool/maxBytes'", "minimum: got 10, want 1,024"],
    ),
    (
        "spool maxBytes as a string",
        {"sidecar": {"spool": {"maxBytes": "256Mi"}}},
        ["at '/sidecar/spool/maxBytes'", "want integer"],
    ),
    (
        "spool unknown key",
        {"sidecar": {"spool": {"sizeLimit": "1Gi"}}},
        ["at '/sidecar/spool'", "additional properties 'sizeLimit' not allowed"],
    ),
    (
        "spool volume not an object",
        {"sidecar": {"spool": {"volume": "emptyDir"}}},
        ["at '/sidecar/spool/volume'", "want object"],
    ),
    (
        "catalog twice",
        {"upstream": {"enabled": True, "catalog": {"inline": "x: 1", "existingConfigMap": "c"}}},
        ["upstream.catalog: set inline or existingConfigMap, not both"],
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"), [(v, e) for _, v, e in BAD], ids=[i for i, _, _ in BAD]
)
def test_bad_values_fail_with_a_clear_message(
    chart: helm_python.Chart, values: dict[str, Any], expected: list[str]
) -> None:
    merged = values if "apiKey" in values or "apiUrl" in values else deep_merge(BASE, values)
    message = render_error(chart, merged)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_every_problem_is_reported_at_once(chart: helm_python.Chart) -> None:
    message = render_error(chart, {"redis": {"environmentPrefix": "p", "tls": False}})
    for fragment in ("apiKey:", "apiUrl:", "redis.host:", "redis.tls:"):
        assert fragment in message


def test_plaintext_redis_is_an_explicit_opt_out(chart: helm_python.Chart) -> None:
    values = deep_merge(
        BASE,
        {
            "redis": {**REDIS, "tls": False, "requireTls": False},
            "sidecar": {"standalone": {"enabled": True}},
        },
    )
    docs = render(chart, values)
    env = env_of(one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["REDIS_TLS"] == "0"
    assert "WARNING: Redis is reached without TLS" in render_notes(chart, values)


def test_offline_sidecar_needs_no_key_or_backend(chart: helm_python.Chart) -> None:
    values = {"sidecar": {"offline": True, "standalone": {"enabled": True}}}
    env = env_of(
        one(render(chart, values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    )
    assert env["OFFLINE"] == "1"
    assert "SERVER_API_KEY" not in env and "API_URL" not in env


def test_default_values_are_complete_in_the_schema(chart: helm_python.Chart) -> None:
    # values.yaml must validate against the schema (no stale or missing keys) ...
    chart.validate_schema(yaml.safe_load((CHART_DIR / "values.yaml").read_text()))
    # ... and every object in the schema refuses unknown keys
    schema = chart.schema
    assert schema is not None

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, path
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}[{i}]")

    walk(schema, "")


@pytest.mark.parametrize("scenario", scenario_names())
def test_lint_strict(scenario: str) -> None:
    report = helm_python.lint(
        CHART_DIR, scenario_values(scenario), strict=True, kube_version="v1.27.0"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], problems or report["errors"]


def test_lint_reports_a_broken_value() -> None:
    report = helm_python.lint(CHART_DIR, {"sidecar": {"port": "eighty"}}, strict=True)
    assert report["errors"], "lint must fail on values the schema refuses"


def test_versions_agree(chart: helm_python.Chart) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["kubeVersion"] == ">=1.27.0-0"
    assert meta["appVersion"] == project
    # the constant the include templates use (no .Chart in a parent chart's context)
    docs = render(chart, BASE)
    assert one(docs, "Secret")["metadata"]["labels"]["app.kubernetes.io/version"] == project
    kustomize_patch = (ROOT / "kustomize" / "sidecar-injection" / "sidecar-patch.yaml").read_text()
    assert f"entitlement-sidecar:{project}" in kustomize_patch


def test_notes_point_at_the_service_and_the_docs(chart: helm_python.Chart) -> None:
    notes = render_notes(chart, scenario_values("standalone-hpa"))
    assert "rel-entitlement-sidecar-sidecar.apps.svc:80" in notes
    assert "Readiness is strict" in notes
    assert "docs/deploy.md" in notes and "helm test rel" in notes

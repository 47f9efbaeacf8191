"""Rendering and inspecting the Helm chart offline (the Helm v4 engine of helm-python-sdk).

Kept out of conftest.py so tests import one module object. Importing helm_python or
kubernetes_validate fails loudly (a collection error) when they are missing: the chart tests never
skip. Install them with `source scripts/bootstrap.sh dev` (the `deploy` extra).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from kubernetes_validate.utils import latest_version  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "entitlement-sidecar"
CI_DIR = CHART_DIR / "ci"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
KUSTOMIZE_DIR = ROOT / "kustomize" / "sidecar-injection"

RELEASE = "rel"
NAMESPACE = "apps"
#: The chart's kubeVersion floor and the newest schema kubernetes-validate ships.
OLDEST_KUBE = "1.27"
NEWEST_KUBE = latest_version()
#: Native sidecars (restartPolicy on an init container) are on by default from 1.29.
NATIVE_SIDECAR_KUBE = "1.29"

Manifest = dict[str, Any]
Values = dict[str, Any]


def scenario_names() -> list[str]:
    return sorted(p.stem for p in CI_DIR.glob("*.yaml"))


def scenario_values(name: str) -> Values:
    loaded = yaml.safe_load((CI_DIR / f"{name}.yaml").read_text())
    assert isinstance(loaded, dict), f"ci/{name}.yaml is not a mapping"
    return loaded


def parse(rendered: dict[str, str]) -> list[Manifest]:
    """Every non-empty YAML document of a render, NOTES.txt left out."""
    docs: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: a document is not a mapping"
                docs.append(doc)
    return docs


def render(chart: helm_python.Chart, values: Values, *, release: str = RELEASE) -> list[Manifest]:
    return parse(chart.render(values, name=release, namespace=NAMESPACE))


def render_notes(chart: helm_python.Chart, values: Values) -> str:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def render_error(chart: helm_python.Chart, values: Values) -> str:
    """The message of a render that must fail; fails the test when it renders."""
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError(f"rendering succeeded with values {values!r}")


def deep_merge(base: Values, override: Values) -> Values:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate(doc: Manifest, kube_version: str) -> None:
    """Validate against the strict schema of one Kubernetes version (raises on any problem)."""
    kubernetes_validate.validate(doc, kube_version, strict=True)


#: Kinds from CRDs, which kubernetes-validate has no schema for; checked structurally instead.
CRD_GROUPS = ("monitoring.coreos.com/",)


def is_crd_kind(doc: Manifest) -> bool:
    return str(doc["apiVersion"]).startswith(CRD_GROUPS)


def kinds(docs: list[Manifest]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in docs:
        counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
    return counts


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def is_hook(doc: Manifest) -> bool:
    return "helm.sh/hook" in doc["metadata"].get("annotations", {})


def pod_template(doc: Manifest) -> Manifest | None:
    """The pod spec holder of a workload ({metadata, spec}), or None for other kinds."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        template: Manifest = doc["spec"]["template"]
        return template
    if doc["kind"] == "Pod":
        return doc
    return None


@dataclass(frozen=True)
class ContainerRef:
    workload: str
    init: bool
    container: Manifest
    pod: Manifest

    @property
    def label(self) -> str:
        return f"{self.workload}/{self.container['name']}"


def containers(docs: list[Manifest], *, hooks: bool = False) -> Iterator[ContainerRef]:
    for doc in docs:
        template = pod_template(doc)
        if template is None or (is_hook(doc) and not hooks):
            continue
        spec = template["spec"]
        workload = f"{doc['kind']}/{doc['metadata']['name']}"
        for c in spec.get("initContainers") or []:
            yield ContainerRef(workload, True, c, template)
        for c in spec["containers"]:
            yield ContainerRef(workload, False, c, template)


def env_of(container: Manifest) -> dict[str, Any]:
    """name -> value (a str) or valueFrom (a dict); duplicate names fail."""
    env: dict[str, Any] = {}
    for var in container.get("env") or []:
        assert var["name"] not in env, f"{container['name']}: {var['name']} set twice"
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def copy_parent_chart(destination: Path) -> Path:
    """The app-chart fixture with the current chart in charts/ (`helm dependency build`)."""
    parent = destination / "app-chart"
    shutil.copytree(FIXTURES / "app-chart", parent)
    shutil.copytree(
        CHART_DIR, parent / "charts" / CHART_DIR.name, ignore=shutil.ignore_patterns("ci")
    )
    return parent

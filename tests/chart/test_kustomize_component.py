"""The kustomize component injects the same container the Helm chart injects.

There is no kustomize binary here, so the test applies the strategic merge patch itself, with the
merge keys Kubernetes declares for the fields the patch touches (containers, volumes, env, ports
merge by name; anything else is replaced), then validates the result against Kubernetes schemas.
"""

from __future__ import annotations

from typing import Any

import helm_python
import pytest
import yaml

from tests.chart.chart_support import (
    KUSTOMIZE_DIR,
    NEWEST_KUBE,
    OLDEST_KUBE,
    ROOT,
    env_of,
    parse,
    validate,
)

EXAMPLE_DIR = ROOT / "kustomize" / "example"
#: patchMergeKey "name" in the Kubernetes API for these lists (PodSpec, Container).
MERGE_BY_NAME = {"containers", "initContainers", "volumes", "env", "ports", "volumeMounts"}


def load(path: Any) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            merged[k] = strategic_merge(base[k], v, k) if k in base else v
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_BY_NAME:
        out = list(base)
        for item in patch:
            names = [x.get("name") for x in out]
            if item.get("name") in names:
                i = names.index(item["name"])
                out[i] = strategic_merge(out[i], item)
            else:
                out.append(item)
        return out
    return patch


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    pairs = [term.split("=", 1) for term in selector.split(",")]
    return all(labels.get(k.strip()) == v.strip() for k, v in pairs)


@pytest.fixture(scope="module")
def component() -> dict[str, Any]:
    return load(KUSTOMIZE_DIR / "kustomization.yaml")


@pytest.fixture(scope="module")
def patched(component: dict[str, Any]) -> dict[str, Any]:
    deployment = load(EXAMPLE_DIR / "deployment.yaml")
    (patch_ref,) = component["patches"]
    target = patch_ref["target"]
    assert (target["group"], target["version"], target["kind"]) == (
        "apps",
        "v1",
        deployment["kind"],
    )
    assert label_selector_matches(target["labelSelector"], deployment["metadata"]["labels"])
    patch = load(KUSTOMIZE_DIR / patch_ref["path"])
    assert (patch["apiVersion"], patch["kind"]) == ("apps/v1", "Deployment")
    merged: dict[str, Any] = strategic_merge(deployment, {"spec": patch["spec"]})
    return merged


def test_component_shape(component: dict[str, Any]) -> None:
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    example = load(EXAMPLE_DIR / "kustomization.yaml")
    assert "../sidecar-injection" in example["components"]
    assert "deployment.yaml" in example["resources"]
    generated = {g["name"] for g in example["configMapGenerator"]}
    patch = load(KUSTOMIZE_DIR / "sidecar-patch.yaml")
    sidecar = patch["spec"]["template"]["spec"]["containers"][0]
    assert {ref["configMapRef"]["name"] for ref in sidecar["envFrom"]} <= generated


@pytest.mark.parametrize("kube", [OLDEST_KUBE, NEWEST_KUBE])
def test_patched_deployment_validates(patched: dict[str, Any], kube: str) -> None:
    validate(patched, kube)


def test_patch_keeps_the_app_and_adds_the_sidecar(patched: dict[str, Any]) -> None:
    spec = patched["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["shop", "entitlement-sidecar"]
    assert spec["securityContext"]["runAsNonRoot"] is True, "the app's pod settings are kept"
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in spec["securityContext"][
        "sysctls"
    ]
    sidecar = spec["containers"][1]
    mounts = {m["name"] for m in sidecar["volumeMounts"]}
    assert mounts <= {v["name"] for v in spec["volumes"]}
    ports = [p["containerPort"] for c in spec["containers"] for p in c["ports"]]
    assert len(ports) == len(set(ports)), "no port clash with the app"


def test_same_container_as_the_helm_chart(
    patched: dict[str, Any], parent_chart: helm_python.Chart
) -> None:
    """The component's container equals what the chart injects with default values."""
    values = {
        "apiKey": {"existingSecret": "entitlement-sidecar-api-key"},
        "apiUrl": "https://x.example",
    }
    docs = parse(
        parent_chart.render({"entitlement-sidecar": values}, name="shop", namespace="shop")
    )
    app = next(d for d in docs if d["kind"] == "Deployment")
    helm_spec = app["spec"]["template"]["spec"]
    helm_sidecar = helm_spec["containers"][1]
    kustomize_spec = patched["spec"]["template"]["spec"]
    kustomize_sidecar = kustomize_spec["containers"][1]
    for field in (
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
        "resources",
        "securityContext",
        "volumeMounts",
    ):
        assert kustomize_sidecar[field] == helm_sidecar[field], field
    # every volume the injected container mounts (/tmp and the event spool) is the same
    helm_volumes = {v["name"]: v for v in helm_spec["volumes"]}
    kustomize_volumes = {v["name"]: v for v in kustomize_spec["volumes"]}
    mounted = [m["name"] for m in helm_sidecar["volumeMounts"]]
    assert mounted == ["entitlement-sidecar-tmp", "entitlement-sidecar-spool"]
    for name in mounted:
        assert kustomize_volumes[name] == helm_volumes[name], name
    helm_env = env_of(helm_sidecar)
    kustomize_env = env_of(kustomize_sidecar)
    for name, value in kustomize_env.items():
        assert helm_env[name] == value, name

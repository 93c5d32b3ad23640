"""deploy/ against the real tools' schemas: `kubectl kustomize` renders the Kubernetes
kustomization and `kubernetes-validate` checks every object against the Kubernetes
OpenAPI schemas; the compose file is checked against the Compose Specification's JSON
schema (the copy the `check-jsonschema` package ships). Each test skips, saying why,
where its tool is absent (`.ci/run` and `make install` provide them)."""

from __future__ import annotations

import importlib.resources
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy_files import K8S, compose

ALERTS = K8S.parent / "prometheus" / "alerts.yml"

REAL_SECRETS = {
    "POSTGRES_PASSWORD": "p",
    "MOMENTS_WEBHOOK_SECRET": "w",
    "MOMENTS_API_KEYS": '["k"]',
    "MOMENTS_READ_API_KEYS": '["r"]',
    "MOMENTS_DESK_KEYS": '["a=d"]',
    "MOMENTS_ID_HASH_KEY": "i",
    "GRAFANA_ADMIN_PASSWORD": "g",
    "GRAFANA_DB_PASSWORD": "d",
}


def rendered_kustomization(directory: Path = K8S) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (.ci/run installs one where none is found)")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_monitoring_component_adds_a_service_monitor_and_the_alerts(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "base")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources:\n  - ../base\ncomponents:\n  - ../base/monitoring\n"
    )
    documents = rendered_kustomization(overlay)
    by_kind = {doc["kind"]: doc for doc in documents}
    monitor, rule = by_kind["ServiceMonitor"], by_kind["PrometheusRule"]
    assert monitor["metadata"]["namespace"] == rule["metadata"]["namespace"] == "moments"
    selected = monitor["spec"]["selector"]["matchLabels"]
    services = [doc for doc in documents if doc["kind"] == "Service"]
    assert len(services) == 5
    for service in services:
        assert selected.items() <= service["metadata"]["labels"].items()
        assert "metrics" in {port["name"] for port in service["spec"]["ports"]}
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_kustomize_renders_every_object_into_the_namespace() -> None:
    documents = rendered_kustomization()
    kinds = [doc["kind"] for doc in documents]
    for kind in ("Namespace", "ConfigMap", "Job", "PodDisruptionBudget", "NetworkPolicy"):
        assert kind in kinds
    assert kinds.count("Deployment") == 5 and kinds.count("Service") == 5
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "moments", doc["metadata"]["name"]
    images = {
        container["image"]
        for doc in documents
        if doc["kind"] in {"Deployment", "Job"}
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"moments:0.1.0"}


def test_every_rendered_object_is_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (the dev extra has it)"
    )
    version = kubernetes_validate.latest_version()
    problems = []
    for doc in rendered_kustomization():
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
    assert not problems, f"invalid for Kubernetes {version}:\n" + "\n".join(problems)


def test_every_rendered_pod_is_confined_and_egress_is_policed() -> None:
    """What the rendered manifests must hold beyond schema validity: the RuntimeDefault
    seccomp profile, no service account token, CPU and memory limits, and NetworkPolicies
    that deny ingress and egress to every pod of the namespace but what is opened."""
    documents = rendered_kustomization()
    pods = [doc for doc in documents if doc["kind"] in {"Deployment", "Job"}]
    assert pods
    for doc in pods:
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
    policies = [doc for doc in documents if doc["kind"] == "NetworkPolicy"]
    catch_all = {
        kind
        for doc in policies
        if doc["spec"]["podSelector"] == {}
        for kind in doc["spec"]["policyTypes"]
    }
    assert catch_all == {"Ingress", "Egress"}
    assert all(doc["metadata"]["namespace"] == "moments" for doc in policies)


def compose_schema() -> dict[str, Any]:
    pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema (the Compose schema) is not installed"
    )
    vendor = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


@pytest.mark.parametrize("env", [{"MOMENTS_DEV": "1"}, REAL_SECRETS], ids=["trial", "real"])
def test_the_compose_file_follows_the_compose_specification(env: dict[str, str]) -> None:
    from jsonschema.validators import validator_for

    schema = compose_schema()
    validator = validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose(env)), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'.'.join(str(p) for p in error.path)}: {error.message}" for error in errors
    )


def test_the_compose_schema_check_catches_a_broken_file() -> None:
    from jsonschema.validators import validator_for

    schema = compose_schema()
    broken = compose()
    broken["services"]["worker"]["restart"] = ["always"]  # must be a string
    broken["services"]["collector"]["depends_on"] = {"topics-init": {"condition": "sometime"}}
    assert len(list(validator_for(schema)(schema).iter_errors(broken))) >= 2

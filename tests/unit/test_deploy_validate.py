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
from typing import Any

import pytest
import yaml

from tests.support.deploy_files import K8S, compose

REAL_SECRETS = {
    "POSTGRES_PASSWORD": "p",
    "MOMENTS_WEBHOOK_SECRET": "w",
    "MOMENTS_API_KEYS": '["k"]',
    "MOMENTS_READ_API_KEYS": '["r"]',
    "GRAFANA_ADMIN_PASSWORD": "g",
}


def rendered_kustomization() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (.ci/run installs one where none is found)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {K8S} failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


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

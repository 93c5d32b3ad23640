"""deploy/: docker-compose, Dockerfile and Kubernetes manifests are coherent with the code.

Checks that every `MOMENTS_*` variable they set is a field of `Settings` and
that the values parse; that the services the issue asks for are there; that
Prometheus scrapes the processes where they serve metrics; and, where the
Docker CLI has the compose plugin, `docker compose config` accepts the file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from moments.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
SETTING_VARS = {f"MOMENTS_{name.upper()}" for name in Settings.model_fields}
MOMENTS_SERVICES = {"worker", "sink-postgres", "sink-webhook", "collector"}
SECRET_KEYS = {"database-url", "webhook-secret", "api-keys", "kafka-sasl-password"}


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` with nothing set: the default or empty."""
    return re.sub(
        r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value.replace("$$", "$")
    )


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly these MOMENTS_* variables would read them."""
    with monkeypatch.context() as patch:
        for name in list(Settings.model_fields):
            patch.delenv(f"MOMENTS_{name.upper()}", raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == kind]


# --------------------------------------------------------------------------- docker compose


def test_compose_has_the_stack_of_the_issue() -> None:
    services = compose()["services"]
    images = {name: str(service.get("image", "")) for name, service in services.items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "schema-registry" in images["schema-registry"]
    assert images["postgres"] == "postgres:16"
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["grafana"].startswith("grafana/grafana:")
    assert set(services) >= MOMENTS_SERVICES
    assert services["topics-init"]["restart"] == "no"
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image version"


def test_compose_moments_services_build_from_the_dockerfile() -> None:
    services = compose()["services"]
    commands = {
        "worker": ["worker"],
        "sink-postgres": ["sink", "postgres"],
        "sink-webhook": ["sink", "webhook"],
        "collector": ["collect"],
    }
    for name, command in commands.items():
        service = services[name]
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
        assert service["command"] == command
        deps = service["depends_on"]
        assert deps["topics-init"]["condition"] == "service_completed_successfully"


def test_compose_references_are_consistent() -> None:
    spec = compose()
    services = spec["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in spec["volumes"], f"{name}: undeclared volume {source}"


def test_compose_moments_env_names_are_settings_and_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    for name in [*MOMENTS_SERVICES, "topics-init"]:
        env = service_env(services[name])
        ours = {k: v for k, v in env.items() if k.startswith("MOMENTS_")}
        unknown = set(ours) - SETTING_VARS
        assert not unknown, f"{name}: not settings of moments/settings.py: {sorted(unknown)}"
        settings = settings_from(ours, monkeypatch)
        assert settings.bootstrap == "kafka:9092"
        if name != "topics-init":
            assert settings.metrics_port > 0 and settings.metrics_host == "0.0.0.0", name
    webhook = settings_from(service_env(services["sink-webhook"]), monkeypatch)
    assert set(webhook.webhook_urls) == {"care", "billing", "crm", "feedback", "recognition"}
    assert webhook.webhook_secret is not None
    postgres = settings_from(service_env(services["sink-postgres"]), monkeypatch)
    assert postgres.database_url and "@postgres:5432/" in postgres.database_url
    collector = settings_from(service_env(services["collector"]), monkeypatch)
    assert collector.collector_host == "0.0.0.0" and collector.api_keys


def test_prometheus_scrapes_every_moments_service_where_it_serves_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    for name in MOMENTS_SERVICES:
        target = targets[f"moments-{name}"]
        host, port = target.rsplit(":", 1)
        assert host == name
        settings = settings_from(service_env(services[name]), monkeypatch)
        assert int(port) == settings.metrics_port
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).exists()
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_grafana_is_provisioned_from_deploy() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "./grafana/dashboards"
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "moments.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert list((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode
    != 0,
    reason="the docker CLI with the compose plugin is not installed (YAML checks above ran)",
)
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_project_as_a_non_root_user() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(line.startswith("&& pip install .") for line in lines)  # in the gcc RUN step
    assert any(line.startswith("COPY ") and "setup.py" in line.split() for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert lines[-2:] == ['ENTRYPOINT ["moments"]', 'CMD ["--help"]']
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


# --------------------------------------------------------------------------- Kubernetes


def test_k8s_manifests_parse_and_kustomization_lists_them() -> None:
    documents = k8s_documents()
    kinds = {doc["kind"] for _, doc in documents}
    assert {"Deployment", "Service", "ConfigMap", "Namespace", "Job"} <= kinds
    (kustomization,) = k8s_kind("Kustomization")
    listed = set(kustomization["resources"])
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files
    names = {doc["metadata"]["name"] for doc in k8s_kind("Deployment")}
    assert names == {f"moments-{name}" for name in MOMENTS_SERVICES}


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def test_k8s_env_is_settings_and_secrets_come_from_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (config_map,) = k8s_kind("ConfigMap")
    data = {k: str(v) for k, v in config_map["data"].items()}
    unknown = set(data) - SETTING_VARS
    assert not unknown, f"ConfigMap sets unknown settings: {sorted(unknown)}"
    settings = settings_from(data, monkeypatch)
    assert settings.kafka_extra["security.protocol"] == "SASL_SSL"
    assert "sasl.password" not in settings.kafka_extra  # the password is a Secret
    secret_vars: dict[str, set[str]] = {}
    for doc in [*k8s_kind("Deployment"), *k8s_kind("Job")]:
        for container in _containers(doc):
            assert container["envFrom"] == [{"configMapRef": {"name": "moments-config"}}]
            for item in container.get("env", []):
                assert item["name"] in SETTING_VARS, f"{item['name']} is not a setting"
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "moments-secrets" and ref["key"] in SECRET_KEYS
                secret_vars.setdefault(doc["metadata"]["name"], set()).add(item["name"])
    assert "MOMENTS_DATABASE_URL" in secret_vars["moments-sink-postgres"]
    assert "MOMENTS_WEBHOOK_SECRET" in secret_vars["moments-sink-webhook"]
    assert "MOMENTS_API_KEYS" in secret_vars["moments-collector"]
    assert all("MOMENTS_KAFKA_SECRET" in names for names in secret_vars.values())
    for secret_var in ("MOMENTS_DATABASE_URL", "MOMENTS_WEBHOOK_SECRET", "MOMENTS_API_KEYS"):
        assert secret_var not in data, f"{secret_var} belongs in the Secret"


def test_k8s_replicas_are_bounded_by_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    (config_map,) = k8s_kind("ConfigMap")
    settings = settings_from({k: str(v) for k, v in config_map["data"].items()}, monkeypatch)
    replicas = {doc["metadata"]["name"]: doc["spec"]["replicas"] for doc in k8s_kind("Deployment")}
    assert 1 <= replicas["moments-worker"] <= settings.interactions_partitions
    assert 1 <= replicas["moments-sink-postgres"] <= settings.action_partitions
    assert 1 <= replicas["moments-sink-webhook"] <= settings.action_partitions


def test_k8s_deployments_are_scrapable_non_root_and_selected_by_services() -> None:
    services = {doc["metadata"]["name"]: doc for doc in k8s_kind("Service")}
    for doc in k8s_kind("Deployment"):
        name = doc["metadata"]["name"]
        template = doc["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        (container,) = _containers(doc)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["metrics"] == int(template["metadata"]["annotations"]["prometheus.io/port"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert container["workingDir"] in mounts  # Faust and the CLI write relative paths
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["tcpSocket"]["port"] in ports
        service = services[name]
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_compose_and_k8s_agree_on_the_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    (config_map,) = k8s_kind("ConfigMap")
    k8s = settings_from({k: str(v) for k, v in config_map["data"].items()}, monkeypatch)
    worker = settings_from(service_env(compose()["services"]["worker"]), monkeypatch)
    assert k8s.metrics_port == worker.metrics_port == 9100
    assert json.loads(config_map["data"]["MOMENTS_WEBHOOK_URLS"]).keys() == {
        "care",
        "billing",
        "crm",
        "feedback",
        "recognition",
    }

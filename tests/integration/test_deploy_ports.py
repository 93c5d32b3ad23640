"""Every probe and scrape port in deploy/ is one the process really serves.

For each moments process that the Kubernetes manifests or docker-compose.yml
run, the test starts `moments <args>` with the environment those files give it
(ConfigMap, Secret references, compose `environment`) against the embedded
broker and PostgreSQL, and asks every port and path that the files point at:
liveness/readiness probes, the `prometheus.io/*` annotations, Service target
ports, compose healthchecks and the prometheus.yml scrape targets. Only two
things change: each port number is moved to a free loopback port (the same
move in the settings, the arguments and the expectations) and `0.0.0.0` becomes
`127.0.0.1`; the broker, database and secrets are the test's.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import Settings
from common.topics import ensure_topics
from moments.stack import free_port
from tests.support.deploy_files import (
    compose,
    containers,
    k8s_kind,
    scrape_targets,
    service_env,
)

#: Settings the test points at its own broker and database (or drops: SASL, registry).
REPLACED = {
    "MOMENTS_BOOTSTRAP",
    "MOMENTS_DATABASE_URL",
    "MOMENTS_SCHEMA_REGISTRY_URL",
    "MOMENTS_KAFKA_EXTRA",
    "MOMENTS_KAFKA_SECRET",
    "MOMENTS_REPLICATION_FACTOR",
    "MOMENTS_DATA_DIR",
    "MOMENTS_WORKER_STORE",
}
TEST_SECRETS = {
    "MOMENTS_API_KEYS": '["probe-test-key"]',
    "MOMENTS_READ_API_KEYS": '["probe-test-read-key"]',
    "MOMENTS_ID_HASH_KEY": "probe-test-hash-key",
    "MOMENTS_WEBHOOK_SECRET": "probe-test-secret",
}


@dataclass
class Expectation:
    """A port (and path, for HTTP) that a deploy file says the process serves."""

    port: int
    path: str | None  # None: a TCP connection is enough (tcpSocket probe, Service port)
    where: str


@dataclass
class Process:
    """One moments process as a deploy file runs it, and what the file expects of it."""

    source: str
    args: list[str]
    env: dict[str, str]
    expects: list[Expectation] = field(default_factory=list)


def _moments_args(command: list[str]) -> list[str]:
    return command[1:] if command and command[0] == "moments" else command


def k8s_processes() -> list[Process]:
    (config_map,) = k8s_kind("ConfigMap")
    base = {k: str(v) for k, v in config_map["data"].items()}
    processes = []
    for doc in k8s_kind("Deployment"):
        name = doc["metadata"]["name"]
        template = doc["spec"]["template"]
        (container,) = containers(doc)
        env = dict(base)
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef", {})
            if item["name"] in TEST_SECRETS:
                env[item["name"]] = TEST_SECRETS[item["name"]]
            elif not ref.get("optional"):
                env[item["name"]] = item.get("value", "")
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        process = Process(f"k8s {name}", _moments_args(container.get("args", [])), env)

        def port_of(ref: Any, ports: dict[str, int] = ports) -> int:
            return ports[ref] if isinstance(ref, str) else int(ref)

        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if probe is None:
                continue
            if "httpGet" in probe:
                get = probe["httpGet"]
                process.expects.append(
                    Expectation(port_of(get["port"]), get.get("path", "/"), probe_name)
                )
            elif "tcpSocket" in probe:
                process.expects.append(
                    Expectation(port_of(probe["tcpSocket"]["port"]), None, probe_name)
                )
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            process.expects.append(
                Expectation(
                    int(annotations["prometheus.io/port"]),
                    annotations.get("prometheus.io/path", "/metrics"),
                    "prometheus.io annotations",
                )
            )
        for service in k8s_kind("Service"):
            if service["spec"]["selector"].items() <= template["metadata"]["labels"].items():
                for port in service["spec"]["ports"]:
                    process.expects.append(
                        Expectation(
                            port_of(port["targetPort"]),
                            None,
                            f"Service {service['metadata']['name']} port {port['name']}",
                        )
                    )
        processes.append(process)
    return processes


def compose_processes() -> list[Process]:
    spec = compose()
    targets = scrape_targets()
    processes = []
    for name, service in spec["services"].items():
        build = service.get("build")
        command = service.get("command")
        if not build or service.get("entrypoint") or not isinstance(command, list):
            continue  # not a long-running moments process (topics-init, other images)
        process = Process(f"compose {name}", _moments_args(command), service_env(service))
        test = service.get("healthcheck", {}).get("test", [])
        for url in re.findall(r"http://[\w.-]+:(\d+)(/[\w/]*)", " ".join(test)):
            process.expects.append(Expectation(int(url[0]), url[1], "healthcheck"))
        for mapping in service.get("ports", []):
            container_port = int(str(mapping).rsplit(":", 1)[-1])
            process.expects.append(Expectation(container_port, None, f"published {mapping}"))
        for job, hosts in targets.items():
            for host, port, path in hosts:
                if host == name:
                    process.expects.append(Expectation(port, path, f"prometheus.yml job {job}"))
        processes.append(process)
    return processes


PROCESSES = [*k8s_processes(), *compose_processes()]


def _translate(process: Process) -> tuple[dict[int, int], list[str], dict[str, str]]:
    """Free loopback ports for every port number the process's files use."""
    numbers = {e.port for e in process.expects}
    for key, value in process.env.items():
        if key.endswith("_PORT") and value.isdigit():
            numbers.add(int(value))
    numbers |= {int(a) for a in process.args if a.isdigit()}
    moved = {n: free_port() for n in numbers}
    args = [
        str(moved[int(a)]) if a.isdigit() else ("127.0.0.1" if a == "0.0.0.0" else a)
        for a in process.args
    ]
    env = {}
    for key, value in process.env.items():
        if key.endswith("_PORT") and value.isdigit():
            value = str(moved[int(value)])
        env[key] = "127.0.0.1" if value == "0.0.0.0" else value
    return moved, args, env


def _answers(port: int, path: str | None) -> tuple[bool, str]:
    if path is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True, "accepts connections"
        except OSError as exc:
            return False, f"connection failed: {exc}"
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return False, f"answered {response.status_code}"
    if path == "/metrics" and "# HELP" not in response.text:
        return False, "answered 200 but not Prometheus metrics"
    return True, "200"


@pytest.fixture
def running(settings: Settings, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("process", PROCESSES, ids=[p.source.replace(" ", "-") for p in PROCESSES])
def test_every_probe_and_scrape_port_is_served(
    process: Process,
    settings: Settings,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    assert process.expects, f"{process.source}: no probe or scrape port to check"
    moved, args, env = _translate(process)
    unique = uuid.uuid4().hex[:8]
    env = {k: v for k, v in env.items() if k not in REPLACED}
    ensure_topics(settings)
    env.update(
        {
            "MOMENTS_BOOTSTRAP": settings.kafka.bootstrap or "",
            "MOMENTS_DATABASE_URL": settings.database.database_url or "",
            "MOMENTS_TOPIC_PREFIX": settings.kafka.topic_prefix,
            "MOMENTS_INTERACTIONS_PARTITIONS": str(settings.kafka.interactions_partitions),
            "MOMENTS_ACTION_PARTITIONS": str(settings.kafka.action_partitions),
            "MOMENTS_DATA_DIR": str(tmp_path),
            "MOMENTS_WORKER_APP_ID": f"probe-worker-{unique}",
            "MOMENTS_SINK_GROUP": f"probe-sink-{unique}",
            "MOMENTS_WEBHOOK_GROUP": f"probe-webhook-{unique}",
            "MOMENTS_WORKER_WEB_PORT": str(free_port()),
            "MOMENTS_BROKER_REBALANCE_TIMEOUT_S": "3",
            "MOMENTS_BROKER_SESSION_TIMEOUT_S": "6",
        }
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    child_env.update(env)
    log = tmp_path / "process.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moments", *args],
            env=child_env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running.append(proc)

    pending: dict[tuple[int, str | None], list[str]] = {}
    for e in process.expects:
        pending.setdefault((e.port, e.path), []).append(e.where)
    last: dict[tuple[int, str | None], str] = {}
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline and proc.poll() is None:
        for key in list(pending):
            ok, detail = _answers(moved[key[0]], key[1])
            last[key] = detail
            if ok:
                del pending[key]
        time.sleep(0.3)
    failures = [
        f"{', '.join(wheres)}: port {port} {path or '(tcp)'}: {last.get((port, path), 'not tried')}"
        for (port, path), wheres in pending.items()
    ]
    if proc.poll() is not None:
        failures.append(f"the process exited with {proc.returncode}")
    tail = log.read_text(errors="replace")[-1500:]
    assert not failures, (
        f"{process.source} (moments {' '.join(process.args)}):\n"
        + "\n".join(failures)
        + f"\n--- its output ---\n{tail}"
    )

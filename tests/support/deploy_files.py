"""Reading deploy/ as the tools do: compose files with their `${...}` interpolation, the
Kubernetes manifests, the Prometheus scrape targets. Shared by the deploy tests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
#: What a local trial (`MOMENTS_DEV=1`) sets; real deployments set real secrets.
DEV_ENV = {"MOMENTS_DEV": "1"}

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|\$(\w+)")


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is not set: compose refuses the file."""


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's interpolation: `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}` and `$$` for a literal `$`."""
    values = dict(env or {})

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        current = values.get(name)
        empty_counts = operator is not None and operator.startswith(":")
        unset = current is None or (empty_counts and current == "")
        if operator is None:
            return current or ""
        if operator.endswith("-"):
            return interpolate(argument, values) if unset else str(current)
        if operator.endswith("?"):
            if unset:
                raise InterpolationError(f"{name}: {argument}")
            return str(current)
        return "" if unset else interpolate(argument, values)  # ":+" / "+"

    parts = value.split("$$")
    return "$".join(_VARIABLE.sub(one, part) for part in parts)


def interpolated(node: Any, env: Mapping[str, str] | None = None) -> Any:
    """A parsed YAML document with every string interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(item, env) for key, item in node.items()}
    return node


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose reads it with `env` (default: a local trial)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, Any] = interpolated(loaded, DEV_ENV if env is None else env)
    return result


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == kind]


def containers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return found


def scrape_targets() -> dict[str, list[tuple[str, int, str]]]:
    """prometheus.yml: job → [(host, port, metrics path)]."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets: dict[str, list[tuple[str, int, str]]] = {}
    for job in config["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.setdefault(job["job_name"], []).append((host, int(port), path))
    return targets

"""Helpers for tests that run real ops tools: skipping when a tool is missing, a Prometheus server.

CI installs Debian's `prometheus` (prometheus + promtool) and `kcat` packages
(.ci/run, as root); where they are missing the tests that need them skip and
say so.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from moments.stack import free_port, wait_for_port
from tests.support.timing import scaled

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
NO_TOOL = "not on PATH (CI installs Debian's {package} package: apt-get install {package})"


def require(tool: str, package: str) -> str:
    """The tool's path, or skip the test naming the Debian package that provides it."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} " + NO_TOOL.format(package=package))
    return path


@contextlib.contextmanager
def prometheus_server(
    workdir: Path, targets: dict[str, list[str]], *, rules: bool = True
) -> Iterator[str]:
    """A real Prometheus scraping `targets` ({job: ["host:port"]}) every second; its base URL.

    Loads our alert rules unless `rules` is false. Skips the test when the
    `prometheus` binary is missing; stops the server on exit.
    """
    binary = require("prometheus", "prometheus")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]}
            for job, hosts in targets.items()
        ],
    }
    if rules:
        config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        try:
            wait_for_port("127.0.0.1", port, timeout_s=30)
        except Exception:
            raise AssertionError(
                f"Prometheus did not start:\n{log_path.read_text()[-2000:]}"
            ) from None
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query against Prometheus' HTTP API."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        payload = json.load(response)
    assert payload["status"] == "success", payload
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


def wait_for_value(base: str, promql: str, wanted: float, timeout_s: float) -> None:
    """Wait until the query's first sample equals `wanted`."""
    wait_for(base, promql, lambda value: value == wanted, f"== {wanted}", timeout_s)


def wait_for(
    base: str, promql: str, accept: Any, what: str, timeout_s: float
) -> list[dict[str, Any]]:
    """Wait until `accept(value of the first sample)` is true; return the result."""
    timeout_s = scaled(timeout_s)
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = query(base, promql)
        except OSError as exc:
            last = exc
        else:
            last = result
            if result and accept(float(result[0]["value"][1])):
                return result
        time.sleep(0.25)
    raise AssertionError(f"{promql} never became {what} in {timeout_s:.0f} s; last: {last}")

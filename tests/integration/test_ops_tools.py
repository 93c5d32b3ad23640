"""Real ops tools check the ops artefacts: promtool, a Prometheus server, kcat.

CI installs Debian's `prometheus` (prometheus + promtool) and `kcat` packages
(.ci/run, as root); where they are missing these tests skip and say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client import start_http_server

from common.metrics import EVENTS_CONSUMED
from common.settings import Settings
from moments.kcat import bundled_librdkafka, kcat_environment, library_dir
from moments.stack import free_port
from schemas.codec import codec_for
from schemas.records import ActionEvent
from tests.integration.ops_tools import PROMETHEUS_DIR, prometheus_server, require, wait_for_value


def run(command: list[str], cwd: Path | None = None, timeout_s: float = 120) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


# --------------------------------------------------------------------------- promtool


def test_promtool_checks_the_rules_and_the_config() -> None:
    promtool = require("promtool", "prometheus")
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    count = sum(len(group["rules"]) for group in rules["groups"])
    output = run([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR)
    assert f"SUCCESS: {count} rules found" in output
    output = run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    promtool = require("promtool", "prometheus")
    output = run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check is real: a rule with a syntax error fails."""
    promtool = require("promtool", "prometheus")
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(foo[5m])\n"
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


# --------------------------------------------------------------------------- Prometheus server


@pytest.fixture
def metrics_endpoint() -> Iterator[int]:
    """This process serves moments' metrics over HTTP, as a worker does."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    yield port
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def prometheus(tmp_path: Path, metrics_endpoint: int) -> Iterator[str]:
    """A real Prometheus scraping `metrics_endpoint` every second, with our alert rules loaded."""
    targets = {"moments-worker": [f"127.0.0.1:{metrics_endpoint}"]}
    with prometheus_server(tmp_path / "prometheus", targets) as base:
        yield base


def test_real_prometheus_scrapes_moments_metrics_as_they_move(prometheus: str) -> None:
    base = prometheus
    counter = EVENTS_CONSUMED.labels("web", "feedback_given")
    counter.inc(3)
    promql = (
        'moments_events_consumed_total{job="moments-worker",channel="web",type="feedback_given"}'
    )
    wait_for_value(base, promql, counter._value.get(), timeout_s=60)
    wait_for_value(base, 'up{job="moments-worker"}', 1.0, timeout_s=30)

    # Events flow: the next scrapes see the counter move.
    counter.inc(2)
    wait_for_value(base, promql, counter._value.get(), timeout_s=30)

    # The server loaded our alert rules.
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as response:
        groups = json.load(response)["data"]["groups"]
    alerts = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"MomentsWorkerDown", "MomentsDeadLetterQueueGrowing"} <= alerts


# --------------------------------------------------------------------------- kcat


def an_action(n: int) -> ActionEvent:
    customer = f"cust-{n % 3}"
    return ActionEvent(
        action_id=f"kcat-{n:03d}",
        customer_id=customer,
        rule="thank_meter_reading",
        action="thank_meter_reading",
        rule_version=1,
        destination="recognition",
        priority=20,
        reason="Sent a meter reading; thank them.",
        evidence=[f"e-{n}"],
        channel_hint="web",
        triggered_at=1_767_225_600_000 + n,
        details={"n": str(n)},
    )


def parse_kcat(output: bytes) -> list[tuple[str, int, bytes]]:
    """Records printed with -f '%k\\n%R%s': key line, 4-byte big-endian length, the value."""
    records: list[tuple[str, int, bytes]] = []
    position = 0
    while position < len(output):
        newline = output.index(b"\n", position)
        key = output[position:newline].decode()
        length = int.from_bytes(output[newline + 1 : newline + 5], "big", signed=True)
        start = newline + 5
        records.append((key, length, output[start : start + length]))
        position = start + length
    return records


def kcat_env(kcat: str, bootstrap: str, tmp_path: Path) -> dict[str, str]:
    """The environment under which kcat talks to this broker (see `moments.kcat`).

    Debian bookworm's kcat links librdkafka 2.0.2, which cannot read Tansu's
    ApiVersions answer; against Apache Kafka it works as is. When the probe
    fails, run the same kcat on the librdkafka that the confluent-kafka wheel bundles.
    """
    env = dict(os.environ)
    probe = [kcat, "-b", bootstrap, "-L", "-m", "3", "-q"]
    if subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0:
        return env
    bundled = bundled_librdkafka()
    if bundled is None:
        pytest.skip("kcat's librdkafka cannot talk to Tansu and no newer librdkafka is bundled")
    env = kcat_environment(env, library_dir(tmp_path / "librdkafka", bundled))
    result = subprocess.run(probe, capture_output=True, timeout=30, check=False, env=env)
    assert result.returncode == 0, f"kcat cannot reach {bootstrap}: {result.stderr.decode()}"
    return env


def produce_actions(settings: Settings, topic: str, actions: list[ActionEvent]) -> None:
    codec = codec_for(ActionEvent)
    producer = Producer(settings.kafka_config(partitioner="murmur2_random"))
    for action in actions:
        producer.produce(topic, key=action.customer_id.encode(), value=codec.encode(action))
        # One batch per record: Tansu's high watermark is the last batch's base offset + 1,
        # so this keeps `kcat -e` from stopping before the last record.
        assert producer.flush(30) == 0


def test_kcat_reads_actions_written_with_the_codec(settings: Settings, tmp_path: Path) -> None:
    kcat = require("kcat", "kcat")
    env = kcat_env(kcat, settings.kafka.bootstrap or "", tmp_path)
    codec = codec_for(ActionEvent)
    topic = settings.topics.action("recognition")
    actions = [an_action(n) for n in range(6)]
    produce_actions(settings, topic, actions)

    result = subprocess.run(
        [
            kcat,
            "-b",
            settings.kafka.bootstrap or "",
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-c",
            str(len(actions)),
            "-e",
            "-q",
            "-f",
            "%k\n%R%s",
        ],
        capture_output=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr.decode()
    records = parse_kcat(result.stdout)
    assert len(records) == len(actions)
    decoded = {codec.decode(value).action_id: (key, value) for key, _, value in records}
    assert set(decoded) == {a.action_id for a in actions}
    for action in actions:
        key, value = decoded[action.action_id]
        assert key == action.customer_id
        assert value[:2] == b"\xc3\x01"  # Avro single-object encoding, readable by any client
        assert codec.decode(value) == action


def test_moments_kcat_reads_the_embedded_broker_with_b_filled_in(
    settings: Settings, tmp_path: Path
) -> None:
    """`moments kcat` as the README shows it: no -b, no LD_LIBRARY_PATH, Debian's kcat."""
    require("kcat", "kcat")
    topic = settings.topics.action("care")
    actions = [an_action(n) for n in range(3)]
    produce_actions(settings, topic, actions)
    env = {
        **os.environ,
        "MOMENTS_BOOTSTRAP": settings.kafka.bootstrap or "",
        "MOMENTS_DATA_DIR": str(tmp_path / "data"),
    }
    command = [sys.executable, "-m", "moments", "kcat", "-C", "-t", topic]
    command += ["-o", "beginning", "-c", "3", "-e", "-q", "-f", "%k\n"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(a.customer_id for a in actions)

"""The compacted `rules` topic on a real broker: publish, history, rollback (docs/design.md 8.2)."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from common.rules_topic import pack_history
from common.settings import Settings
from moments.cli import app
from processors.engine import DEFAULT_PACK_PATH
from tests.support.packs import TENURE_10, tenure_version, variant


def test_publish_history_rollback(settings: Settings, tmp_path: Path) -> None:
    env = {
        "MOMENTS_BOOTSTRAP": settings.kafka.bootstrap,
        "MOMENTS_TOPIC_PREFIX": settings.kafka.topic_prefix,
    }
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["rules", *args], env=env)
        return result.exit_code, result.output

    code, output = cli("publish", str(DEFAULT_PACK_PATH), "--author", "ann")
    assert code == 0, output
    assert "at offset" in output
    unraised = variant(tmp_path, "unraised.yaml", TENURE_10)
    code, output = cli("publish", str(unraised))
    assert code == 2 and "recognize_tenure" in output  # refused: what check refuses
    raised = variant(tmp_path, "raised.yaml", TENURE_10, tenure_version(2))
    code, output = cli("publish", str(raised), "--author", "bob")
    assert code == 0 and "1 changed" in output, output
    history = pack_history(settings, "default")
    assert [(h.author, "min_tenure_years: 10" in h.yaml) for h in history] == [
        ("ann", False),
        ("bob", True),
    ]
    code, output = cli("history")
    assert code == 0 and "recognize_tenure v2" in output, output
    code, output = cli("rollback", "--author", "cy")
    assert code == 0, output
    history = pack_history(settings, "default")
    assert len(history) == 3
    assert history[-1].yaml == DEFAULT_PACK_PATH.read_text(encoding="utf-8")
    assert history[-1].author == "cy"
    admin = AdminClient(settings.kafka_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topics.rules)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"


def test_rules_diff_from_a_topic_equals_the_diff_of_the_same_file(
    settings: Settings, tmp_path: Path
) -> None:
    from processors.diff import diff_file, diff_topic
    from processors.engine import load_rule_pack
    from tests.support.history import (
        UNTIL,
        create_topic,
        publish_events,
        simulated_events,
        write_events,
    )

    topic = f"{settings.kafka.topic_prefix}history"
    create_topic(settings, topic, 1)
    events = simulated_events()
    publish_events(settings, topic, events)
    old = load_rule_pack()
    new = load_rule_pack(variant(tmp_path, "t10.yaml", TENURE_10, tenure_version(2)))
    from_topic = diff_topic(settings, topic, old, new, until_ms=UNTIL)
    from_file = diff_file(write_events(tmp_path / "e.jsonl", events), old, new, until_ms=UNTIL)
    assert from_topic.to_json() == from_file.to_json()
    assert from_topic.events == len(events)
    assert from_topic.rules["recognize_tenure"].removed > 0

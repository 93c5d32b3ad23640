"""The compacted `rules` topic on a real broker: publish, history, rollback (docs/design.md 8.2)."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from common.rules_topic import pack_history
from common.settings import Settings
from moments.cli import app
from processors.engine import DEFAULT_PACK_PATH
from processors.engine.switching import pack_id
from tests.support.kafka import read_topic
from tests.support.packs import DEFAULT_TEXT, TENURE_10, tenure_version, variant


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
    assert [h.version for h in history] == [1, 2, 3]
    assert history[-1].yaml == DEFAULT_PACK_PATH.read_text(encoding="utf-8")
    assert history[-1].author == "cy"
    admin = AdminClient(settings.kafka_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topics.rules)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"


def test_a_pack_published_first_rolls_back_and_the_default_follows(
    settings: Settings, tmp_path: Path
) -> None:
    """Before the default was ever published: rollback reaches it, publishing it needs no
    bump; every version has its own key; a record keyed the old way is read."""
    env = {
        "MOMENTS_BOOTSTRAP": settings.kafka.bootstrap,
        "MOMENTS_TOPIC_PREFIX": settings.kafka.topic_prefix,
    }
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, ["rules", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    raised = variant(tmp_path, "raised.yaml", TENURE_10, tenure_version(2))
    r, d = pack_id(raised.read_text(encoding="utf-8")), pack_id(DEFAULT_TEXT)
    cli("publish", str(raised))
    cli("rollback")
    cli("publish", str(raised))
    cli("publish", str(DEFAULT_PACK_PATH))
    producer = Producer(settings.kafka_config())  # what a publisher before versions wrote
    old = {"pack": "default", "yaml": DEFAULT_TEXT, "published_at": "x", "author": "old"}
    producer.produce(settings.topics.rules, key=b"default", value=json.dumps(old).encode())
    producer.flush(10)
    cli("rollback")
    history = pack_history(settings, "default")
    assert [(h.version, pack_id(h.yaml)) for h in history] == [
        (1, r),
        (2, d),
        (3, r),
        (4, d),
        (5, d),
        (6, r),
    ]
    keys = [m.key() for m in read_topic(settings, [settings.topics.rules])]
    assert keys == [
        b"default@1",
        b"default@2",
        b"default@3",
        b"default@4",
        b"default",
        b"default@6",
    ]
    rows = json.loads(cli("history", "--json"))
    assert [(row["version"], row["hash"]) for row in rows] == [
        (h.version, pack_id(h.yaml)) for h in history
    ]


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

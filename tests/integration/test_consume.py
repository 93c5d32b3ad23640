"""`moments consume` on every kind of topic, through the CLI, against the embedded broker:
events, late events, actions, decisions, action statuses, both dead-letter topics (error
headers beside the decoded value, or the raw bytes when it does not decode) and control
records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from common.settings import Settings
from moments.cli import app
from schemas.codec import codec_for
from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent
from schemas.wire import CONTROL_HEADER, TICK, dead_letter_headers, erasure_headers
from tests.support.sinks import ACTION, DECISION, EVENT

#: Tansu's high watermark stops before the tail of the last batch: a record after ours.
FENCE = b"fence"


def produce(settings: Settings, topic: str, *records: tuple[bytes | None, list[Any]]) -> None:
    producer = Producer(settings.kafka_config())
    for value, headers in records:
        producer.produce(topic, value=value, key=b"c-1", partition=0, headers=headers)
        producer.flush(10)
    producer.produce(topic, value=FENCE, partition=0)
    producer.flush(10)


def consume(settings: Settings, topic: str, count: int) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        app,
        ["consume", topic, "--from-beginning", "--follow", "--max", str(count)],
        env=settings.as_env(),
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def codecs() -> dict[type, Any]:
    return {kind: codec_for(kind) for kind in (InteractionEvent, ActionEvent, Decision)}


def test_records_topics_are_read_with_their_own_reader(
    settings: Settings, codecs: dict[type, Any]
) -> None:
    topics = settings.topics
    event = codecs[InteractionEvent].encode(EVENT)
    produce(settings, topics.interactions, (event, []), (b"", [(CONTROL_HEADER, TICK)]))
    produce(settings, topics.interactions_late, (event, []))
    produce(
        settings,
        topics.action("care"),
        (codecs[ActionEvent].encode(ACTION), []),
        (None, erasure_headers(1_767_323_045_000)),
    )
    produce(settings, topics.decisions, (codecs[Decision].encode(DECISION), []))

    first, tick = consume(settings, topics.interactions, 2)
    assert first["value"]["event_id"] == "e-1" and first["value"]["type"] == EVENT.type
    assert first["key"] == "c-1" and first["topic"] == topics.interactions
    assert tick["control"] == "tick" and "value" not in tick
    (late,) = consume(settings, topics.interactions_late, 1)
    assert late["value"]["occurred_at"] == "2026-01-02T03:04:05.000+00:00"
    action, marker = consume(settings, topics.action("care"), 2)
    assert action["value"]["action_id"] == "a-1" and action["value"]["reason"] == ACTION.reason
    assert marker["control"] == "erasure" and marker["erased_at"].startswith("2026-01-02")
    (decision,) = consume(settings, topics.decisions, 1)
    assert decision["value"]["outcome"] == "suppressed"


def test_the_action_status_topic_is_read_as_statuses(settings: Settings) -> None:
    status = ActionStatus(
        action_id="a-1",
        customer_id="c-1",
        rule="life_event_check_in",
        destination="care",
        status="acknowledged",
        owner="ana",
        resolution=None,
        at=1_767_323_045_000,
    )
    topic = settings.topics.action_status
    produce(settings, topic, (codec_for(ActionStatus).encode(status), []))
    (read,) = consume(settings, topic, 1)
    assert read["value"]["status"] == "acknowledged" and read["value"]["owner"] == "ana"
    assert read["value"]["at"] == "2026-01-02T03:04:05.000+00:00"


def test_dead_letters_show_their_error_headers_and_the_value_when_it_decodes(
    settings: Settings, codecs: dict[type, Any]
) -> None:
    topics = settings.topics
    source = (topics.action("care"), 1, 42)
    headers = dead_letter_headers([], "webhook", "HTTPStatusError", "status 410", source)
    produce(
        settings,
        topics.actions_dlq,
        (codecs[ActionEvent].encode(ACTION), headers),
        (b"\x00garbage", dead_letter_headers([], "decode", "DecodeError", "bad", source)),
    )
    produce(
        settings,
        topics.interactions_dlq,
        (
            b"{not avro",
            dead_letter_headers([], "decode", "DecodeError", "x", (topics.interactions, 0, 7)),
        ),
    )

    delivered, garbage = consume(settings, topics.actions_dlq, 2)
    assert delivered["error"]["stage"] == "webhook" and delivered["error"]["offset"] == "42"
    assert delivered["error"]["topic"] == topics.action("care")
    assert delivered["value"]["action_id"] == "a-1"
    assert garbage["value_base64"] == "AGdhcmJhZ2U=" and "decode_error" in garbage
    (poison,) = consume(settings, topics.interactions_dlq, 1)
    assert poison["error"]["stage"] == "decode" and poison["value_base64"]


def test_a_topic_without_a_reader_is_named_with_the_known_ones(settings: Settings) -> None:
    result = CliRunner().invoke(
        app, ["consume", "no-such-topic", "--from-beginning"], env=settings.as_env()
    )
    assert result.exit_code == 2
    assert "no reader for topic 'no-such-topic'" in result.output
    assert settings.topics.decisions in result.output

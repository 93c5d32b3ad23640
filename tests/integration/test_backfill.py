"""Backfill over a real (Tansu) topic gives what replay gives over the same events."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from common.settings import Settings
from common.topics import ensure_topics
from processors.backfill import backfill_topic
from processors.replay import replay_file
from producers.publisher import Publisher
from schemas.records import InteractionEvent
from tests.support.history import (
    UNTIL,
    create_topic,
    publish_events,
    simulated_events,
    write_events,
)


def test_one_partition_backfill_is_byte_identical_to_replay(
    settings: Settings, tmp_path: Path
) -> None:
    topic = f"{settings.kafka.topic_prefix}history"
    create_topic(settings, topic, 1)
    events = simulated_events()
    publish_events(settings, topic, events)
    summary = backfill_topic(
        settings,
        topic,
        actions_out=tmp_path / "backfill-actions.jsonl",
        decisions_out=tmp_path / "backfill-decisions.jsonl",
        status_out=tmp_path / "backfill-status.jsonl",
        until_ms=UNTIL,
    )
    replayed = replay_file(
        write_events(tmp_path / "events.jsonl", events),
        actions_out=tmp_path / "replay-actions.jsonl",
        decisions_out=tmp_path / "replay-decisions.jsonl",
        status_out=tmp_path / "replay-status.jsonl",
        until_ms=UNTIL,
    )
    assert summary.events == len(events) and summary.garbage == 0
    assert summary.actions == replayed.actions > 0
    assert (tmp_path / "backfill-actions.jsonl").read_bytes() == (
        tmp_path / "replay-actions.jsonl"
    ).read_bytes()
    assert (tmp_path / "backfill-decisions.jsonl").read_bytes() == (
        tmp_path / "replay-decisions.jsonl"
    ).read_bytes()
    statuses = (tmp_path / "backfill-status.jsonl").read_bytes()  # docs/design.md 12.3
    assert statuses == (tmp_path / "replay-status.jsonl").read_bytes() and b'"open"' in statuses


def test_partitioned_backfill_matches_replay_and_counts_garbage(
    settings: Settings, tmp_path: Path
) -> None:
    topic, partitions = settings.topics.interactions, settings.kafka.interactions_partitions
    events = simulated_events()
    publish_events(settings, topic, events[: len(events) // 2])
    producer = Producer(settings.kafka_config())
    producer.produce(topic, b"not avro at all", b"CUST-x", partition=1)
    producer.produce(topic, None, b"CUST-y", partition=2)  # a tombstone
    producer.flush(10)
    publish_events(settings, topic, events[len(events) // 2 :])
    summary = backfill_topic(
        settings, topic, actions_out=tmp_path / "backfill.jsonl", until_ms=UNTIL
    )
    replay_file(
        write_events(tmp_path / "events.jsonl", events),
        actions_out=tmp_path / "replay.jsonl",
        partitions=partitions,
        until_ms=UNTIL,
    )
    backfilled = (tmp_path / "backfill.jsonl").read_text().splitlines()
    replayed = (tmp_path / "replay.jsonl").read_text().splitlines()
    assert summary.events == len(events)
    assert summary.garbage == 2
    assert any("decode" in s for s in summary.garbage_samples)
    assert summary.partitions == partitions
    # Partition by partition (replay interleaves them by line); each customer's actions alike.
    assert sorted(backfilled) == sorted(replayed) and len(replayed) > 0

    def customer(line: str) -> str:
        return str(json.loads(line)["customer_id"])

    assert sorted(backfilled, key=customer) == sorted(replayed, key=customer)  # stable sort


@pytest.mark.parametrize("processes", [1, 2])
def test_shadow_run_produces_to_prefixed_topics_only(
    settings: Settings, tmp_path: Path, processes: int
) -> None:
    events = simulated_events()[:400]
    publish_events(settings, settings.topics.interactions, events)
    shadow = settings.replace(topic_prefix=f"shadow-{settings.kafka.topic_prefix}")
    ensure_topics(shadow)
    summary = backfill_topic(
        settings,
        settings.topics.interactions,
        to_topics=True,
        output_prefix=shadow.kafka.topic_prefix,
        actions_out=tmp_path / "shadow.jsonl",
        processes=processes,
    )
    assert summary.actions > 0 and summary.processes == processes
    consumer = Consumer(
        settings.kafka_config(**{"group.id": "check", "enable.partition.eof": False})
    )
    consumer.assign(
        [
            TopicPartition(shadow.topics.action(d), p, 0)
            for d in shadow.topics.actions
            for p in range(settings.kafka.action_partitions)
        ]
    )
    received = 0
    deadline = time.monotonic() + 30
    while received < summary.actions and time.monotonic() < deadline:
        received += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    consumer.close()
    assert received == summary.actions
    production = Consumer(settings.kafka_config(**{"group.id": "check-production"}))
    for destination in settings.topics.actions:
        for partition in range(settings.kafka.action_partitions):
            _, high = production.get_watermark_offsets(
                TopicPartition(settings.topics.action(destination), partition),
                timeout=10,
                cached=False,
            )
            assert high == 0
    production.close()


def test_an_erasure_record_drops_the_customer_as_in_the_worker(
    settings: Settings, tmp_path: Path
) -> None:
    topic = f"{settings.kafka.topic_prefix}erased"
    create_topic(settings, topic, 1)
    t0 = 1_767_323_045_000

    def case(customer: str) -> InteractionEvent:
        return InteractionEvent(
            event_id=f"{customer}-case",
            customer_id=customer,
            channel="email",
            type="complaint_filed",
            occurred_at=t0,
            source="test",
            reference=f"{customer}-1",
        )

    publish_events(settings, topic, [case("gone"), case("kept")])
    with Publisher(settings, topic=topic) as publisher:
        publisher.publish_erasure("gone")
    summary = backfill_topic(settings, topic, actions_out=tmp_path / "a.jsonl", until_ms=UNTIL)
    fired = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert summary.garbage == 0 and summary.events == 2
    assert sorted((a["customer_id"], a["rule"]) for a in fired) == [
        # gone's complaint waited for the watermark (case_follow_up decides at it) and its
        # pending timers went with the erasure: nothing for gone
        ("kept", "case_follow_up"),
        ("kept", "case_follow_up.when_overdue"),  # not done in 24 h (docs/design.md 12.4)
        ("kept", "case_unresolved"),
    ]


def test_n_processes_give_the_bytes_of_one_late_records_and_decisions_included(
    settings: Settings, tmp_path: Path
) -> None:
    topic = f"{settings.kafka.topic_prefix}shared"
    create_topic(settings, topic, 5)
    events = simulated_events()
    newest = max(e.occurred_at for e in events)
    for index, customer in enumerate(sorted({e.customer_id for e in events})[:12]):
        # far behind every partition's watermark at the end: too late to apply
        late = dataclasses.replace(events[0], event_id=f"late-{index}", customer_id=customer)
        events.append(dataclasses.replace(late, occurred_at=newest - 10 * 86_400_000))
    publish_events(settings, topic, events)
    outputs = {}
    for processes in (1, 3):
        paths = {k: tmp_path / f"{processes}-{k}.jsonl" for k in ("a", "d", "s", "l")}
        summary = backfill_topic(
            settings,
            topic,
            actions_out=paths["a"],
            decisions_out=paths["d"],
            status_out=paths["s"],
            late_out=paths["l"],
            until_ms=UNTIL,
            processes=processes,
        )
        assert summary.processes == processes
        assert (summary.events, summary.too_late) == (len(events) - 12, 12)
        outputs[processes] = (
            {k: p.read_bytes() for k, p in paths.items()},
            (summary.actions, summary.decisions, summary.garbage, summary.future_dated),
        )
    assert outputs[1] == outputs[3]
    files = outputs[1][0]
    assert all(files[k] for k in ("a", "d", "s")) and files["l"].count(b"\n") == 12

"""Channel files and the simulator through the publisher SDK into the real `interactions` topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from moments.settings import Settings
from producers.adapters import ingest
from producers.publisher import Publisher
from producers.simulator import publish_simulation, simulate
from schemas.codec import AvroCodec
from schemas.records import InteractionEvent

DATA = Path(__file__).resolve().parents[1] / "data" / "channels"
FENCE = b"fence"


def _read_back(
    settings: Settings, wanted: Iterable[str], timeout_s: float = 30.0
) -> dict[str, InteractionEvent]:
    topic, partitions = settings.topics.interactions, settings.interactions_partitions
    producer = Producer(settings.kafka_config())
    for partition in range(partitions):  # Tansu: a lone last batch makes the ones before readable
        producer.produce(topic, value=FENCE, partition=partition)
        producer.flush(10)
    codec = AvroCodec(InteractionEvent)
    missing, seen = set(wanted), {}
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"t-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    deadline = time.monotonic() + timeout_s
    try:
        while missing and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None or msg.value() == FENCE:
                continue
            event = codec.decode(msg.value() or b"")
            seen[event.event_id] = event
            missing.discard(event.event_id)
    finally:
        consumer.close()
    assert not missing, f"not on {topic} within {timeout_s} s: {sorted(missing)[:5]}"
    return seen


def test_each_channel_file_reaches_the_interactions_topic(settings: Settings) -> None:
    with Publisher(settings) as publisher:
        calls = ingest("calls", DATA / "calls.csv", publisher)
        mail = ingest(
            "email", DATA / "inbox.mbox", publisher, customers=DATA / "email_customers.csv"
        )
        billing = ingest("billing", DATA / "billing.jsonl", publisher)

    assert (calls.accepted, mail.accepted, billing.accepted) == (8, 3, 5)
    assert len(calls.rejected) == 4 and len(mail.rejected) == 1 and len(billing.rejected) == 4
    seen = _read_back(settings, ["call-CL-1001", "email-cmp-1@example.com", "billing-B-6002"])
    assert seen["call-CL-1001"].type == "cancellation_requested"
    assert seen["email-cmp-1@example.com"].reference == "CMP-4401"
    assert seen["billing-B-6002"].amount == 310.55


def test_a_published_simulation_reaches_the_topic(settings: Settings) -> None:
    with Publisher(settings) as publisher:
        summary = publish_simulation(publisher, 40, 20, seed=2)

    assert summary.events > 100
    assert set(summary.by_channel) == {"call", "email", "billing", "web"}
    expected = list(simulate(40, 20, seed=2))  # deterministic: the same events again
    assert len(expected) == summary.events
    sample = expected[:: max(1, len(expected) // 40)]
    seen = _read_back(settings, [e.event_id for e in sample])
    assert all(seen[e.event_id] == e for e in sample)

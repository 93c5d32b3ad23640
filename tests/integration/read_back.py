"""Reading published events back from `interactions`, for the tests of what publishes them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from common.settings import Settings
from schemas.codec import AvroCodec
from schemas.records import InteractionEvent

#: Value of the fence records `read_back` produces (never an event).
FENCE = b"fence"


def read_back(
    settings: Settings, wanted: Iterable[str], timeout_s: float = 30.0
) -> dict[str, InteractionEvent]:
    """Event id -> decoded event for every wanted id on `interactions` (see read_back_messages)."""
    return {
        key: event for key, (event, _) in read_back_messages(settings, wanted, timeout_s).items()
    }


def read_back_messages(
    settings: Settings, wanted: Iterable[str], timeout_s: float = 30.0
) -> dict[str, tuple[InteractionEvent, Message]]:
    """Event id -> (decoded event, its message) for every wanted id on `interactions`.

    Produces a fence record to each partition first (Tansu's high watermark stops
    before the tail of the last batch); fails naming the ids not seen in `timeout_s`.
    """
    topic, partitions = settings.topics.interactions, settings.kafka.interactions_partitions
    producer = Producer(settings.kafka_config())
    for partition in range(partitions):
        producer.produce(topic, value=FENCE, partition=partition)
        producer.flush(10)
    codec = AvroCodec(InteractionEvent, registry_url=settings.kafka.schema_registry_url)
    missing = set(wanted)
    seen: dict[str, tuple[InteractionEvent, Message]] = {}
    group = f"read-back-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    deadline = time.monotonic() + timeout_s
    try:
        while missing and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None or message.value() == FENCE:
                continue
            event = codec.decode(message.value() or b"")
            seen[event.event_id] = (event, message)
            missing.discard(event.event_id)
    finally:
        consumer.close()
    assert not missing, f"not on {topic} within {timeout_s} s: {sorted(missing)[:5]}"
    return seen

"""The publisher SDK against a real (Tansu) broker: keys, partitions, delivery failures."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from common.metrics import EVENTS_PUBLISHED
from common.settings import Settings
from producers.publisher import Publisher, PublishError
from schemas.codec import AvroCodec, SchemaValidationError, event_content_id
from schemas.records import InteractionEvent
from tests.integration.read_back import read_back_messages


def _event(n: int, customer: str, event_type: str = "inquiry") -> InteractionEvent:
    return InteractionEvent(
        event_id=f"ev-{n}",
        customer_id=customer,
        channel="call",
        type=event_type,
        occurred_at=1_767_323_045_000 + n,
        source="ivr",
    )


def _murmur2_partition(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (what librdkafka's murmur2_random mirrors)."""
    m, r, length = 0x5BD1E995, 24, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[length - length % 4 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def _consume(settings: Settings, wanted: Iterable[str]) -> dict[str, tuple[bytes, int, bytes]]:
    """event_id -> (key, partition, value) for every wanted event on `interactions`."""
    seen = read_back_messages(settings, wanted)
    return {
        event_id: (message.key() or b"", message.partition() or 0, message.value() or b"")
        for event_id, (_, message) in seen.items()
    }


def test_published_events_are_keyed_by_customer(settings: Settings) -> None:
    partitions = settings.kafka.interactions_partitions
    customers = ["customer-a", "customer-b", "customer-c"]
    events = [_event(n, customers[n % 3]) for n in range(9)]
    before = EVENTS_PUBLISHED.labels(channel="call", type="inquiry")._value.get()
    with Publisher(settings) as publisher:
        for event in events:
            publisher.publish(event)
        live = publisher.publish_json(
            {"customer_id": "customer-a", "channel": "web", "type": "address_changed",
             "occurred_at": "2026-01-02T03:04:05Z", "attributes": {"new_address": "1 Main St"}}
        )  # fmt: skip
    assert EVENTS_PUBLISHED.labels(channel="call", type="inquiry")._value.get() == before + 9
    assert live.event_id == event_content_id(live)  # derived as file replay derives it

    seen = _consume(settings, [e.event_id for e in [*events, live]])

    for event in [*events, live]:
        key, partition, _ = seen[event.event_id]
        assert key == event.customer_id.encode("utf-8")
        assert partition == _murmur2_partition(key, partitions)
    by_customer = {
        c: {seen[e.event_id][1] for e in events if e.customer_id == c} for c in customers
    }
    assert all(len(parts) == 1 for parts in by_customer.values()), by_customer
    assert AvroCodec(InteractionEvent).decode(seen[live.event_id][2]) == live


def test_invalid_event_is_refused_before_sending(settings: Settings) -> None:
    with Publisher(settings) as publisher, pytest.raises(SchemaValidationError, match="channel"):
        publisher.publish(InteractionEvent("ev-1", "c", "fax", "inquiry", 0))


def test_delivery_failure_surfaces_as_publish_error(settings: Settings) -> None:
    missing_topic = f"{settings.kafka.topic_prefix}no-such-topic"
    publisher = Publisher(
        settings,
        topic=missing_topic,
        config={"allow.auto.create.topics": False, "message.timeout.ms": 3000},
    )
    published = EVENTS_PUBLISHED.labels(channel="call", type="complaint_filed")
    before = published._value.get()
    publisher.publish(_event(1, "customer-a", "complaint_filed"))
    started = time.monotonic()
    with pytest.raises(PublishError) as info:
        publisher.flush(timeout_s=20)
    assert time.monotonic() - started < 20
    assert info.value.topic == missing_topic
    assert info.value.key == "customer-a"
    assert missing_topic in str(info.value)
    publisher.close()  # the failure was reported once; nothing is left to flush
    assert published._value.get() == before  # a failed event is never counted as published


def test_oversized_event_surfaces_as_publish_error(settings: Settings) -> None:
    publisher = Publisher(settings, config={"message.max.bytes": 1000})
    big = InteractionEvent("ev-big", "customer-a", "web", "feedback_given", 0, text="x" * 5000)
    with pytest.raises(PublishError, match="MSG_SIZE_TOO_LARGE") as info:
        publisher.publish(big)
    assert info.value.topic == settings.topics.interactions
    publisher.close()


def test_registry_settings_put_confluent_frames_on_the_wire(settings: Settings) -> None:
    framed = settings.replace(schema_registry_url="mock://publisher-test")
    event = _event(1, "customer-r", "payment_failed")
    with Publisher(framed) as publisher:
        publisher.publish(event)
    _, _, value = _consume(framed, [event.event_id])[event.event_id]
    assert value[0] == 0  # Confluent magic byte + schema id
    assert AvroCodec(InteractionEvent, registry_url="mock://publisher-test").decode(value) == event

"""Reading topics back in tests: every record from the beginning, without a consumer group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from common.settings import Settings


def read_topic(
    settings: Settings,
    topics: Iterable[str],
    *,
    enough: Callable[[list[Message]], bool] | None = None,
    quiet_s: float = 2.0,
    timeout_s: float = 60.0,
) -> list[Message]:
    """Every record of TOPICS from the beginning (assigned, no group), in arrival order.

    Reads until `enough(records)` holds (if given) and then nothing new came
    for `quiet_s`; raises AssertionError after `timeout_s`.
    """
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"reliability-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
    )
    found: list[Message] = []
    try:
        metadata = consumer.list_topics(timeout=10)
        consumer.assign(
            [
                TopicPartition(topic, partition, OFFSET_BEGINNING)
                for topic in topics
                for partition in metadata.topics[topic].partitions
            ]
        )
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while True:
            batch = [m for m in consumer.consume(1000, timeout=0.3) if m.error() is None]
            now = time.monotonic()
            if batch:
                found.extend(batch)
                last = now
            satisfied = enough is None or enough(found)
            if satisfied and now - last >= quiet_s:
                return found
            if now > deadline:
                if satisfied:
                    return found
                raise AssertionError(
                    f"read {len(found)} records of {', '.join(topics)} in {timeout_s:.0f} s; "
                    "not the expected number"
                )
    finally:
        consumer.close()

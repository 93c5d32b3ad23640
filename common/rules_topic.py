"""The compacted `rules` topic (docs/design.md 8.2): the live source of truth of rule packs.

Key = pack name; value = JSON `{"pack", "yaml", "published_at", "author"}`: the
pack's YAML as written, when and by whom it was published. `publish` produces
one record (validation is the caller's: `moments rules publish` refuses what
`rules check` refuses); `history` reads every record still on the topic, oldest
first (compaction may keep only the latest per pack). The topic has one
partition, so its order is the order of publication.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from common.settings import Settings
from common.topics import BrokerUnavailable, ensure_rules_topic, quiet_client_logger

_log = quiet_client_logger("moments.kafka.rules")


@dataclass(frozen=True, slots=True)
class Published:
    """One publication of a rule pack."""

    offset: int
    pack: str
    yaml: str
    published_at: str
    author: str


def publish_pack(
    settings: Settings, pack: str, text: str, author: str, timeout_s: float = 20.0
) -> Published:
    """Produce a pack's YAML to the rules topic (created if missing); wait for delivery."""
    ensure_rules_topic(settings)
    published_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    value = {"pack": pack, "yaml": text, "published_at": published_at, "author": author}
    producer = Producer(settings.kafka_config(logger=_log))
    offsets: list[int] = []
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            offsets.append(message.offset())  # type: ignore[attr-defined]

    producer.produce(
        settings.topics.rules,
        key=pack.encode("utf-8"),
        value=json.dumps(value, sort_keys=True).encode("utf-8"),
        on_delivery=delivered,
    )
    producer.flush(timeout_s)
    if failures or not offsets:
        problem = failures[0] if failures else "timed out"
        raise BrokerUnavailable(f"could not publish to {settings.topics.rules}: {problem}")
    return Published(offsets[0], pack, text, published_at, author)


def decode_published(offset: int, raw: bytes | None) -> Published | None:
    """A record of the rules topic, or None when it is not one of ours (or a tombstone)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return Published(
            offset,
            str(value["pack"]),
            str(value["yaml"]),
            str(value["published_at"]),
            str(value["author"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def pack_history(
    settings: Settings, pack: str | None = None, timeout_s: float = 15.0
) -> list[Published]:
    """Every publication still on the rules topic (of one pack if given), oldest first."""
    topic = settings.topics.rules
    consumer = Consumer(
        settings.kafka_config(
            logger=_log,
            **{
                "group.id": f"moments-rules-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    found: list[Published] = []
    try:
        try:
            described = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if described is None or described.error is not None:
                return []
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read {topic}: {exc}") from None
        if high <= 0:
            return []
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        position = -1
        idle = 0
        while position < high - 1 and idle < 20:
            message = consumer.poll(0.5)
            if message is None:
                idle += 1
                continue
            if message.error() is not None:
                if position >= high - 1:
                    break
                continue
            idle = 0
            position = message.offset() or 0
            record = decode_published(position, message.value())
            if record is None:
                continue  # not a record of ours: skipped, never fatal
            if pack is None or record.pack == pack:
                found.append(record)
    finally:
        consumer.close()
    return found

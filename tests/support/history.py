"""An event history on a topic and in a file, for backfill and diff against replay."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from common.settings import Settings
from producers.publisher import Publisher
from producers.simulator import simulate
from schemas.codec import to_json_line
from schemas.records import InteractionEvent

UNTIL = 1_800_000_000_000  # long after the simulation: every pending timer fires


def simulated_events() -> list[InteractionEvent]:
    """A small simulated history: 150 customers over 30 days, seeded."""
    return list(simulate(150, 30, seed=21, story_rate=0.6))


def publish_events(settings: Settings, topic: str, events: list[InteractionEvent]) -> None:
    """Publishes `events` to `topic` through the publisher SDK and flushes."""
    with Publisher(settings, topic=topic) as publisher:
        for event in events:
            publisher.publish(event)
        publisher.flush()


def write_events(path: Path, events: list[InteractionEvent]) -> Path:
    """Writes `events` as an events file (JSON lines) at `path`."""
    path.write_text("".join(to_json_line(e) + "\n" for e in events), encoding="utf-8")
    return path


def create_topic(settings: Settings, name: str, partitions: int) -> None:
    """Creates topic `name` with `partitions` partitions (replication 1)."""
    admin = AdminClient(settings.kafka_config())
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)

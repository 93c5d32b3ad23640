"""Idempotent topic provisioning: create what is missing, leave what exists."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from moments.settings import Settings


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every moments topic that does not exist yet; return the names created."""
    topics = settings.topics
    wanted = {topics.interactions: settings.interactions_partitions}
    for name in topics.all():
        wanted.setdefault(name, settings.action_partitions)
    admin = AdminClient(settings.kafka_config(log_level=4))  # no info chatter on stderr
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=settings.replication_factor)
        for name, n in wanted.items()
        if name not in existing
    ]
    created: list[str] = []
    if not missing:
        return created
    for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created

"""Idempotent topic provisioning: create what is missing, leave what exists."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from moments.settings import Settings

# librdkafka's connection chatter goes to Python logging (silent unless configured);
# an unreachable broker becomes one BrokerUnavailable error instead.
_log = logging.getLogger("moments.kafka.admin")
_log.addHandler(logging.NullHandler())
_log.propagate = False


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster could not be reached or refused to create the topics."""


def ensure_topics(settings: Settings, timeout_s: float = 20.0) -> list[str]:
    """Create every moments topic that does not exist yet; return the names created."""
    topics = settings.topics
    wanted = {topics.interactions: settings.interactions_partitions}
    for name in topics.all():
        wanted.setdefault(name, settings.action_partitions)
    admin = AdminClient(settings.kafka_config(logger=_log))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.bootstrap} within {timeout_s:.0f} s "
            f"({exc.args[0].str()})"
        ) from None
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
            error = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerUnavailable(f"cannot create topic {name}: {error.str()}") from None
    return created

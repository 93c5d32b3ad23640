"""Idempotent topic provisioning: create what is missing, leave what exists.

Topics are created with `retention.ms` from `MOMENTS_RETENTION_DAYS` (raw
events and everything derived from them age out; docs/design.md, section 10), except
compacted ones. The erasure registry is compacted *and* ages out a day after
the retention: by then every record it guards is gone (docs/design.md 10.1).
An existing topic keeps its configuration.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from common.settings import Settings


def quiet_client_logger(name: str) -> logging.Logger:
    """A logger for a confluent client's `logger` option that keeps librdkafka's connection
    chatter out of the process's logs: what matters surfaces as the caller's own error
    (e.g. one BrokerUnavailable for an unreachable broker)."""
    logger = logging.getLogger(name)
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


_log = quiet_client_logger("moments.kafka.admin")


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster could not be reached or refused to create the topics."""


DAY_MS = 86_400_000


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """Configs a topic is created with: raw customer data ages out after
    `MOMENTS_RETENTION_DAYS` (`retention.ms`); compacted topics keep their latest values."""
    retention_ms = round(settings.kafka.retention_days * DAY_MS)
    if name == settings.topics.erasures:
        # Latest erasure per customer, kept as long as anything it guards can still be read.
        return {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms + DAY_MS)}
    if name in compacted_topics(settings):
        return {"cleanup.policy": "compact"}
    return {"retention.ms": str(retention_ms)}


def compacted_topics(settings: Settings) -> set[str]:
    """Topics whose latest value per key is the data: `rules` and the erasure registry."""
    return {settings.topics.rules, settings.topics.erasures}


def changelog_config(settings: Settings) -> dict[str, str]:
    """Extra configs of the worker's state changelog (Faust makes it compacted): a value
    superseded or tombstoned (an erased customer's state) is compacted away within
    `MOMENTS_RETENTION_DAYS` minus a day (`max.compaction.lag.ms`), and the tombstone, whose
    key names the customer, goes within the last day (`delete.retention.ms`)."""
    retention_ms = round(settings.kafka.retention_days * DAY_MS)
    tombstones_ms = min(DAY_MS, retention_ms // 2)
    return {
        "max.compaction.lag.ms": str(retention_ms - tombstones_ms),
        "delete.retention.ms": str(tombstones_ms),
    }


def single_partition_topics(settings: Settings) -> set[str]:
    """The erasure registry and the erasure confirmations (read whole, in order)."""
    return {settings.topics.erasures, settings.topics.erasures_done}


def ensure_topics(settings: Settings, timeout_s: float = 20.0) -> list[str]:
    """Create every moments topic that does not exist yet; return the names created."""
    topics = settings.topics
    wanted = {topics.interactions: settings.kafka.interactions_partitions}
    wanted |= dict.fromkeys(single_partition_topics(settings), 1)
    for name in topics.all():
        wanted.setdefault(name, settings.kafka.action_partitions)
    admin = AdminClient(settings.kafka_config(logger=_log))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.kafka.bootstrap} within {timeout_s:.0f} s "
            f"({exc.args[0].str()})"
        ) from None
    missing = [
        NewTopic(
            name,
            num_partitions=n,
            replication_factor=settings.kafka.replication_factor,
            config=topic_config(settings, name),
        )
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


def ensure_rules_topic(settings: Settings, timeout_s: float = 20.0) -> bool:
    """Create the compacted `rules` topic (one partition: one history) if it is missing;
    True when it was created."""
    name = settings.topics.rules
    admin = AdminClient(settings.kafka_config(logger=_log))
    try:
        if name in admin.list_topics(timeout=timeout_s).topics:
            return False
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.kafka.bootstrap} within {timeout_s:.0f} s "
            f"({exc.args[0].str()})"
        ) from None
    topic = NewTopic(
        name,
        num_partitions=1,
        replication_factor=settings.kafka.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    future = admin.create_topics([topic], request_timeout=timeout_s)[name]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BrokerUnavailable(f"cannot create topic {name}: {error.str()}") from None
        return False
    return True

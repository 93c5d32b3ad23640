"""Topic provisioning on a real broker: every topic moments creates carries its retention."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource

from common.settings import Settings
from common.topics import ensure_topics


def test_created_topics_carry_the_retention_setting(settings: Settings) -> None:
    settings = settings.replace(topic_prefix="r" + settings.kafka.topic_prefix, retention_days=3)
    created = ensure_topics(settings)
    admin = AdminClient(settings.kafka_config())
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in created]
    retention = {
        resource.name: future.result(timeout=10)["retention.ms"].value
        for resource, future in admin.describe_configs(resources).items()
    }
    assert sorted(created) == sorted(settings.topics.all())
    assert retention == dict.fromkeys(created, str(3 * 86_400_000))
    assert ensure_topics(settings) == []  # idempotent: an existing topic is left as it is

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
    configs = {
        resource.name: future.result(timeout=10)
        for resource, future in admin.describe_configs(resources).items()
    }
    retention = {name: config["retention.ms"].value for name, config in configs.items()}
    assert sorted(created) == sorted(settings.topics.all())
    registry = settings.topics.erasures  # compacted, and kept a day past what it guards
    assert configs[registry]["cleanup.policy"].value == "compact,delete"
    assert retention.pop(registry) == str(4 * 86_400_000)
    assert retention == dict.fromkeys(set(created) - {registry}, str(3 * 86_400_000))
    assert ensure_topics(settings) == []  # idempotent: an existing topic is left as it is

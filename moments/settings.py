"""The one typed settings object of moments, read from `MOMENTS_*` environment variables.

Every process (CLI, worker, sinks, collector) takes its configuration from
`Settings`; nothing else reads `os.environ`. Nested values (e.g.
`MOMENTS_KAFKA_EXTRA`) are JSON.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DESTINATIONS = ("care", "billing", "crm", "feedback", "recognition")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class Topics:
    """Names of every topic moments uses, with an optional prefix (unique names in tests)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.interactions = f"{prefix}interactions"
        self.interactions_dlq = f"{prefix}interactions.dlq"
        self.decisions = f"{prefix}decisions"
        self.actions_dlq = f"{prefix}actions.dlq"
        self.actions = {d: f"{prefix}actions.{d}" for d in DESTINATIONS}

    def action(self, destination: str) -> str:
        """Topic of one destination, e.g. `actions.care`."""
        return self.actions[destination]

    def all(self) -> list[str]:
        return [
            self.interactions,
            self.interactions_dlq,
            self.decisions,
            self.actions_dlq,
            *self.actions.values(),
        ]


class Settings(BaseSettings):
    """Configuration of every moments process; field X is `MOMENTS_X` in the environment."""

    model_config = SettingsConfigDict(env_prefix="MOMENTS_", extra="ignore")

    # Broker and registry. No bootstrap: the CLI starts the embedded Tansu broker.
    bootstrap: str | None = None
    schema_registry_url: str | None = None
    kafka_extra: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka options passed through to every client (SASL/TLS, ...).",
    )
    kafka_secret: SecretStr | None = Field(
        default=None, description="sasl.password; kept out of logs and errors."
    )
    topic_prefix: str = ""
    interactions_partitions: int = 12
    action_partitions: int = 4
    replication_factor: int = 1

    # Database. No URL: the CLI starts an embedded PostgreSQL (pgserver).
    database_url: str | None = Field(default=None, repr=False)  # may hold a password
    data_dir: Path = Path(".moments")

    # Engine.
    rules_path: Path | None = None
    allowed_lateness_s: float = 300.0
    contact_cap: int = 1
    contact_cap_window_s: float = 86_400.0
    holdout_percent: float = 0.0
    dedupe_horizon_s: float = 7 * 86_400.0
    max_event_bytes: int = 64 * 1024
    max_future_skew: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds (or a duration such as 1h, 30m) an event may be dated ahead of"
        " its Kafka timestamp (worker, backfill) or of now (collector, adapters).",
    )

    # Worker (faust-streaming).
    worker_app_id: str = "moments-worker"
    worker_web_port: int = 6066
    worker_store: str = "memory://"
    broker_rebalance_timeout_s: float = 4.0
    broker_session_timeout_s: float = 8.0
    idle_tick_s: float = 1.0
    worker_batch_size: int = Field(
        default=500,
        ge=1,
        description="Records per stream.take batch in the worker; 1 = one event per iteration.",
    )

    # Sinks.
    sink_group: str = "moments-sink-postgres"
    sink_batch_size: int = 5000
    sink_batch_timeout_s: float = 0.2
    webhook_group: str = "moments-sink-webhook"
    webhook_urls: dict[str, str] = Field(default_factory=dict)
    webhook_secret: SecretStr | None = None

    # HTTP and metrics.
    collector_host: str = "127.0.0.1"
    collector_port: int = 8080
    api_keys: list[SecretStr] = Field(default_factory=list)
    # Collector limits: connections, slow clients, the producer's queue, per-key policy.
    collector_max_connections: int = Field(default=1000, ge=1)
    collector_header_timeout_s: float = Field(default=10.0, gt=0)
    collector_body_timeout_s: float = Field(default=30.0, gt=0)
    collector_queue_max_kbytes: int = Field(default=65_536, ge=1)
    collector_queue_max_messages: int = Field(default=100_000, ge=1)
    collector_message_timeout_s: float = Field(default=10.0, gt=0)
    collector_rate_limit: float = Field(
        default=0.0, ge=0, description="Events per second per API key (0: no limit)."
    )
    collector_key_channels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Channels each API key may send, by key fingerprint (first 12 hex digits"
        " of the key's SHA-256); a key not listed may send any channel.",
    )
    metrics_port: int = 0
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface /metrics binds to; 0.0.0.0 in containers."
    )

    @field_validator("max_future_skew", mode="before")
    @classmethod
    def _seconds_or_duration(cls, value: Any) -> Any:
        """`3600`, `3600s`, `60m` or `1h` (seconds when no unit is given)."""
        if isinstance(value, str):
            match = _DURATION.fullmatch(value.strip())
            if match is not None:
                return float(match[1]) * _UNIT_S[match[2] or "s"]
        return value

    @property
    def max_future_skew_ms(self) -> int:
        """`max_future_skew` in milliseconds."""
        return round(self.max_future_skew * 1000)

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka client config: bootstrap, pass-through extras, then overrides."""
        if not self.bootstrap:
            raise RuntimeError("no Kafka bootstrap configured (set MOMENTS_BOOTSTRAP)")
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, **self.kafka_extra}
        if self.kafka_secret is not None:
            config["sasl.password"] = self.kafka_secret.get_secret_value()
        config.update(overrides)
        return config

    def as_env(self) -> dict[str, str]:
        """The `MOMENTS_*` variables that recreate these settings in a child process."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in value]
            if isinstance(value, dict | list):
                text = json.dumps(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[f"MOMENTS_{name.upper()}"] = text
        return env

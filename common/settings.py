"""The one typed settings object of moments, read from `MOMENTS_*` environment variables.

Every process (CLI, worker, sinks, collector) takes its configuration from
`Settings`; nothing else reads `os.environ`. Nested values (e.g.
`MOMENTS_KAFKA_EXTRA`) are JSON.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.privacy import MASK, redact_url
from schemas.wire import DESTINATIONS as DESTINATIONS  # re-exported: one definition
from schemas.wire import Topics as Topics

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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
    rules_pack: str = Field(
        default="default",
        description="The pack (its `name`) the worker follows on the rules topic.",
    )
    allowed_lateness_s: float = 300.0
    contact_cap: int = 1
    contact_cap_window_s: float = 86_400.0
    holdout_percent: float = 0.0
    emit_from: AwareDatetime | None = Field(
        default=None,
        description="History warm-up: candidates before this time build state but emit nothing.",
    )
    dedupe_horizon_s: float = 7 * 86_400.0
    replay_workers: int = Field(
        default=0,
        ge=0,
        description="Processes that share a `moments replay` of a file (the same bytes as one):"
        " 0 for one per usable CPU on files of a few MB or more, 1 for one process.",
    )
    max_event_bytes: int = 64 * 1024
    max_future_skew: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds (or a duration such as 1h, 30m) an event may be dated ahead of"
        " its Kafka timestamp (worker, backfill) or of now (collector, adapters).",
    )

    # Simulator (`moments simulate`): how customers respond to the engagement actions they
    # would receive (rule id -> relative effect size, see producers.simulator.Effects); the
    # rules not named have none. `{}` (or every size 0): a simulation with no true effect.
    simulate_effects: dict[str, float] = Field(
        default_factory=lambda: {
            "explain_first_bill": 0.5,
            "thank_meter_reading": 0.5,
            "recognize_tenure": 0.5,
        }
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
    webhook_secrets: dict[str, list[tuple[str, SecretStr]]] = Field(
        default_factory=dict,
        description="Destination → [[key id, secret], ...]: sign with the first, receivers"
        " accept any listed (rotation); webhook_secret (key id `default`) signs the others.",
    )
    webhook_allow_http: bool = Field(
        default=False, description="Allow plain-http webhook URLs (local trials only)."
    )
    webhook_ca_bundle: Path | None = Field(
        default=None, description="PEM file of extra CAs trusted for webhook TLS (internal CAs)."
    )

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
        description="Channels each API key may send, by key name (`key-` + the first 8 hex"
        " digits of the key's SHA-256, as in audit lines); a key not listed may send any channel.",
    )
    metrics_port: int = 0
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface /metrics binds to; 0.0.0.0 in containers."
    )

    # Customer data (DESIGN.md section 10): the read API and retention.
    api_host: str = Field(
        default="127.0.0.1", description="Interface the read API binds; beyond loopback needs keys."
    )
    api_port: int = 8081
    api_rate_per_s: float = Field(
        default=10.0, gt=0, description="Read API requests per second allowed per key."
    )
    api_rate_burst: int = Field(default=20, ge=1, description="Read API burst per key.")
    api_max_page: int = Field(
        default=500, ge=1, le=10_000, description="Largest `limit` the read API serves."
    )
    retention_days: float = Field(
        default=30.0, gt=0, description="retention.ms of the non-compacted topics moments creates."
    )

    def __repr_args__(self) -> Any:
        """What repr/str show: every secret masked (see `_without_secrets`)."""
        for name, value in super().__repr_args__():
            yield name, _without_secrets(name, value)

    @field_validator("holdout_percent", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        """MOMENTS_HOLDOUT_PERCENT: a number 0-100, `%` optional ("20%" or "20")."""
        if isinstance(value, str):
            value = value.strip().removesuffix("%").strip()
        number = float(value)
        if not 0 <= number <= 100:
            raise ValueError("expected a percentage 0-100, e.g. 20 or 20%")
        return number

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
            value = _revealed(value)
            if isinstance(value, dict | list):
                text = json.dumps(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, datetime):
                text = value.isoformat()
            else:
                text = str(value)
            env[f"MOMENTS_{name.upper()}"] = text
        return env


def _revealed(value: Any) -> Any:
    """`value` with every SecretStr inside it (lists, tuples, dicts) replaced by its text."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | tuple):
        return [_revealed(v) for v in value]
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    return value


#: `kafka_extra` options whose values repr/str show; every other value is masked.
_PLAIN_KAFKA_OPTIONS = frozenset(
    {"security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "client.id"}
)


def _without_secrets(name: str | None, value: Any) -> Any:
    """A setting's value as repr may show it: kafka_extra values (but the harmless options)
    masked, passwords and query values of URLs masked (and webhook URLs' paths),
    SecretStr left to its own mask."""
    if name == "kafka_extra" and isinstance(value, dict):
        return {k: v if k in _PLAIN_KAFKA_OPTIONS else MASK for k, v in value.items()}
    if name == "webhook_urls" and isinstance(value, dict):  # tokens hide in paths too
        return {k: redact_url(str(v), keep_path=False) for k, v in value.items()}
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: _without_secrets(None, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without_secrets(None, v) for v in value)
    return value

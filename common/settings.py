"""The one typed settings object of moments, read from `MOMENTS_*` environment variables.

Every process (CLI, worker, sinks, collector, read API) takes its configuration from
`Settings`; nothing else reads `os.environ`. The settings are grouped by concern
(`settings.kafka`, `settings.database`, `settings.engine`, `settings.worker`,
`settings.sinks`, `settings.collector`, `settings.api`, `settings.metrics`,
`settings.simulator`, `settings.stack`), every group frozen, every number bounded. A field
keeps its flat variable name: `settings.kafka.bootstrap` is `MOMENTS_BOOTSTRAP`,
`settings.worker.idle_tick_s` is `MOMENTS_IDLE_TICK_S`. Nested values (e.g.
`MOMENTS_KAFKA_EXTRA`) are JSON. A bad value stops the process with one `SettingsError`
naming each variable that is wrong (never its value: it may be a secret).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.privacy import MASK, redact_url, use_id_hash_key_source
from schemas.wire import Topics

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: The longest duration any setting takes (a year), the largest port and count.
_YEAR_S: Final = 366 * 86_400.0
_PORT_MAX: Final = 65_535
_COUNT_MAX: Final = 1_000_000


#: The variable of `EngineSettings.max_lateness`, named by its rule between fields.
_MAX_LATENESS: Final = "MOMENTS_MAX_LATENESS"

#: The parts of a collector key's scope (`MOMENTS_COLLECTOR_KEY_CHANNELS`).
_SCOPE_PARTS: Final = frozenset({"channels", "event_types", "sources"})

#: `MOMENTS_BROKER_FENCE`: whether the worker's recovery fences its changelogs.
FenceMode = Literal["auto", "on", "off"]


class SettingsError(ValueError):
    """Configuration that cannot be used: names every `MOMENTS_*` variable that is wrong
    and why, never a value (it may be a secret)."""


class _Group(BaseSettings):
    """A group of settings: frozen, read from `MOMENTS_<FIELD>` variables, secrets masked in
    its repr."""

    model_config = SettingsConfigDict(env_prefix="MOMENTS_", extra="ignore", frozen=True)

    def __repr_args__(self) -> Any:
        """What repr/str show: every secret masked (see `_without_secrets`)."""
        for name, value in super().__repr_args__():
            yield name, _without_secrets(name, value)


class KafkaSettings(_Group):
    """The broker, the schema registry and the topics moments creates. No bootstrap: the
    CLI starts the embedded Tansu broker."""

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
    interactions_partitions: int = Field(default=12, ge=1, le=10_000)
    action_partitions: int = Field(default=4, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=100)
    broker_fence: FenceMode = Field(
        default="auto",
        description="The worker's recovery fence for brokers whose high watermark lags the"
        " last batch (Tansu; docs/design.md, section 2.1): auto probes the broker once.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        le=3650,
        description="retention.ms of the non-compacted topics moments creates.",
    )


class DatabaseSettings(_Group):
    """PostgreSQL. No URL: the CLI starts an embedded PostgreSQL (pgserver)."""

    database_url: str | None = Field(default=None, repr=False)  # may hold a password


class StackSettings(_Group):
    """The embedded local stack (`moments up`, `moments demo`): where it keeps its files."""

    data_dir: Path = Path(".moments")


class EngineSettings(_Group):
    """The trigger engine, in every host (worker, replay, backfill)."""

    rules_path: Path | None = None
    rules_pack: str = Field(
        default="default",
        description="The pack (its `name`) the worker follows on the rules topic.",
    )
    predicate_modules: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("processors.engine.predicates",),
        description="Modules (comma-separated; their submodules too) a rule's `predicate`"
        " may name; nothing else is imported.",
    )
    rules_signing_keys: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="Publisher keys, `name=key` comma-separated: when set, `moments rules"
        " publish` signs packs (HMAC-SHA256) and the worker runs only packs signed by one.",
    )

    allowed_lateness_s: float = Field(default=300.0, ge=0, le=_YEAR_S)
    contact_cap: int = Field(default=1, ge=0, le=1_000)
    contact_cap_window_s: float = Field(default=86_400.0, gt=0, le=_YEAR_S)
    holdout_percent: float = 0.0
    emit_from: AwareDatetime | None = Field(
        default=None,
        description="History warm-up: candidates before this time build state but emit nothing.",
    )
    dedupe_horizon_s: float = Field(default=7 * 86_400.0, ge=0, le=10 * _YEAR_S)
    replay_workers: int = Field(
        default=0,
        ge=0,
        le=1_024,
        description="Processes that share a `moments replay` of a file (the same bytes as one):"
        " 0 for one per usable CPU on files of a few MB or more, 1 for one process.",
    )
    max_event_bytes: int = Field(default=64 * 1024, ge=1, le=16 * 1024 * 1024)
    max_future_skew: float = Field(
        default=3600.0,
        ge=0,
        le=_YEAR_S,
        description="Seconds (or a duration such as 1h, 30m) an event may be dated ahead of"
        " its Kafka timestamp (worker, backfill) or of now (collector, adapters).",
    )
    max_lateness: float = Field(
        default=7 * 86_400.0,
        ge=0,
        le=10 * _YEAR_S,
        description="Seconds (or a duration such as 7d, 36h) an event may lie behind its"
        " partition's watermark and still be applied; an older one is kept on"
        " `interactions.late`, not applied. At least the allowed lateness, at most the dedupe"
        " horizon (so every applied event is deduped exactly).",
    )
    action_horizon: float = Field(
        default=30 * 86_400.0,
        gt=0,
        le=10 * _YEAR_S,
        description="Seconds (or a duration such as 30d) an action stays open after its due_by"
        " (after it fired, without one) before it lapses.",
    )
    timezone: str = Field(
        default="UTC",
        description="The business's time zone (an IANA name such as Europe/Berlin): dates in"
        " reasons are written in it; the actions' own times stay UTC.",
    )

    @field_validator("predicate_modules", mode="before")
    @classmethod
    def _module_list(cls, value: Any) -> Any:
        """MOMENTS_PREDICATE_MODULES: module names, comma-separated (or a JSON list)."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return tuple(m.strip() for m in value.split(",") if m.strip())
        return value

    @field_validator("rules_signing_keys", mode="before")
    @classmethod
    def _named_keys(cls, value: Any) -> Any:
        """MOMENTS_RULES_SIGNING_KEYS: `name=key` pairs, comma-separated, or a JSON object
        (never echoed)."""
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("expected name=key pairs or a JSON object") from None
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for pair in value.split(","):
            name, sep, key = pair.strip().partition("=")
            if not pair.strip():
                continue
            if not sep or not name.strip() or not key.strip():
                raise ValueError("expected name=key pairs, comma-separated")
            keys[name.strip()] = key.strip()
        return keys

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

    @field_validator("max_future_skew", "max_lateness", "action_horizon", mode="before")
    @classmethod
    def _seconds_or_duration(cls, value: Any) -> Any:
        """`3600`, `3600s`, `60m` or `1h` (seconds when no unit is given)."""
        if isinstance(value, str):
            match = _DURATION.fullmatch(value.strip())
            if match is not None:
                return float(match[1]) * _UNIT_S[match[2] or "s"]
        return value

    @field_validator("timezone", mode="before")
    @classmethod
    def _iana_zone(cls, value: Any) -> Any:
        """MOMENTS_TIMEZONE: a zone of the IANA database, by its name (`UTC` needs none)."""
        if not isinstance(value, str):
            return value  # the str type says what is wrong
        name = value.strip()
        if name != "UTC":
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise ValueError(
                    "not a time zone of the IANA database; expected a name such as"
                    " Europe/Berlin, America/New_York or UTC"
                ) from None
        return name

    @model_validator(mode="after")
    def _lateness_in_bounds(self) -> Self:
        """MOMENTS_MAX_LATENESS between the allowed lateness and the dedupe horizon."""
        if self.max_lateness < self.allowed_lateness_s:
            raise ValueError(
                f"{_MAX_LATENESS}: must be at least the allowed lateness"
                " (MOMENTS_ALLOWED_LATENESS_S): an event the engine waits for cannot be too late"
            )
        if self.max_lateness > self.dedupe_horizon_s:
            raise ValueError(
                f"{_MAX_LATENESS}: must be at most the dedupe horizon"
                " (MOMENTS_DEDUPE_HORIZON_S), so that every applied event is deduped exactly;"
                " lower it or raise the horizon"
            )
        return self

    @property
    def max_future_skew_ms(self) -> int:
        """`max_future_skew` in milliseconds."""
        return round(self.max_future_skew * 1000)

    @property
    def max_lateness_ms(self) -> int:
        """`max_lateness` in milliseconds."""
        return round(self.max_lateness * 1000)

    @property
    def action_horizon_ms(self) -> int:
        """`action_horizon` in milliseconds."""
        return round(self.action_horizon * 1000)


class WorkerSettings(_Group):
    """The stream worker (faust-streaming)."""

    worker_app_id: str = "moments-worker"
    worker_web_port: int = Field(default=6066, ge=0, le=_PORT_MAX)
    worker_store: str = "memory://"
    broker_rebalance_timeout_s: float = Field(default=4.0, gt=0, le=3600)
    broker_session_timeout_s: float = Field(default=8.0, gt=0, le=3600)
    idle_tick_s: float = Field(default=1.0, gt=0, le=3600)
    worker_batch_size: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Records per stream.take batch in the worker; 1 = one event per iteration.",
    )


class SinkSettings(_Group):
    """The PostgreSQL and webhook sinks."""

    sink_group: str = "moments-sink-postgres"
    sink_batch_size: int = Field(default=5000, ge=1, le=_COUNT_MAX)
    sink_batch_timeout_s: float = Field(default=0.2, gt=0, le=3600)
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


class CollectorSettings(_Group):
    """The HTTP collector: where it listens and its limits (connections, slow clients, the
    producer's queue, per-key policy)."""

    collector_host: str = "127.0.0.1"
    collector_port: int = Field(default=8080, ge=0, le=_PORT_MAX)
    collector_max_connections: int = Field(default=1000, ge=1, le=_COUNT_MAX)
    collector_header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    collector_body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    collector_queue_max_kbytes: int = Field(default=65_536, ge=1, le=2_097_151)
    collector_queue_max_messages: int = Field(default=100_000, ge=1, le=10_000_000)
    collector_message_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    collector_rate_limit: float = Field(
        default=0.0, ge=0, le=_COUNT_MAX, description="Events per second per API key (0: no limit)."
    )
    collector_key_channels: dict[str, list[str] | dict[str, list[str]]] = Field(
        default_factory=dict,
        description="What each collector key may send, by key name (`key-` + the first 8 hex"
        " digits of the key's SHA-256, as in audit lines): a list of channels, or an object"
        ' {"channels": [...], "event_types": [...], "sources": [...]} (each part optional:'
        " a part not given is not limited); a key not listed may send anything.",
    )

    @field_validator("collector_key_channels")
    @classmethod
    def _key_scopes(
        cls, value: dict[str, list[str] | dict[str, list[str]]]
    ) -> dict[str, list[str] | dict[str, list[str]]]:
        """Each scope object names only channels, event_types and sources."""
        for name, scope in value.items():
            if isinstance(scope, dict):
                unknown = sorted(set(scope) - _SCOPE_PARTS)
                if unknown:
                    raise ValueError(
                        f"key {name}: unknown part {', '.join(unknown)}; a scope has"
                        " channels, event_types and sources"
                    )
        return value


class ApiSettings(_Group):
    """The keys of each role (collector, read API, desk: never shared), the read API
    (customer data, docs/design.md, section 10.3), the key of the customer id hash, and
    the connection limits of every HTTP port."""

    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="The collector's keys (producers send events with them; they read nothing).",
    )
    api_host: str = Field(
        default="127.0.0.1", description="Interface the read API binds; beyond loopback needs keys."
    )
    api_port: int = Field(default=8081, ge=0, le=_PORT_MAX)
    api_rate_per_s: float = Field(
        default=10.0, gt=0, le=_COUNT_MAX, description="Read API requests per second per key."
    )
    api_rate_burst: int = Field(
        default=20, ge=1, le=_COUNT_MAX, description="Read API burst per key."
    )
    api_max_page: int = Field(
        default=500, ge=1, le=10_000, description="Largest `limit` the read API serves."
    )
    read_api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys of the read API (customer data): never the collector's"
        " MOMENTS_API_KEYS, which only send events.",
    )
    desk_keys: list[SecretStr] = Field(
        default_factory=list, description="Keys of the agent desk (its own, like the others)."
    )
    id_hash_key: SecretStr | None = Field(
        default=None,
        description="Secret of the keyed hash (HMAC-SHA256) that names customers in logs and"
        " audit lines (common.privacy.keyed_customer_hash); the same in every process.",
    )
    api_failed_key_limit: int = Field(
        default=10,
        ge=1,
        le=_COUNT_MAX,
        description="Failed key attempts per client address per minute before the read API"
        " answers 429.",
    )
    http_client_connections: int = Field(
        default=100,
        ge=0,
        le=_COUNT_MAX,
        description="Open connections per client address on every HTTP port (collector, read"
        " API, ops); beyond it a connection is closed at once (0: no limit). Behind a proxy,"
        " at least the proxy's upstream connection pool.",
    )
    http_idle_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a connection of the read API or the ops port may stay without"
        " a complete request before it is closed.",
    )


class MetricsSettings(_Group):
    """The Prometheus endpoint every process serves, and its logs (`common.logs`)."""

    metrics_port: int = Field(default=0, ge=0, le=_PORT_MAX)
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface /metrics binds to; 0.0.0.0 in containers."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json`: one JSON object a line."
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()


class SimulatorSettings(_Group):
    """`moments simulate`: how customers respond to the engagement actions they would
    receive (rule id -> relative effect size, see producers.simulator.Effects); the rules
    not named have none. `{}` (or every size 0): a simulation with no true effect."""

    simulate_effects: dict[str, float] = Field(
        default_factory=lambda: {
            "explain_first_bill": 0.5,
            "thank_meter_reading": 0.5,
            "recognize_tenure": 0.5,
        }
    )


class Settings:
    """Configuration of every moments process, grouped by concern; frozen.

    `Settings()` reads the environment; `Settings(bootstrap=..., sink_batch_size=...)` sets
    fields by their flat names (each `MOMENTS_<NAME>`), the rest from the environment;
    `settings.replace(...)` is a copy with some fields changed.
    """

    GROUPS: ClassVar[dict[str, type[_Group]]] = {
        "kafka": KafkaSettings,
        "database": DatabaseSettings,
        "stack": StackSettings,
        "engine": EngineSettings,
        "worker": WorkerSettings,
        "sinks": SinkSettings,
        "collector": CollectorSettings,
        "api": ApiSettings,
        "metrics": MetricsSettings,
        "simulator": SimulatorSettings,
    }
    #: Every field's flat name → its group.
    FIELDS: ClassVar[dict[str, str]] = {
        name: group for group, model in GROUPS.items() for name in model.model_fields
    }

    __slots__ = (*GROUPS, "topics")

    kafka: KafkaSettings
    database: DatabaseSettings
    stack: StackSettings
    engine: EngineSettings
    worker: WorkerSettings
    sinks: SinkSettings
    collector: CollectorSettings
    api: ApiSettings
    metrics: MetricsSettings
    simulator: SimulatorSettings
    #: The topic names of `kafka.topic_prefix`.
    topics: Topics

    def __init__(self, **fields: Any) -> None:
        unknown = sorted(set(fields) - self.FIELDS.keys())
        if unknown:
            raise TypeError(f"Settings: no such setting {', '.join(unknown)}")
        problems: list[str] = []
        for group, model in self.GROUPS.items():
            given = {k: v for k, v in fields.items() if self.FIELDS[k] == group}
            try:
                value = model(**given)
            except ValidationError as exc:
                problems.extend(_problems(exc))
                continue
            object.__setattr__(self, group, value)
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))
        object.__setattr__(self, "topics", Topics(self.kafka.topic_prefix))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Settings are frozen; use settings.replace({name}=...)")

    def __repr__(self) -> str:
        shown = (f"{g}={getattr(self, g)!r}" for g in self.GROUPS if hasattr(self, g))
        return "Settings(" + ", ".join(shown) + ")"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return all(getattr(self, g) == getattr(other, g) for g in self.GROUPS)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its fields (a child process gets the same settings)."""
        return (_from_fields, (dict(self.values()),))

    def values(self) -> Iterator[tuple[str, Any]]:
        """Every field as (flat name, value)."""
        for group in self.GROUPS:
            yield from getattr(self, group)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` (flat names); every value validated again."""
        return Settings(**(dict(self.values()) | changes))

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka client config: bootstrap, pass-through extras, then overrides."""
        kafka = self.kafka
        if not kafka.bootstrap:
            raise RuntimeError("no Kafka bootstrap configured (set MOMENTS_BOOTSTRAP)")
        config: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap, **kafka.kafka_extra}
        if kafka.kafka_secret is not None:
            config["sasl.password"] = kafka.kafka_secret.get_secret_value()
        config.update(overrides)
        return config

    def as_env(self) -> dict[str, str]:
        """The `MOMENTS_*` variables that recreate these settings in a child process."""
        env: dict[str, str] = {}
        for name, value in self.values():
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
            env[env_name(name)] = text
        return env


def _from_fields(fields: dict[str, Any]) -> Settings:
    return Settings(**fields)


def env_name(field: str) -> str:
    """The environment variable of a setting: `MOMENTS_` + its flat name, upper case."""
    return f"MOMENTS_{field.upper()}"


def _problems(exc: ValidationError) -> Iterator[str]:
    """Each error of a group as `MOMENTS_NAME: what is wrong` (no input value); a rule
    between fields (no location) names its variable itself."""
    for error in exc.errors(include_input=False, include_url=False):
        if not error["loc"]:
            yield str(error["msg"]).removeprefix("Value error, ")
            continue
        yield f"{env_name(str(error['loc'][0]))}: {error['msg']}"


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


def _configured_id_hash_key() -> str | None:
    """`MOMENTS_ID_HASH_KEY`, for `common.privacy.keyed_customer_hash` (read on first use)."""
    key = ApiSettings().id_hash_key
    return key.get_secret_value() if key is not None else None


use_id_hash_key_source(_configured_id_hash_key)

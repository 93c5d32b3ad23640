"""The erasure registry and erasure confirmations (docs/design.md 10.1): who was erased, when.

`moments forget` writes one record per erasure to the registry, a compacted
topic of one partition: key = `keyed_customer_hash(customer_id)` (HMAC-SHA256
under `MOMENTS_ID_HASH_KEY`, never the id), value = JSON `{"erased_at": ms,
"key_check": ...}`. `key_check` is the keyed hash of a fixed text that is no
customer id: a reader whose key differs (or who has none) cannot match any
customer, and finds out from it instead of silently honouring nothing.

Every consumer that materialises customer data (the sinks under any group,
the backfill behind `replay --from-topic` and `rules diff --from-topic`)
loads the registry before its first record (`ErasureRegistry.load`), follows
it while it runs (`poll`), and drops every record of an erased customer dated
(the record's Kafka timestamp) before that customer's erasure (`drops`).
Records dated after it are the customer coming back, and are kept. Control
records (erasure markers) are never dropped: they are what deletes.

Sinks that record their erasures nowhere `moments forget --wait` can read (the
webhook sink) confirm them on the `erasures.done` topic: key = the keyed hash,
value = JSON `{"customer", "erased_at", "sink", "group", "topic", "delivered"}`
(`ErasureConfirmations`, read back by `read_confirmations`).

It never logs a customer id or the key; a problem names the topic and what to do.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from common.privacy import keyed_customer_hash, set_id_hash_key
from common.settings import Settings
from common.topics import BrokerUnavailable, ensure_topics, quiet_client_logger, topic_config

_log = quiet_client_logger("moments.kafka.erasures")
log = logging.getLogger(__name__)

#: Hashed under the deployment's key to tell readers with another key (never a customer id:
#: ids cannot hold a NUL).
_KEY_CHECK_TEXT: Final = "\x00moments erasure registry"
#: Keyed hashes remembered per reader (customers come back again and again).
_HASH_CACHE_MAX: Final = 100_000


class ErasureRegistryError(RuntimeError):
    """The registry cannot be read or honoured (names the topic and what to do)."""


def use_key_of(settings: Settings) -> None:
    """Hash customer ids under `settings`' MOMENTS_ID_HASH_KEY in this process (when set)."""
    key = settings.api.id_hash_key
    if key is not None and key.get_secret_value():
        set_id_hash_key(key.get_secret_value())


def key_check() -> str:
    """The keyed hash of a fixed text: equal in every process that shares the key."""
    return keyed_customer_hash(_KEY_CHECK_TEXT)[:16]


def now_ms() -> int:
    return int(time.time() * 1000)


def register_erasure(
    settings: Settings, customer_id: str, erased_at_ms: int, timeout_s: float = 20.0
) -> str:
    """Write the customer's registry record (topics created if missing); wait for the broker.
    Returns the keyed hash it is filed under. Raises `ErasureRegistryError` without a key."""
    key = settings.api.id_hash_key
    if key is None or not key.get_secret_value():
        raise ErasureRegistryError(
            "MOMENTS_ID_HASH_KEY is not set: the erasure registry names customers by a keyed"
            " hash every process must share; set the deployment's key"
        )
    use_key_of(settings)
    ensure_topics(settings, timeout_s)
    customer_hash = keyed_customer_hash(customer_id)
    value = {"erased_at": erased_at_ms, "key_check": key_check()}
    _produce_one(
        settings, settings.topics.erasures, customer_hash, json.dumps(value).encode(), timeout_s
    )
    return customer_hash


def _produce_one(settings: Settings, topic: str, key: str, value: bytes, timeout_s: float) -> None:
    producer = Producer(settings.kafka_config(logger=_log, **{"enable.idempotence": True}))
    failures: list[str] = []
    delivered: list[bool] = []

    def report(error: object, _message: object) -> None:
        (failures.append(str(error)) if error is not None else delivered.append(True))

    producer.produce(topic, key=key.encode(), value=value, on_delivery=report)
    producer.flush(timeout_s)
    if failures or not delivered:
        raise BrokerUnavailable(
            f"could not write to {topic}: {failures[0] if failures else 'timed out'}"
        )


def ensure_registry(settings: Settings, timeout_s: float = 20.0) -> None:
    """Create the registry topic (compacted, one partition) if it is missing, and nothing else."""
    name = settings.topics.erasures
    admin = AdminClient(settings.kafka_config(logger=_log))
    try:
        if name in admin.list_topics(timeout=timeout_s).topics:
            return
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot reach Kafka to read {name}: {exc.args[0].str()}") from None
    topic = NewTopic(
        name,
        num_partitions=1,
        replication_factor=settings.kafka.replication_factor,
        config=topic_config(settings, name),
    )
    try:
        admin.create_topics([topic], request_timeout=timeout_s)[name].result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BrokerUnavailable(f"cannot create topic {name}: {exc.args[0].str()}") from None


def _reader(settings: Settings, topic: str) -> Consumer:
    """A group-less reader of one single-partition topic from its beginning."""
    consumer = Consumer(
        settings.kafka_config(
            logger=_log,
            **{
                "group.id": f"moments-erasures-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            },
        )
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return consumer


class ErasureRegistry:
    """The erased customers as one consumer knows them: loaded before its first record,
    followed while it runs. `drops(key, timestamp_ms)` says whether a record of that key
    (the customer id) dated then is erased data."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.erasures
        #: Keyed hash -> erasure time (ms).
        self.erased: dict[str, int] = {}
        self._hashes: dict[bytes, str] = {}
        self._check: str | None = None
        self._consumer: Consumer | None = None

    def __len__(self) -> int:
        return len(self.erased)

    def load(self, timeout_s: float = 30.0) -> ErasureRegistry:
        """Read the registry to its end (the topic is created if missing)."""
        use_key_of(self.settings)
        try:
            ensure_registry(self.settings, min(timeout_s, 20.0))
            self._consumer = _reader(self.settings, self.topic)
        except (KafkaException, BrokerUnavailable) as exc:
            raise ErasureRegistryError(
                f"cannot read the erasure registry {self.topic}: {exc}"
            ) from None
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._consumer.poll(0.2)
            if message is not None and self._take(message):
                break
            if time.monotonic() > deadline:
                raise ErasureRegistryError(
                    f"cannot read the erasure registry {self.topic} to its end within"
                    f" {timeout_s:.0f} s; refusing to run without it"
                )
        if self.erased:
            log.info("erasure registry: %d erased customers", len(self.erased))
        return self

    def poll(self) -> None:
        """Take what was added since (never waits)."""
        if self._consumer is None:
            return
        for message in self._consumer.consume(100, 0):
            self._take(message)

    def _take(self, message: Any) -> bool:
        """Apply one registry record; True at the end of the partition."""
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return True
            log.warning("erasure registry: %s", error)
            return False
        key, raw = message.key(), message.value()
        if not key or raw is None:
            return False
        try:
            value = json.loads(raw)
            erased_at, check = int(value["erased_at"]), str(value.get("key_check", ""))
        except (ValueError, KeyError, TypeError):
            log.warning(
                "erasure registry: record at offset %s is not one of ours", message.offset()
            )
            return False
        if self._check is None:
            self._check = key_check()
        if check != self._check:
            raise ErasureRegistryError(
                f"the erasure registry {self.topic} was written under another"
                " MOMENTS_ID_HASH_KEY than this process has (or none is set here), so no"
                " erased customer can be recognised; set the deployment's key"
            )
        customer_hash = key.decode("ascii", errors="replace")
        self.erased[customer_hash] = max(erased_at, self.erased.get(customer_hash, 0))
        return False

    def erased_at(self, key: bytes | None) -> int | None:
        """When the customer of this record key (their id) was last erased, or None."""
        if not self.erased or not key:
            return None
        hashes = self._hashes
        found = hashes.get(key)
        if found is None:
            if len(hashes) >= _HASH_CACHE_MAX:
                hashes.clear()
            found = hashes[key] = keyed_customer_hash(key.decode("utf-8", errors="replace"))
        return self.erased.get(found)

    def drops(self, key: bytes | None, timestamp_ms: int | None) -> bool:
        """Whether a record of this key dated `timestamp_ms` (None: undated) is erased data."""
        erased_at = self.erased_at(key)
        if erased_at is None:
            return False
        return timestamp_ms is None or timestamp_ms < erased_at

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


def record_timestamp(message: Any) -> int | None:
    """A confluent message's timestamp in ms, None when it has none."""
    kind, ms = message.timestamp()
    return None if kind == 0 else int(ms)  # 0: TIMESTAMP_NOT_AVAILABLE


class ErasureConfirmations:
    """A sink's confirmations on `erasures.done`: one record per erasure marker it acted on."""

    def __init__(self, settings: Settings, sink: str, group: str) -> None:
        self.topic = settings.topics.erasures_done
        self.sink, self.group = sink, group
        self._producer = Producer(
            settings.kafka_config(logger=_log, **{"enable.idempotence": True, "linger.ms": 5})
        )

    def send(
        self,
        customer_id: str,
        erased_at_ms: int,
        topic: str,
        delivered: bool,
        on_acked: Callable[[], None],
    ) -> None:
        """Confirm one marker of `topic`; `on_acked()` once the broker has it (sent again
        until it does)."""
        customer_hash = keyed_customer_hash(customer_id)
        value = json.dumps(
            {
                "customer": customer_hash,
                "erased_at": erased_at_ms,
                "sink": self.sink,
                "group": self.group,
                "topic": topic,
                "delivered": delivered,
            }
        ).encode()

        def report(error: object, _message: object) -> None:
            if error is None:
                on_acked()
            else:
                log.error("cannot confirm an erasure on %s, sending again: %s", self.topic, error)
                self._producer.produce(
                    self.topic, key=customer_hash.encode(), value=value, on_delivery=report
                )

        self._producer.produce(
            self.topic, key=customer_hash.encode(), value=value, on_delivery=report
        )
        self._producer.poll(0)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        return self._producer.flush(timeout_s)


def read_confirmations(
    consumer: Consumer, customer_hash: str, erased_at_ms: int, found: list[dict[str, Any]]
) -> bool:
    """Append to `found` the confirmations of this erasure that `consumer` (a reader of
    `erasures.done`) has fetched; True once it reached the end of the topic."""
    at_end = False
    for message in consumer.consume(500, 0.2):
        error = message.error()
        if error is not None:
            at_end = at_end or error.code() == KafkaError._PARTITION_EOF
            continue
        raw = message.value()
        if message.key() != customer_hash.encode() or raw is None:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("erased_at") == erased_at_ms:
            found.append(value)
    return at_end


def confirmations_reader(settings: Settings) -> Consumer:
    """A reader of `erasures.done` from its beginning (for `read_confirmations`)."""
    return _reader(settings, settings.topics.erasures_done)

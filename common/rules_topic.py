"""The compacted `rules` topic (docs/design.md 8.2): the live source of truth of rule packs.

Key = pack name and version (`name@N`, `record_key`), so compaction keeps every
published version; value = JSON `{"pack", "version", "yaml", "published_at", "author"}`:
the pack's YAML as written, its version (the publication number of that pack name: 1,
2, ...; a rollback is one more version holding an earlier YAML), when and by whom it was
published, and, signed, `"signature": {"key", "hmac"}`: the name of a publisher key
(`MOMENTS_RULES_SIGNING_KEYS`) and the HMAC-SHA256 under it of the pack's name and YAML
(`sign`); the author is then that key's name. `publish_pack` produces one record
(validation is the caller's: `moments rules publish` refuses what `rules check` refuses);
`pack_history` reads every record still on the topic, oldest first; `signature_problem`
says whether a record is signed by a known key. The topic has one partition, so its
order is the order of publication.

Records written before versions (key = pack name, no `"version"` in the value; compaction
kept the latest of each pack) are read like the others: such a record's version is one
more than its pack's version before it on the topic (`pack_history`), and a new
publication takes the next number, so old and new keys never meet.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from pydantic import SecretStr

from common.settings import Settings
from common.topics import BrokerUnavailable, ensure_rules_topic, quiet_client_logger

_log = quiet_client_logger("moments.kafka.rules")


@dataclass(frozen=True, slots=True)
class Published:
    """One publication of a rule pack."""

    offset: int
    pack: str
    yaml: str
    published_at: str
    author: str
    #: The publisher key's name and the pack's HMAC under it (None: unsigned).
    signed_by: str | None = None
    signature: str | None = None
    #: The pack's publication number (None: a record written before versions, until
    #: `pack_history` places it).
    version: int | None = None


def record_key(pack: str, version: int) -> bytes:
    """The key of a pack's version on the rules topic: `name@version`."""
    return f"{pack}@{version}".encode()


def next_version(history: Sequence[Published]) -> int:
    """The version a new publication of a pack takes, given its `pack_history`."""
    return max((record.version or 0 for record in history), default=0) + 1


def sign(key: SecretStr, pack: str, text: str) -> str:
    """The HMAC-SHA256 (hex) of a pack's name and YAML under a publisher key."""
    message = pack.encode("utf-8") + b"\x00" + text.encode("utf-8")
    secret = key.get_secret_value().encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signature_problem(record: Published, keys: Mapping[str, SecretStr]) -> str | None:
    """Why `record` is not signed by one of `keys` (None: it is). Names the key, never
    a secret."""
    if record.signed_by is None or record.signature is None:
        return "unsigned (publisher keys are set: MOMENTS_RULES_SIGNING_KEYS)"
    key = keys.get(record.signed_by)
    if key is None:
        return f"signed with an unknown key {record.signed_by!r}"
    if not hmac.compare_digest(sign(key, record.pack, record.yaml), record.signature):
        return f"signature does not match key {record.signed_by!r}"
    return None


def signing_key(settings: Settings, name: str | None) -> tuple[str, SecretStr] | None:
    """The publisher key to sign with: the one `name`d, else the only one; None when no
    key is set. Raises ValueError when none can be chosen (naming keys, never secrets)."""
    keys = settings.engine.rules_signing_keys
    if not keys:
        if name is not None:
            raise ValueError(f"no publisher key {name!r}: MOMENTS_RULES_SIGNING_KEYS is empty")
        return None
    if name is None:
        if len(keys) > 1:
            raise ValueError(f"several publisher keys ({', '.join(sorted(keys))}): name one")
        name = next(iter(keys))
    if name not in keys:
        raise ValueError(f"no publisher key {name!r} (known: {', '.join(sorted(keys))})")
    return name, keys[name]


def publish_pack(
    settings: Settings,
    pack: str,
    text: str,
    author: str,
    timeout_s: float = 20.0,
    *,
    key: tuple[str, SecretStr] | None = None,
    version: int | None = None,
) -> Published:
    """Produce a pack's YAML to the rules topic (created if missing) as its `version`
    (default: the next one, from the topic); wait for delivery. With a publisher `key`
    (name, secret) the record is signed and its author is the key's name."""
    ensure_rules_topic(settings)
    if version is None:
        version = next_version(pack_history(settings, pack, timeout_s))
    published_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    signature = None if key is None else sign(key[1], pack, text)
    if key is not None:
        author = key[0]
    value: dict[str, object] = {
        "pack": pack,
        "version": version,
        "yaml": text,
        "published_at": published_at,
        "author": author,
    }
    if key is not None:
        value["signature"] = {"key": key[0], "hmac": signature}
    producer = Producer(settings.kafka_config(logger=_log))
    offsets: list[int] = []
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            offsets.append(message.offset())  # type: ignore[attr-defined]

    producer.produce(
        settings.topics.rules,
        key=record_key(pack, version),
        value=json.dumps(value, sort_keys=True).encode("utf-8"),
        on_delivery=delivered,
    )
    producer.flush(timeout_s)
    if failures or not offsets:
        problem = failures[0] if failures else "timed out"
        raise BrokerUnavailable(f"could not publish to {settings.topics.rules}: {problem}")
    signer = None if key is None else key[0]
    return Published(offsets[0], pack, text, published_at, author, signer, signature, version)


def decode_published(offset: int, raw: bytes | None) -> Published | None:
    """A record of the rules topic, or None when it is not one of ours (or a tombstone)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        signed = value.get("signature")
        if not isinstance(signed, dict):
            signed = {}
        version = value.get("version")
        return Published(
            offset,
            str(value["pack"]),
            str(value["yaml"]),
            str(value["published_at"]),
            str(value["author"]),
            None if signed.get("key") is None else str(signed["key"]),
            None if signed.get("hmac") is None else str(signed["hmac"]),
            version if isinstance(version, int) and not isinstance(version, bool) else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def pack_history(
    settings: Settings, pack: str | None = None, timeout_s: float = 15.0
) -> list[Published]:
    """Every publication still on the rules topic (of one pack if given), oldest first,
    each with its version (a record from before versions: one more than its pack's
    version before it)."""
    topic = settings.topics.rules
    consumer = Consumer(
        settings.kafka_config(
            logger=_log,
            **{
                "group.id": f"moments-rules-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    found: list[Published] = []
    try:
        try:
            described = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if described is None or described.error is not None:
                return []
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read {topic}: {exc}") from None
        if high <= 0:
            return []
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        position = -1
        idle = 0
        while position < high - 1 and idle < 20:
            message = consumer.poll(0.5)
            if message is None:
                idle += 1
                continue
            if message.error() is not None:
                if position >= high - 1:
                    break
                continue
            idle = 0
            position = message.offset() or 0
            record = decode_published(position, message.value())
            if record is None:
                continue  # not a record of ours: skipped, never fatal
            if pack is None or record.pack == pack:
                found.append(record)
    finally:
        consumer.close()
    return with_versions(found)


def with_versions(records: Iterable[Published]) -> list[Published]:
    """Records in topic order, each with its version: one written before versions gets one
    more than the greatest version of its pack before it."""
    last: dict[str, int] = {}
    placed = []
    for record in records:
        version = record.version
        if version is None:
            version = last.get(record.pack, 0) + 1
            record = replace(record, version=version)
        last[record.pack] = max(last.get(record.pack, 0), version)
        placed.append(record)
    return placed

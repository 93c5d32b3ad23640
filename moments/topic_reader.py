"""`moments consume TOPIC`: a topic's records decoded, one JSON object a line.

Each topic has its reader (`reader_for`): events on `interactions` and
`interactions.late`, actions on every `actions.*`, decisions on `decisions`,
and on the dead-letter topics (`interactions.dlq`, `actions.dlq`) the record's
`moments.error.*` headers beside its value, decoded with the reader of the topic
it came from (`moments.error.topic`) when it decodes, else its raw bytes in
base64 and why it did not. Control records (the worker's ticks, erasure records
and markers) are shown as such, never decoded as data.

A topic gets a reader by being listed in `RECORD_TOPICS` (the `Topics` attribute
naming it and the record type in `schemas.records`), as `action-status` is; a
listed topic that `Topics` or `schemas.records` does not know (an older checkout)
is left out rather than an error.

This module reads; it never commits offsets (a group of its own, no commit).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

import schemas.records
from common.settings import Settings
from common.topics import quiet_client_logger
from schemas.codec import codec_for
from schemas.json_form import to_json_dict
from schemas.wire import (
    ERROR_HEADER_PREFIX,
    FORGET,
    TICK,
    Topics,
    control_value,
    erased_at_of,
)

#: Topics of records (`Topics` attribute -> record type name in `schemas.records`). A
#: topic whose attribute or record type does not exist yet is skipped (`action_status`).
RECORD_TOPICS: Final = (
    ("interactions", "InteractionEvent"),
    ("interactions_late", "InteractionEvent"),
    ("decisions", "Decision"),
    ("action_status", "ActionStatus"),
)
#: Topics of dead letters: headers `moments.error.*`, the value as its source topic had it.
DEAD_LETTER_TOPICS: Final = ("interactions_dlq", "actions_dlq")

_log = quiet_client_logger("moments.kafka.consume")

#: A reader: a record's value and headers -> what its JSON line says about them.
Reader = Callable[[bytes | None, list[tuple[str, bytes]]], dict[str, Any]]


class TopicReaderError(RuntimeError):
    """The topic has no reader (not one of moments' topics); the message lists those."""


def record_types(topics: Topics) -> dict[str, type]:
    """Topic name -> record type of every topic of records that exists in this version."""
    found: dict[str, type] = {}
    for attribute, type_name in RECORD_TOPICS:
        name = getattr(topics, attribute, None)
        record_type = getattr(schemas.records, type_name, None)
        if isinstance(name, str) and isinstance(record_type, type):
            found[name] = record_type
    for topic in topics.actions.values():
        found[topic] = schemas.records.ActionEvent
    return found


def readable_topics(topics: Topics) -> list[str]:
    """Every topic `moments consume` has a reader for."""
    dead = [getattr(topics, attribute) for attribute in DEAD_LETTER_TOPICS]
    return [*record_types(topics), *dead]


def _decoder(record_type: type, registry_url: str | None) -> Callable[[bytes], dict[str, Any]]:
    codec = codec_for(record_type, registry_url)
    return lambda value: to_json_dict(codec.decode(value))


def reader_for(settings: Settings, topic: str) -> Reader:
    """The reader of TOPIC; `TopicReaderError` naming the known topics when it has none."""
    topics = settings.topics
    registry = settings.kafka.schema_registry_url
    types = record_types(topics)
    if topic in types:
        decode = _decoder(types[topic], registry)

        def read_record(value: bytes | None, headers: list[tuple[str, bytes]]) -> dict[str, Any]:
            return _decoded(decode, value)

        return read_record
    if topic in {getattr(topics, attribute) for attribute in DEAD_LETTER_TOPICS}:
        decoders = {name: _decoder(kind, registry) for name, kind in types.items()}

        def read_dead_letter(
            value: bytes | None, headers: list[tuple[str, bytes]]
        ) -> dict[str, Any]:
            error = {
                name.removeprefix(ERROR_HEADER_PREFIX): text.decode("utf-8", "replace")
                for name, text in headers
                if name.startswith(ERROR_HEADER_PREFIX)
            }
            decode = decoders.get(error.get("topic", ""))
            entry: dict[str, Any] = {"error": error}
            if decode is None:
                entry["value_base64"] = _base64(value)
                return entry
            return entry | _decoded(decode, value)

        return read_dead_letter
    known = ", ".join(readable_topics(topics))
    raise TopicReaderError(f"no reader for topic {topic!r}; moments' topics: {known}")


def _decoded(decode: Callable[[bytes], dict[str, Any]], value: bytes | None) -> dict[str, Any]:
    """{"value": the record's JSON form}, or its raw bytes and why they did not decode."""
    if value is None:
        return {"value": None}
    try:
        return {"value": decode(value)}
    except Exception as exc:  # any undecodable value is shown, never the end of the read
        return {"decode_error": f"{type(exc).__name__}: {exc}", "value_base64": _base64(value)}


def _base64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def json_line(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    reader: Reader,
) -> str:
    """One record as a JSON line: where it is, its key and time, then what its reader says
    (a control record: its kind, and an erasure's time)."""
    entry: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": _iso(timestamp_ms),
        "key": None if key is None else key.decode("utf-8", "replace"),
    }
    control = control_value(headers)
    if control is not None and not any(name.startswith(ERROR_HEADER_PREFIX) for name, _ in headers):
        kinds = {TICK: "tick", FORGET: "erasure"}
        entry["control"] = kinds.get(control, control.decode("utf-8", "replace"))
        if control == FORGET:
            entry["erased_at"] = _iso(erased_at_of(headers))
        return json.dumps(entry)
    return json.dumps(entry | reader(value, headers))


def _iso(epoch_ms: int | None) -> str | None:
    if epoch_ms is None or epoch_ms < 0:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ConsumeOptions:
    """Where to start (`from_beginning`, else the end), whether to wait for more at the end
    (`follow`), and after how many records to stop (`max_records`, None: no limit)."""

    from_beginning: bool = False
    follow: bool = False
    max_records: int | None = None
    poll_s: float = 0.5


def consume_lines(
    settings: Settings, topic: str, options: ConsumeOptions, stop: Callable[[], bool]
) -> Iterator[str]:
    """TOPIC's records as JSON lines, in each partition's order, until the end of every
    partition (unless `follow`), `max_records` or STOP() says so."""
    reader = reader_for(settings, topic)
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"moments-consume-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "logger": _log,
            }
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise TopicReaderError(f"topic {topic!r} does not exist on the broker")
        start = OFFSET_BEGINNING if options.from_beginning else OFFSET_END
        partitions = sorted(found.partitions)
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        at_end: set[int] = set()
        shown = 0
        while not stop():
            if options.max_records is not None and shown >= options.max_records:
                return
            message = consumer.poll(options.poll_s)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition() or 0)
                    if not options.follow and at_end >= set(partitions):
                        return
                    continue
                raise TopicReaderError(f"reading {topic}: {error.str()}")
            at_end.discard(message.partition() or 0)
            _, timestamp = message.timestamp()
            headers: list[tuple[str, bytes]] = [
                (str(pair[0]), pair[1] if isinstance(pair[1], bytes) else b"")
                for pair in (message.headers() or [])
            ]
            yield json_line(
                topic,
                message.partition() or 0,
                message.offset() or 0,
                timestamp,
                message.key(),
                message.value(),
                headers,
                reader,
            )
            shown += 1
    finally:
        consumer.close()

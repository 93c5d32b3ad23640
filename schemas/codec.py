"""The codec of moments: Avro bytes, JSON form and validation for the four records.

Wire formats (docs/design.md, section 3.5):

- default: Avro single-object encoding, ``C3 01`` + the 8-byte little-endian
  CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form + the
  fastavro schemaless body;
- with a Schema Registry URL: Confluent framing (magic 0 + schema id),
  produced and read only through confluent-kafka's own ``schema_registry``
  client and Avro (de)serializers (``mock://`` URLs give an in-memory
  registry for tests).

Decoders accept both. Records hold timestamps as int epoch milliseconds and
dates as ``datetime.date``; decoding reads timestamps with a reader schema
whose ``timestamp-millis`` logical type is stripped (same physical type), so
no datetime is ever built on the hot path.

This module is the Avro codec (`AvroCodec`, `codec_for`) and the one import
for the rest of the codec, which lives beside it by job: `schemas.errors`
(the errors), `schemas.validation` (the contract's checks), `schemas.json_form`
(the JSON form and JSON-lines files) and `schemas.codegen` (the generated readers,
decoders and writers); `schemas.native`, on top of it, writes those decoders as
modules for mypyc. Errors are values with a name: `SchemaValidationError` names the field
(and file:line when known), `DecodeError` says which stage failed. It imports
nothing of ours but `schemas` and knows no Kafka topics, brokers or settings;
it never logs record contents.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from datetime import datetime
from importlib import resources
from operator import attrgetter
from typing import Any, Final, Generic, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.codegen import (
    compile_decoder,
    compile_reader,
    compile_writer,
    decoder_parts,
    writer_parts,
)
from schemas.errors import DecodeError, InvalidRecordError, SchemaValidationError
from schemas.json_form import (
    action_from_json,
    action_status_from_json,
    append_json_lines,
    decision_from_json,
    event_content_id,
    event_from_json,
    event_from_parsed,
    event_of_line,
    occurred_ms,
    read_events_jsonl,
    to_json_bytes,
    to_json_dict,
    to_json_line,
    to_json_lines,
)
from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent
from schemas.validation import (
    CHECKS,
    DECODED_CHECKS,
    EPOCH,
    KIND_OPT_TS,
    KIND_TS,
    MAX_IDENTIFIER_CHARS,
    ONE_MS,
    SPECS,
    R,
    Record,
    event_problem,
    field_error,
    plainly_valid_event,
    validate,
)

__all__ = [
    "MAX_IDENTIFIER_CHARS",
    "AvroCodec",
    "DecodeError",
    "InvalidRecordError",
    "Record",
    "SchemaValidationError",
    "action_from_json",
    "action_status_from_json",
    "append_json_lines",
    "codec_for",
    "decision_from_json",
    "event_content_id",
    "event_from_json",
    "event_from_parsed",
    "event_of_line",
    "occurred_ms",
    "read_events_jsonl",
    "schema_fingerprint",
    "to_json_bytes",
    "to_json_dict",
    "to_json_line",
    "to_json_lines",
    "validate",
]

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"


# --------------------------------------------------------------------------- schemas


#: Earlier versions of a record's schema whose single-object records still decode (Avro
#: schema resolution fills the fields added since with their defaults).
_PREVIOUS_SCHEMA_FILES: Final[dict[type, tuple[str, ...]]] = {
    ActionEvent: ("previous/action_event.v1.avsc",),
    Decision: ("previous/decision.v1.avsc",),
}

_SCHEMA_FILES: Final[dict[type, str]] = {
    InteractionEvent: "interaction_event.avsc",
    ActionEvent: "action_event.avsc",
    Decision: "decision.avsc",
    ActionStatus: "action_status.avsc",
}


_schema_texts: dict[type, str] = {}


def _schema_json(record_type: type) -> str:
    """The .avsc text of a record type (package data, read once)."""
    text = _schema_texts.get(record_type)
    if text is None:
        text = resources.files("schemas").joinpath(_SCHEMA_FILES[record_type]).read_text("utf-8")
        _schema_texts[record_type] = text
    return text


def _strip_timestamp_logical_types(node: Any) -> Any:
    """The schema with every ``timestamp-millis`` annotation removed (physical long stays)."""
    if isinstance(node, dict):
        out = {k: _strip_timestamp_logical_types(v) for k, v in node.items()}
        if out.get("logicalType") == "timestamp-millis":
            del out["logicalType"]
        return out
    if isinstance(node, list):
        return [_strip_timestamp_logical_types(v) for v in node]
    return node


def schema_fingerprint(record_type: type) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, in the
    little-endian byte order of single-object headers (fastavro's hex digest is that order)."""
    pcf = to_parsing_canonical_form(parse_schema(json.loads(_schema_json(record_type))))
    return bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))


# --------------------------------------------------------------------------- Avro codec


_registry_lock = threading.Lock()
_registry_clients: dict[str, Any] = {}


def _registry_client(url: str, config: dict[str, Any] | None) -> Any:
    """One schema registry client per URL + config (``mock://`` clients keep their schemas
    in the client, so sharing it is what makes writers and readers agree)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = {**(config or {}), "url": url}
    key = json.dumps(conf, sort_keys=True, default=str)
    with _registry_lock:
        client = _registry_clients.get(key)
        if client is None:
            client = SchemaRegistryClient.new_client(conf)
            _registry_clients[key] = client
        return client


class AvroCodec(Generic[R]):
    """Avro bytes <-> one record type.

    Encodes with single-object encoding, or Confluent framing through
    confluent-kafka's schema-registry serializer when `registry_url` is set
    (subject ``<topic>-value`` with a topic, else the record name). Decodes
    either framing. Thread-safe; never logs payloads.
    """

    def __init__(
        self,
        record_type: type[R],
        *,
        registry_url: str | None = None,
        registry_config: dict[str, Any] | None = None,
        topic: str | None = None,
    ) -> None:
        if record_type not in _SCHEMA_FILES:
            raise TypeError(f"no Avro schema for {record_type!r}")
        self.record_type: type[R] = record_type
        self.registry_url = registry_url
        self.topic = topic
        self.schema_str = _schema_json(record_type)
        schema = json.loads(self.schema_str)
        self.name: str = f"{schema['namespace']}.{schema['name']}"
        self._field_names = tuple(f.name for f in dataclass_fields(record_type))
        self._get_fields = attrgetter(*self._field_names)
        # fastavro returns fields in schema order; when that is the dataclass order,
        # positional construction is a third cheaper than keywords.
        self._positional = self._field_names == tuple(f["name"] for f in schema["fields"])
        self._write_schema = parse_schema(schema)
        #: The schema decoding reads with: the same physical types, timestamps as int ms.
        self.read_schema_json = _strip_timestamp_logical_types(schema)
        self._read_schema = parse_schema(self.read_schema_json)
        self.fingerprint = schema_fingerprint(record_type)
        self._header = SINGLE_OBJECT_MAGIC + self.fingerprint
        self._checks = CHECKS[record_type]
        self._decoded_checks = DECODED_CHECKS[record_type]
        self._timestamp_fields = tuple(
            name for name, _, kind, _ in SPECS[record_type] if kind in (KIND_TS, KIND_OPT_TS)
        )
        self._avro_names = tuple(f["name"] for f in schema["fields"])
        self._fast_reader = compile_reader(self.read_schema_json)
        index_of = {name: i for i, name in enumerate(self._avro_names)}
        self._decoded_checks_at = tuple(
            (index_of[name], name, check) for name, check in self._decoded_checks
        )
        self._checks_by_index = tuple((index, check) for index, _, check in self._decoded_checks_at)
        writable = self._avro_names == self._field_names
        #: The schema the unchecked writer is generated from (None: no generated writer).
        self._writer_schema = schema if writable else None
        self._fast_writer = compile_writer(schema, self._header) if writable else None
        # What exact types leave open is what a decoded record leaves open: the same checks.
        self._checked_writer = (
            compile_writer(
                schema,
                self._header,
                self._checks_by_index,
            )
            if writable
            else None
        )
        self._fast_decoder: Callable[[bytes], R] | None = (
            compile_decoder(
                self.read_schema_json,
                self._header,
                record_type,
                self._checks_by_index,
            )
            if self._positional
            else None
        )
        #: The rules between an event's fields (`schemas.validation.event_problem`), run after
        #: the field checks on every path that validates; None for actions and decisions.
        self._record_rules: Callable[[Any], tuple[str, str] | None] | None = (
            event_problem if record_type is InteractionEvent else None
        )
        #: `decode` for hot loops, without its checks for other wire formats: the generated
        #: decoder when there is one. It raises (any exception) for whatever it does not take
        #: (another framing, unusual or invalid records): call `decode` then for the verdict.
        self.fast_decode: Callable[[bytes], R] = self._fast_decoder or self.decode
        if self._fast_decoder is not None and self._record_rules is not None:
            self.fast_decode = _with_record_rules(self._fast_decoder, self._record_rules)
        #: fingerprint -> parsed writer schema of an earlier version of this record
        self._previous: dict[bytes, Any] = {}
        for name in _PREVIOUS_SCHEMA_FILES.get(record_type, ()):
            old = _strip_timestamp_logical_types(
                json.loads(resources.files("schemas").joinpath(name).read_text("utf-8"))
            )
            canonical = to_parsing_canonical_form(parse_schema(old))
            self._previous[bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))] = parse_schema(old)
        self._serializer: Any = None
        self._deserializer: Any = None
        if registry_url:
            self._init_registry(registry_url, registry_config)

    def _init_registry(self, url: str, config: dict[str, Any] | None) -> None:
        from confluent_kafka.schema_registry import record_subject_name_strategy
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

        client = _registry_client(url, config)
        conf: dict[str, Any] = {"auto.register.schemas": True}
        if self.topic is None:
            conf["subject.name.strategy"] = record_subject_name_strategy
        self._serializer = AvroSerializer(
            client,
            self.schema_str,
            to_dict=lambda record, ctx: self.to_avro_dict(record),
            conf=conf,
        )
        self._deserializer = AvroDeserializer(client, self.schema_str)

    def decoder_source(self) -> tuple[str, dict[str, Any]] | None:
        """The generated decoder's source and the names it reads (what `schemas.native`
        writes as a module for mypyc); None when the schema takes no generated decoder."""
        return decoder_parts(
            self.read_schema_json, self._header, self.record_type, self._checks_by_index
        )

    def writer_source(self, *, checked: bool = False) -> tuple[str, dict[str, Any]] | None:
        """The unchecked writer's source (`checked`: the checked writer's, what `encode`
        runs when it validates) and the names it reads (what `schemas.native` writes as a
        module for mypyc); None when the codec writes with no generated writer."""
        if self._writer_schema is None:
            return None
        checks = self._checks_by_index if checked else ()
        return writer_parts(self._writer_schema, self._header, checks)

    # -- records <-> Avro dicts

    def to_avro_dict(self, record: R) -> dict[str, Any]:
        """The record as the dict fastavro writes (no copies of nested values)."""
        return dict(zip(self._field_names, self._get_fields(record), strict=True))

    def _validate(self, record: Any) -> None:
        if self.record_type is InteractionEvent and plainly_valid_event(record):
            return
        if type(record) is not self.record_type:
            raise SchemaValidationError(
                "<record>", f"expected {self.record_type.__name__}, got {type(record).__name__}"
            )
        for name, check in self._checks:
            problem = check(getattr(record, name))
            if problem is not None:
                raise field_error(name, problem)
        self._check_record_rules(record)

    def _check_record_rules(self, record: Any) -> None:
        """Raise `SchemaValidationError` for a record (its fields checked) that breaks a rule
        between its fields."""
        if self._record_rules is not None:
            broken = self._record_rules(record)
            if broken is not None:
                raise SchemaValidationError(*broken)

    # -- encode

    def encode(self, record: R, *, validate: bool = True) -> bytes:
        """Avro bytes of `record`: single-object encoding, or Confluent framing with a registry.

        Raises `SchemaValidationError` (naming the field) for an invalid record.
        """
        if self._serializer is None and type(record) is self.record_type:
            writer = self._checked_writer if validate else self._fast_writer
            if writer is not None:
                try:
                    data = writer(*self._get_fields(record))
                except Exception:  # unusual or invalid: validate names the problem, or
                    pass  # fastavro writes (or refuses) what the writer left
                else:
                    if validate:
                        self._check_record_rules(record)
                    return data
        if validate:
            self._validate(record)
        if self._serializer is not None:
            return cast(bytes, self._serializer(record, self._context()))
        buffer = io.BytesIO()
        buffer.write(self._header)
        schemaless_writer(buffer, self._write_schema, self.to_avro_dict(record))
        return buffer.getvalue()

    def _context(self) -> Any:
        from confluent_kafka.serialization import MessageField, SerializationContext

        return SerializationContext(self.topic or self.name, MessageField.VALUE)

    # -- decode

    def decode_dict(self, data: bytes) -> dict[str, Any]:
        """The decoded Avro dict (timestamps int ms, dates `date`), not validated; the fast path."""
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if data[2:10] != self.fingerprint:
                writer = self._previous.get(data[2:10])
                if writer is None:
                    raise DecodeError(self._unknown_fingerprint(data[2:10]))
                return self._decode_previous(data, writer)
            values = self._read_fast(data)
            if values is not None:
                return dict(zip(self._avro_names, values, strict=True))
            buffer = io.BytesIO(data)
            buffer.seek(10)
            try:
                value = schemaless_reader(buffer, self._read_schema, None)
            except Exception as exc:  # fastavro raises many kinds on corrupt input
                raise DecodeError(f"bad Avro body for {self.name}: {_describe(exc)}") from None
            if buffer.tell() != len(data):
                raise DecodeError(
                    f"bad Avro body for {self.name}: {len(data) - buffer.tell()} trailing bytes"
                )
            return cast(dict[str, Any], value)
        if data[:1] == b"\x00" and len(data) >= 5:
            return self._decode_confluent(data)
        if not data:
            raise DecodeError("empty message")
        raise DecodeError(
            f"unknown wire format (first bytes {data[:2].hex()}); expected Avro single-object "
            "encoding (c301) or Confluent framing (00 + schema id)"
        )

    def decode(self, data: bytes, *, validate: bool = True) -> R:
        """The record in `data` (either wire format).

        Raises `DecodeError` (stage "decode") for undecodable bytes and
        `InvalidRecordError` (a `DecodeError` with stage "validate" and a
        `SchemaValidationError` naming the field) for a record breaking the contract.
        """
        if validate and self._fast_decoder is not None:
            try:
                record = self._fast_decoder(data)
            except Exception:  # unusual or invalid: the general path gives the record or error
                pass
            else:
                return self._decoded(record, validate)
        if data[:10] == self._header:
            values = self._read_fast(data)
            if values is not None:
                if validate:
                    for index, name, check in self._decoded_checks_at:
                        problem = check(values[index])
                        if problem is not None:
                            raise InvalidRecordError(field_error(name, problem))
                if self._positional:
                    return self._decoded(self.record_type(*values), validate)
                return self._decoded(
                    self.record_type(**dict(zip(self._avro_names, values, strict=True))), validate
                )
        fields = self.decode_dict(data)
        if validate:
            for name, check in self._decoded_checks:
                problem = check(fields[name])
                if problem is not None:
                    raise InvalidRecordError(field_error(name, problem))
        if self._positional:
            return self._decoded(self.record_type(*fields.values()), validate)
        return self._decoded(self.record_type(**fields), validate)

    def _decoded(self, record: R, validate: bool) -> R:
        """A decoded record whose fields passed their checks, once it keeps the rules between
        its fields too (else `InvalidRecordError`, stage "validate")."""
        if validate and self._record_rules is not None:
            broken = self._record_rules(record)
            if broken is not None:
                raise InvalidRecordError(SchemaValidationError(*broken))
        return record

    def _decode_previous(self, data: bytes, writer: Any) -> dict[str, Any]:
        """A record written with an earlier version of the schema, resolved to this one."""
        buffer = io.BytesIO(data)
        buffer.seek(10)
        try:
            value = schemaless_reader(buffer, writer, self._read_schema)
        except Exception as exc:  # fastavro raises many kinds on corrupt input
            raise DecodeError(f"bad Avro body for {self.name}: {_describe(exc)}") from None
        if buffer.tell() != len(data):
            raise DecodeError(
                f"bad Avro body for {self.name}: {len(data) - buffer.tell()} trailing bytes"
            )
        return cast(dict[str, Any], value)

    def _read_fast(self, data: bytes) -> tuple[Any, ...] | None:
        """The generated reader's values for a single-object body, or None (fastavro decides)."""
        if self._fast_reader is None:
            return None
        try:
            return self._fast_reader(data, 10)
        except Exception:  # corrupt or unusual: fastavro gives the result or the error
            return None

    def _decode_confluent(self, data: bytes) -> dict[str, Any]:
        schema_id = int.from_bytes(data[1:5], "big")
        if self._deserializer is None:
            raise DecodeError(
                f"Confluent-framed message (schema id {schema_id}) but no schema registry "
                "is configured (set MOMENTS_SCHEMA_REGISTRY_URL)"
            )
        try:
            value = self._deserializer(data, self._context())
        except Exception as exc:  # registry lookups, resolution and Avro errors alike
            raise DecodeError(
                f"cannot decode Confluent-framed {self.name} (schema id {schema_id}): "
                f"{_describe(exc)}"
            ) from None
        if not isinstance(value, dict):
            raise DecodeError(f"schema id {schema_id} is not a {self.name} record")
        # fastavro applies the writer's timestamp-millis conversion here; undo it.
        for name in self._timestamp_fields:
            moment = value.get(name)
            if isinstance(moment, datetime):
                value[name] = (moment - EPOCH) // ONE_MS
        return value

    def _unknown_fingerprint(self, fingerprint: bytes) -> str:
        for other in _SCHEMA_FILES:
            if other is not self.record_type and schema_fingerprint(other) == fingerprint:
                return f"message holds a {other.__name__}, expected {self.record_type.__name__}"
        return (
            f"unknown schema fingerprint {fingerprint.hex()} (expected {self.fingerprint.hex()} "
            f"for {self.name})"
        )


def _with_record_rules(
    decode: Callable[[bytes], R], rules: Callable[[Any], tuple[str, str] | None]
) -> Callable[[bytes], R]:
    """`decode` (the generated decoder), then the rules between fields: a record that breaks
    one raises (`decode` then names it), like any record the generated decoder refuses."""

    def fast_decode(data: bytes) -> R:
        record = decode(data)
        if rules(record) is not None:
            raise ValueError("the record breaks a rule between its fields")
        return record

    return fast_decode


_OBJECT_REPR = re.compile(r" ?(?:from )?<[\w.]+ object at 0x[0-9a-f]+>")


def _describe(exc: BaseException) -> str:
    """The exception in one line, without object addresses (same input, same message)."""
    text = _OBJECT_REPR.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


_codecs_lock = threading.Lock()
_codecs: dict[tuple[type, str | None], AvroCodec[Any]] = {}


def codec_for(record_type: type[R], settings_registry_url: str | None = None) -> AvroCodec[R]:
    """The shared codec of a record type (and registry URL), built once."""
    key = (record_type, settings_registry_url or None)
    with _codecs_lock:
        codec = _codecs.get(key)
        if codec is None:
            codec = AvroCodec(record_type, registry_url=settings_registry_url or None)
            _codecs[key] = codec
        return cast(AvroCodec[R], codec)

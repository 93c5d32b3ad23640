"""The codec of moments: Avro bytes, JSON form and validation for the three records.

Wire formats (DESIGN.md section 3):

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

The JSON form (files, the HTTP collector, ``moments replay``) uses the same
field names, ISO-8601 timestamps with an offset (written as UTC
``+00:00`` with milliseconds) and ``YYYY-MM-DD`` dates.

Errors are values with a name: `SchemaValidationError` names the field (and
file:line when known), `DecodeError` says which stage failed. This module
imports nothing of ours but `schemas.records` and knows no Kafka topics,
brokers or settings; it never logs record contents.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import math
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields as dataclass_fields
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, cast

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.records import (
    CHANNELS,
    DESTINATIONS,
    OUTCOMES,
    ActionEvent,
    Decision,
    InteractionEvent,
)

__all__ = [
    "MAX_IDENTIFIER_CHARS",
    "AvroCodec",
    "DecodeError",
    "InvalidRecordError",
    "Record",
    "SchemaValidationError",
    "action_from_json",
    "codec_for",
    "decision_from_json",
    "event_content_id",
    "event_from_json",
    "read_events_jsonl",
    "schema_fingerprint",
    "to_json_bytes",
    "to_json_dict",
    "to_json_line",
    "to_json_lines",
    "validate",
]

Record = InteractionEvent | ActionEvent | Decision
R = TypeVar("R", InteractionEvent, ActionEvent, Decision)

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"


# --------------------------------------------------------------------------- errors


class SchemaValidationError(ValueError):
    """A record or JSON object that breaks the contract; names the field (and file:line)."""

    def __init__(self, field: str, message: str, where: str = "") -> None:
        self.field = field
        self.message = message
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.where}: " if self.where else ""
        return f"{head}{self.field}: {self.message}"

    def at(self, where: str) -> SchemaValidationError:
        """The same error located at `where` (e.g. ``events.jsonl:12``)."""
        return SchemaValidationError(self.field, self.message, where)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.field, self.message, self.where))


class DecodeError(ValueError):
    """Bytes that cannot become a record: bad magic, bad Avro, unknown schema (stage "decode"),
    or a decoded record that breaks the contract (stage "validate")."""

    def __init__(self, message: str, *, stage: str = "decode") -> None:
        self.stage = stage
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_decode_error, (str(self), self.stage))


class InvalidRecordError(DecodeError, SchemaValidationError):
    """Decoded fine but invalid: both a `DecodeError` (stage "validate") and a
    `SchemaValidationError` (names the field), so either ``except`` catches it."""

    def __init__(self, error: SchemaValidationError) -> None:
        self.stage = "validate"
        self.field = error.field
        self.message = error.message
        self.where = error.where
        ValueError.__init__(self, SchemaValidationError.__str__(self))

    def __str__(self) -> str:
        return SchemaValidationError.__str__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (SchemaValidationError(self.field, self.message, self.where),))


def _decode_error(message: str, stage: str) -> DecodeError:
    return DecodeError(message, stage=stage)


# --------------------------------------------------------------------------- schemas

#: Earlier versions of a record's schema whose single-object records still decode (Avro
#: schema resolution fills the fields added since with their defaults).
_PREVIOUS_SCHEMA_FILES: Final[dict[type, tuple[str, ...]]] = {
    Decision: ("previous/decision.v1.avsc",),
}

_SCHEMA_FILES: Final[dict[type, str]] = {
    InteractionEvent: "interaction_event.avsc",
    ActionEvent: "action_event.avsc",
    Decision: "decision.avsc",
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


# --------------------------------------------------------------------------- validation

_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
# Timestamps must also be writable as ISO-8601 (years 1..9999).
_TS_MIN: Final = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_MS
_TS_MAX: Final = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _ONE_MS

Check = Callable[[Any], str | None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {_kind(value)}"


def _non_empty(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    return None if value else "must not be empty"


def _optional_text(value: Any) -> str | None:
    return (
        None
        if value is None or isinstance(value, str)
        else f"expected a string or null, got {_kind(value)}"
    )


#: Longest identifier (event_id, customer_id, type, source, product, reference, currency,
#: attribute keys) in characters (DESIGN.md section 3, "Limits").
MAX_IDENTIFIER_CHARS: Final = 256


def _too_long(value: str) -> str:
    return f"{len(value)} characters exceed the limit of {MAX_IDENTIFIER_CHARS}"


def _identifier(value: Any) -> str | None:
    """A required, non-empty identifier of at most `MAX_IDENTIFIER_CHARS`."""
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    if not value:
        return "must not be empty"
    return None if len(value) <= MAX_IDENTIFIER_CHARS else _too_long(value)


def _short_text(value: Any) -> str | None:
    """A string (maybe empty) of at most `MAX_IDENTIFIER_CHARS`."""
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    return None if len(value) <= MAX_IDENTIFIER_CHARS else _too_long(value)


def _optional_short_text(value: Any) -> str | None:
    """None or a string of at most `MAX_IDENTIFIER_CHARS`."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"expected a string or null, got {_kind(value)}"
    return None if len(value) <= MAX_IDENTIFIER_CHARS else _too_long(value)


def _attribute_map(value: Any) -> str | None:
    """A map of strings whose keys are at most `MAX_IDENTIFIER_CHARS` long."""
    problem = _string_map(value)
    if problem is not None:
        return problem
    for key in value:
        if len(key) > MAX_IDENTIFIER_CHARS:
            return f"a key of {_too_long(key)}"
    return None


def _one_of(symbols: tuple[str, ...]) -> Check:
    allowed = frozenset(symbols)
    listing = ", ".join(symbols)

    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in allowed:
            return None
        return f"{value!r} is not one of {listing}"

    return check


def _timestamp(value: Any) -> str | None:
    if not _is_int(value):
        return f"expected int epoch milliseconds, got {_kind(value)}"
    if not _TS_MIN <= value <= _TS_MAX:
        return f"{value} is outside years 1..9999"
    return None


def _optional_timestamp(value: Any) -> str | None:
    return None if value is None else _timestamp(value)


def _optional_date(value: Any) -> str | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return None
    return f"expected a date or null, got {_kind(value)}"


def _optional_double(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, float | int) or isinstance(value, bool):
        return f"expected a number or null, got {_kind(value)}"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond any double
        finite = False
    return None if finite else f"{str(value)[:40]} is not a finite double"


def _avro_int(low: int = _INT_MIN, high: int = _INT_MAX) -> Check:
    def check(value: Any) -> str | None:
        if not _is_int(value):
            return f"expected an integer, got {_kind(value)}"
        return None if low <= value <= high else f"{value} is outside {low}..{high}"

    return check


def _string_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected a list of strings, got {_kind(value)}"
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return f"[{i}]: expected a string, got {_kind(item)}"
    return None


def _string_map(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"expected a map of strings, got {_kind(value)}"
    for key, item in value.items():
        if not isinstance(key, str):
            return f"key {key!r}: expected a string key"
        if not isinstance(item, str):
            return f".{key}: expected a string, got {_kind(item)}"
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return f"{type(value).__name__} {value!r}"[:80]


_CHANNEL: Final = _one_of(CHANNELS)
_OUTCOME: Final = _one_of(OUTCOMES)

# Field kinds shared by validation and the JSON form, in schema field order.
_TS, _OPT_TS, _OPT_DATE, _OPT_DOUBLE, _MAP, _LIST, _PLAIN = range(7)

_FieldSpec = tuple[str, Check, int, bool]  # name, check, kind, required in JSON

_SPECS: Final[dict[type, tuple[_FieldSpec, ...]]] = {
    InteractionEvent: (
        ("event_id", _identifier, _PLAIN, True),
        ("customer_id", _identifier, _PLAIN, True),
        ("channel", _CHANNEL, _PLAIN, True),
        ("type", _identifier, _PLAIN, True),
        ("occurred_at", _timestamp, _TS, True),
        ("source", _short_text, _PLAIN, False),
        ("product", _optional_short_text, _PLAIN, False),
        ("reference", _optional_short_text, _PLAIN, False),
        ("amount", _optional_double, _OPT_DOUBLE, False),
        ("currency", _optional_short_text, _PLAIN, False),
        ("due_date", _optional_date, _OPT_DATE, False),
        ("customer_since", _optional_date, _OPT_DATE, False),
        ("text", _optional_text, _PLAIN, False),
        ("attributes", _attribute_map, _MAP, False),
    ),
    ActionEvent: (
        ("action_id", _non_empty, _PLAIN, True),
        ("customer_id", _non_empty, _PLAIN, True),
        ("rule", _non_empty, _PLAIN, True),
        ("action", _non_empty, _PLAIN, True),
        ("rule_version", _avro_int(0), _PLAIN, True),
        ("destination", _one_of(DESTINATIONS), _PLAIN, True),
        ("priority", _avro_int(0, 100), _PLAIN, True),
        ("reason", _non_empty, _PLAIN, True),
        ("evidence", _string_list, _LIST, True),
        ("channel_hint", _text, _PLAIN, True),
        ("triggered_at", _timestamp, _TS, True),
        ("due_by", _optional_timestamp, _OPT_TS, False),
        ("details", _string_map, _MAP, False),
    ),
    Decision: (
        ("decision_id", _non_empty, _PLAIN, True),
        ("customer_id", _non_empty, _PLAIN, True),
        ("rule", _non_empty, _PLAIN, True),
        ("rule_version", _avro_int(0), _PLAIN, True),
        ("outcome", _OUTCOME, _PLAIN, True),
        ("reason", _non_empty, _PLAIN, True),
        ("action_id", _optional_text, _PLAIN, False),
        ("evidence", _string_list, _LIST, True),
        ("decided_at", _timestamp, _TS, True),
        ("blocked_by", _optional_text, _PLAIN, False),
    ),
}

_CHECKS: Final = {t: tuple((name, check) for name, check, _, _ in s) for t, s in _SPECS.items()}

# What a successful Avro decode already guarantees (types, enum symbols); a decoded
# record is only checked for the rest (empty ids, ranges, NaN), which keeps decode fast.
_AVRO_ENFORCED: Final[frozenset[Check]] = frozenset(
    (_text, _optional_text, _optional_date, _string_list, _string_map, _CHANNEL, _OUTCOME)
)
_DECODED_CHECKS: Final = {
    t: tuple((name, check) for name, check in checks if check not in _AVRO_ENFORCED)
    for t, checks in _CHECKS.items()
}


def _field_error(name: str, problem: str, where: str = "") -> SchemaValidationError:
    # Container checks report the element as a suffix: "[2]: ..." or ".plan: ...".
    if problem[:1] in "[." and ": " in problem:
        suffix, _, problem = problem.partition(": ")
        return SchemaValidationError(name + suffix, problem, where)
    return SchemaValidationError(name, problem, where)


def validate(record: Record) -> None:
    """Raise `SchemaValidationError` naming the first field of `record` that breaks the contract."""
    checks = _CHECKS.get(type(record))
    if checks is None:
        raise SchemaValidationError("<record>", f"not a moments record: {type(record).__name__}")
    for name, check in checks:
        problem = check(getattr(record, name))
        if problem is not None:
            raise _field_error(name, problem)


# --------------------------------------------------------------------------- JSON form


def _ms_to_iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def _iso_to_ms(name: str, value: Any, where: str) -> int:
    example = "e.g. 2026-01-02T03:04:05.000+00:00"
    if not isinstance(value, str):
        raise SchemaValidationError(
            name,
            f"expected an ISO-8601 timestamp with offset ({example}), got {_kind(value)}",
            where,
        )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SchemaValidationError(
            name, f"{value!r} is not an ISO-8601 timestamp ({example})", where
        ) from None
    if moment.tzinfo is None:
        raise SchemaValidationError(name, f"{value!r} has no UTC offset ({example})", where)
    return (moment - _EPOCH) // _ONE_MS


_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_date(name: str, value: Any, where: str) -> date:
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise SchemaValidationError(name, f"expected a date YYYY-MM-DD, got {_kind(value)}", where)


def to_json_dict(record: Record) -> dict[str, Any]:
    """The JSON form: schema field order, ISO-8601 UTC timestamps, YYYY-MM-DD dates, sorted maps."""
    out: dict[str, Any] = {}
    for name, _, kind, _ in _SPECS[type(record)]:
        value = getattr(record, name)
        if value is None:
            out[name] = None
        elif kind in (_TS, _OPT_TS):
            out[name] = _ms_to_iso(value)
        elif kind == _OPT_DATE:
            out[name] = value.isoformat()
        elif kind == _MAP:
            out[name] = {k: value[k] for k in sorted(value)}
        elif kind == _LIST:
            out[name] = list(value)
        elif kind == _OPT_DOUBLE:
            out[name] = float(value)
        else:
            out[name] = value
    return out


def to_json_line(record: Record) -> str:
    """One compact JSON line (no newline); the same record always gives the same bytes."""
    return json.dumps(to_json_dict(record), ensure_ascii=False, separators=(",", ":"))


# Minute number -> "YYYY-MM-DDTHH:MM:"; the seconds and milliseconds come from two tables.
_ISO_MINUTES: dict[int, str] = {}
_ISO_SECONDS: Final = tuple(f"{second:02d}." for second in range(60))
_ISO_MILLIS: Final = tuple(f"{milli:03d}+00:00" for milli in range(1000))


def _fast_ms_to_iso(ms: int) -> str:
    """`_ms_to_iso` without building a datetime (same text, same OverflowError)."""
    minute, rest = divmod(ms, 60_000)
    head = _ISO_MINUTES.get(minute)
    if head is None:
        if not _TS_MIN <= ms <= _TS_MAX:  # whole minutes: a valid minute holds only valid ms
            return _ms_to_iso(ms)  # raises the same OverflowError the slow path would
        if len(_ISO_MINUTES) >= 65_536:
            _ISO_MINUTES.clear()
        head = _ISO_MINUTES[minute] = _ms_to_iso(minute * 60_000)[:17]
    return f"{head}{_ISO_SECONDS[rest // 1000]}{_ISO_MILLIS[rest % 1000]}"


_APPEND_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_SORT_KEYS: Final = orjson.OPT_SORT_KEYS
_Fragment: Final = orjson.Fragment


def _action_json(a: ActionEvent) -> dict[str, Any] | None:
    """The JSON form of an engine-made action for orjson (details pre-serialized with sorted
    keys: orjson sorts by UTF-8 bytes, which is code point order), or None when a scalar
    field has an unexpected type and the general path must write it."""
    if not (
        type(a.rule_version) is int
        and type(a.priority) is int
        and type(a.triggered_at) is int
        and (a.due_by is None or type(a.due_by) is int)
        and type(a.evidence) is list
        and type(a.details) is dict
    ):
        return None
    due_by = a.due_by
    return {
        "action_id": a.action_id,
        "customer_id": a.customer_id,
        "rule": a.rule,
        "action": a.action,
        "rule_version": a.rule_version,
        "destination": a.destination,
        "priority": a.priority,
        "reason": a.reason,
        "evidence": a.evidence,
        "channel_hint": a.channel_hint,
        "triggered_at": _fast_ms_to_iso(a.triggered_at),
        "due_by": None if due_by is None else _fast_ms_to_iso(due_by),
        "details": _Fragment(orjson.dumps(a.details, option=_SORT_KEYS)),
    }


def _decision_json(d: Decision) -> dict[str, Any] | None:
    """Like `_action_json`, for a decision."""
    if not (type(d.rule_version) is int and type(d.decided_at) is int and type(d.evidence) is list):
        return None
    return {
        "decision_id": d.decision_id,
        "customer_id": d.customer_id,
        "rule": d.rule,
        "rule_version": d.rule_version,
        "outcome": d.outcome,
        "reason": d.reason,
        "action_id": d.action_id,
        "evidence": d.evidence,
        "decided_at": _fast_ms_to_iso(d.decided_at),
        "blocked_by": d.blocked_by,
    }


def _fast_json(record: Record) -> dict[str, Any] | None:
    if isinstance(record, ActionEvent):
        return _action_json(record)
    if isinstance(record, Decision):
        return _decision_json(record)
    return None


def to_json_bytes(record: Record) -> bytes:
    """`to_json_line(record)` as UTF-8 bytes (no newline), built directly for the hot paths
    (replay and backfill write the engine's actions and decisions with it).

    Lists and maps must hold strings, as `validate` requires; a record whose scalar
    fields have unexpected types takes the general path.
    """
    try:
        obj = _fast_json(record)
        if obj is not None:
            return orjson.dumps(obj)
    except TypeError:
        # orjson writes what json.dumps(ensure_ascii=False, separators=(",", ":")) writes
        # for strings, ints, lists and str maps (the only values of actions and decisions);
        # it refuses lone surrogates (and non-str keys), where the general path gives the
        # error the file write would raise.
        pass
    return _generic_json_bytes(record)


def to_json_lines(records: Iterable[Record]) -> bytes:
    """``b"".join(to_json_bytes(r) + b"\n" for r in records)``, with one orjson call per record."""
    dumps = orjson.dumps
    lines: list[bytes] = []
    append = lines.append
    for record in records:
        try:
            if isinstance(record, ActionEvent):
                obj = _action_json(record)
            elif isinstance(record, Decision):
                obj = _decision_json(record)
            else:
                obj = None
            if obj is not None:
                append(dumps(obj, option=_APPEND_NEWLINE))
                continue
        except TypeError:
            pass
        append(_generic_json_bytes(record) + b"\n")
    return b"".join(lines)


def _generic_json_bytes(record: Record) -> bytes:
    return to_json_line(record).encode("utf-8")


def _from_json(record_type: type[R], obj: Any, where: str, optional_id: str | None) -> R:
    if not isinstance(obj, dict):
        raise SchemaValidationError(
            "<record>", f"expected a JSON object, got {type(obj).__name__}", where
        )
    specs = _SPECS[record_type]
    known = {spec[0] for spec in specs}
    for key in obj:
        if key not in known:
            raise SchemaValidationError(str(key), "unknown field", where)
    values: dict[str, Any] = {}
    for name, check, kind, required in specs:
        if name not in obj or obj[name] is None:
            if required and name != optional_id:
                absent = "must not be null" if name in obj else "missing required field"
                raise SchemaValidationError(name, absent, where)
            if name not in obj or kind in (_MAP, _LIST):
                continue  # dataclass default
            values[name] = "" if name == "source" else None
            continue
        value = obj[name]
        if kind in (_TS, _OPT_TS):
            value = _iso_to_ms(name, value, where)
        elif kind == _OPT_DATE:
            value = _parse_date(name, value, where)
        elif kind == _OPT_DOUBLE and _is_int(value) and not _optional_double(value):
            value = float(value)
        elif kind == _MAP and isinstance(value, dict):
            value = dict(value)
        elif kind == _LIST and isinstance(value, list):
            value = list(value)
        problem = check(value)
        if problem is not None:
            raise _field_error(name, problem, where)
        values[name] = value
    if optional_id is not None and optional_id not in values:
        values[optional_id] = "pending"
    return record_type(**values)


def event_content_id(event: InteractionEvent) -> str:
    """A deterministic event id from the event's content (everything but event_id)."""
    content = to_json_dict(event)
    del content["event_id"]
    canonical = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return "h-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def event_from_json(
    obj: Any, *, where: str = "", new_event_id: Callable[[], str] | None = None
) -> InteractionEvent:
    """An `InteractionEvent` from its JSON form, validated.

    Without an event_id the event gets `new_event_id()` (the SDK passes a UUIDv7
    factory) or, by default, a deterministic id hashed from its content.
    """
    event = _from_json(InteractionEvent, obj, where, optional_id="event_id")
    if isinstance(obj, dict) and obj.get("event_id") is None:
        event_id = new_event_id() if new_event_id is not None else event_content_id(event)
        event = replace(event, event_id=event_id)
    return event


def action_from_json(obj: Any, *, where: str = "") -> ActionEvent:
    """An `ActionEvent` from its JSON form (one flat object), validated."""
    return _from_json(ActionEvent, obj, where, optional_id=None)


def decision_from_json(obj: Any, *, where: str = "") -> Decision:
    """A `Decision` from its JSON form, validated."""
    return _from_json(Decision, obj, where, optional_id=None)


_EVENT_FIELDS: Final = frozenset(spec[0] for spec in _SPECS[InteractionEvent])
_CHANNEL_SET: Final = frozenset(CHANNELS)
_DATES: dict[str, date] = {}  # "YYYY-MM-DD" -> date


def _fast_date(value: Any) -> date | bool | None:
    """A JSON date value: None, a date, or False when the full parser must judge it."""
    if value is None:
        return None
    if type(value) is not str:
        return False
    day = _DATES.get(value)
    if day is None:
        if not _DATE_RE.fullmatch(value):
            return False
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return False
        if len(_DATES) >= 65_536:
            _DATES.clear()
        _DATES[value] = day
    return day


def _event_fast(obj: dict[str, Any]) -> InteractionEvent | None:
    """`event_from_json(obj)` for a well-formed object with an event_id, else None.

    Accepts exactly what the general path accepts and builds the same event; anything
    unusual (a missing id, a wrong type, a non-canonical timestamp) returns None so the
    general path decides, with its error messages.
    """
    if not _EVENT_FIELDS.issuperset(obj):
        return None
    get = obj.get
    event_id = get("event_id")
    customer_id = get("customer_id")
    channel = get("channel")
    event_type = get("type")
    occurred = get("occurred_at")
    if not (
        type(event_id) is str
        and 0 < len(event_id) <= MAX_IDENTIFIER_CHARS
        and type(customer_id) is str
        and 0 < len(customer_id) <= MAX_IDENTIFIER_CHARS
        and type(channel) is str
        and channel in _CHANNEL_SET
        and type(event_type) is str
        and 0 < len(event_type) <= MAX_IDENTIFIER_CHARS
        and type(occurred) is str
    ):
        return None
    try:
        moment = datetime.fromisoformat(occurred)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    occurred_at = (moment - _EPOCH) // _ONE_MS
    if not _TS_MIN <= occurred_at <= _TS_MAX:
        return None
    source = get("source")
    if source is None:
        source = ""
    elif type(source) is not str or len(source) > MAX_IDENTIFIER_CHARS:
        return None
    product = get("product")
    reference = get("reference")
    currency = get("currency")
    text = get("text")
    for value in (product, reference, currency):
        if value is not None and (type(value) is not str or len(value) > MAX_IDENTIFIER_CHARS):
            return None
    if text is not None and type(text) is not str:
        return None
    amount = get("amount")
    if amount is not None:
        if type(amount) is int:
            amount = float(amount)  # any int orjson reads fits a double
        elif type(amount) is not float or amount - amount != 0.0:  # NaN or infinite
            return None
    due_date = _fast_date(get("due_date"))
    customer_since = _fast_date(get("customer_since"))
    if due_date is False or customer_since is False:
        return None
    attributes = get("attributes")
    if attributes is None:
        attributes = {}
    elif type(attributes) is dict:
        for key, item in attributes.items():
            if type(item) is not str or len(key) > MAX_IDENTIFIER_CHARS:
                return None
        attributes = dict(attributes)
    else:
        return None
    return InteractionEvent(
        event_id,
        customer_id,
        channel,
        event_type,
        occurred_at,
        source,
        product,
        reference,
        amount,
        currency,
        due_date,  # type: ignore[arg-type]
        customer_since,  # type: ignore[arg-type]
        text,
        attributes,
    )


def read_events_jsonl(path: Path | str) -> Iterator[InteractionEvent]:
    """The events of a JSON-lines file, in file order; blank lines are skipped.

    The first bad line (not UTF-8, not JSON, not an object, missing or wrong
    field) raises one `SchemaValidationError` with ``where = "<path>:<line>"``.
    Well-formed lines take a fast path (orjson and `_event_fast`); any other line
    is read by the general path, which gives the same events and the errors.
    """
    loads = orjson.loads
    with open(path, "rb") as lines:
        for lineno, raw in enumerate(lines, start=1):
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is dict:
                event = _event_fast(obj)
                if event is not None:
                    yield event
                    continue
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SchemaValidationError(
                    "<line>", f"not UTF-8 (byte {exc.start + 1})", where
                ) from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SchemaValidationError(
                    "<line>", f"not valid JSON: {exc.msg} at column {exc.colno}", where
                ) from None
            yield event_from_json(obj, where=where)


def _plainly_valid_event(e: Any) -> bool:
    """True when every check of `validate` surely passes (exact types, the common case);
    False means the checks must run (and may still pass, e.g. an int amount)."""
    if type(e) is not InteractionEvent:
        return False
    amount, attributes = e.amount, e.attributes
    if not (
        type(e.event_id) is str
        and 0 < len(e.event_id) <= MAX_IDENTIFIER_CHARS
        and type(e.customer_id) is str
        and 0 < len(e.customer_id) <= MAX_IDENTIFIER_CHARS
        and type(e.channel) is str
        and e.channel in _CHANNEL_SET
        and type(e.type) is str
        and 0 < len(e.type) <= MAX_IDENTIFIER_CHARS
        and type(e.occurred_at) is int
        and _TS_MIN <= e.occurred_at <= _TS_MAX
        and type(e.source) is str
        and len(e.source) <= MAX_IDENTIFIER_CHARS
        and (
            e.product is None or (type(e.product) is str and len(e.product) <= MAX_IDENTIFIER_CHARS)
        )
        and (
            e.reference is None
            or (type(e.reference) is str and len(e.reference) <= MAX_IDENTIFIER_CHARS)
        )
        and (
            e.currency is None
            or (type(e.currency) is str and len(e.currency) <= MAX_IDENTIFIER_CHARS)
        )
        and (e.text is None or type(e.text) is str)
        and (amount is None or (type(amount) is float and amount - amount == 0.0))
        and (e.due_date is None or type(e.due_date) is date)
        and (e.customer_since is None or type(e.customer_since) is date)
        and type(attributes) is dict
    ):
        return False
    for key, value in attributes.items():
        if type(key) is not str or type(value) is not str or len(key) > MAX_IDENTIFIER_CHARS:
            return False
    return True


# --------------------------------------------------------------------------- Avro fast reader


class _Unusual(Exception):
    """The generated reader met something it leaves to fastavro (which then decides)."""


_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()

_VARINT: Final = """\
{i}b = data[pos]
{i}pos += 1
{i}if b < 128:
{i}    n = b
{i}else:
{i}    n = b & 127
{i}    shift = 7
{i}    while True:
{i}        b = data[pos]
{i}        pos += 1
{i}        n |= (b & 127) << shift
{i}        if b < 128:
{i}            break
{i}        shift += 7
{i}        if shift > 63:
{i}            raise _Unusual
{i}    if n >> 64:
{i}        raise _Unusual
{i}n = (n >> 1) ^ -(n & 1)
"""


def _unrolled_varint(indent: str) -> str:
    """A zigzag varint into `n`, one branch per byte (timestamps take six bytes)."""
    lines = [
        f"{indent}b = data[pos]\n",
        f"{indent}if b < 128:\n{indent}    n = b\n{indent}    pos += 1\n",
        f"{indent}else:\n",
    ]
    inner = indent + "    "
    lines.append(f"{inner}n = b & 127\n")
    for k in range(1, 10):
        lines.append(f"{inner}b = data[pos + {k}]\n")
        if k < 9:
            lines.append(f"{inner}if b < 128:\n{inner}    n |= b << {7 * k}\n")
            lines.append(f"{inner}    pos += {k + 1}\n{inner}else:\n")
            inner += "    "
            lines.append(f"{inner}n |= (b & 127) << {7 * k}\n")
        else:  # the tenth byte may only hold bit 63
            lines.append(f"{inner}if b > 1:\n{inner}    raise _Unusual\n")
            lines.append(f"{inner}n |= b << 63\n{inner}pos += 10\n")
    lines.append(f"{indent}n = (n >> 1) ^ -(n & 1)\n")
    return "".join(lines)


def _string_code(target: str, indent: str) -> list[str]:
    """A string into `target`; lengths below 64 (one even byte) skip the varint loop.

    A length past the end of `data` is not checked here: the slice comes out short,
    `pos` ends up past `size`, and the next read (every read starts by indexing
    `data[pos]` or unpacking at `pos`) or the final ``pos != size`` check raises.
    """
    return [
        f"{indent}n = data[pos]\n",
        f"{indent}if n & 129:\n",  # several bytes, or a negative length
        _VARINT.format(i=indent + "    "),
        f"{indent}    if n < 0:\n{indent}        raise _Unusual\n",
        f"{indent}    end = pos + n\n",
        f"{indent}else:\n{indent}    pos += 1\n{indent}    end = pos + (n >> 1)\n",
        f"{indent}{target} = data[pos:end].decode()\n{indent}pos = end\n",
    ]


def _read_code(kind: Any, target: str, indent: str, names: dict[str, Any]) -> list[str] | None:
    """Python lines reading one value of Avro type `kind` into `target` (None: unsupported).

    Only canonical encodings take the short branches (a union index or an enum
    symbol in one byte); anything else raises `_Unusual` and fastavro decides.
    """
    if isinstance(kind, str):
        kind = {"type": kind}
    if isinstance(kind, list):
        if len(kind) != 2 or kind[0] != "null":
            return None
        inner = _read_code(kind[1], target, indent + "    ", names)
        if inner is None:
            return None
        return [
            f"{indent}b = data[pos]\n{indent}pos += 1\n",
            f"{indent}if b == 0:\n{indent}    {target} = None\n{indent}elif b == 2:\n",
            *inner,
            f"{indent}else:\n{indent}    raise _Unusual\n",
        ]
    if not isinstance(kind, dict):
        return None
    avro_type = kind.get("type")
    logical = kind.get("logicalType")
    if avro_type == "string":
        return _string_code(target, indent)
    if avro_type in ("long", "int") and logical in (None, "timestamp-millis"):
        if logical is not None:
            return None  # the reader schema has these stripped; anything else is unusual
        return [_unrolled_varint(indent), f"{indent}{target} = n\n"]
    if avro_type == "int" and logical == "date":
        return [
            _unrolled_varint(indent),
            f"{indent}{target} = _fromordinal(n + {_EPOCH_ORDINAL})\n",
        ]
    if avro_type == "double" and logical is None:
        # unpack_from raises past the end of data
        return [f"{indent}{target} = _unpack_double(data, pos)[0]\n{indent}pos += 8\n"]
    if avro_type == "enum":
        symbols = f"_symbols_{len(names)}"
        # keyed by the one canonical byte of each index (zigzag 2 * i); a KeyError is unusual
        names[symbols] = {2 * i: symbol for i, symbol in enumerate(kind["symbols"]) if i < 64}
        return [f"{indent}{target} = {symbols}[data[pos]]\n{indent}pos += 1\n"]
    if avro_type in ("map", "array"):
        item = _read_code(
            kind["values" if avro_type == "map" else "items"],
            "item",
            indent + "            ",
            names,
        )
        if item is None:
            return None
        key = _string_code("key", indent + "            ") if avro_type == "map" else []
        store = "found[key] = item" if avro_type == "map" else "found.append(item)"
        empty = "{}" if avro_type == "map" else "[]"
        deeper = indent + "    "
        items = f"items_{len(indent)}"  # one per nesting depth
        return [
            # an empty map or array is one zero byte
            f"{indent}if data[pos] == 0:\n{indent}    pos += 1\n{indent}    {target} = {empty}\n",
            f"{indent}else:\n",
            f"{deeper}found = {empty}\n",
            f"{deeper}while True:\n",
            _VARINT.format(i=deeper + "    "),
            f"{deeper}    if n == 0:\n{deeper}        break\n",
            f"{deeper}    if n < 0:\n{deeper}        n = -n\n",
            f"{deeper}        count = n\n",
            _VARINT.format(i=deeper + "        "),
            f"{deeper}        n = count\n",
            # the count apart from `n`, which the items reuse (compiled with mypyc, a
            # `range(n)` loop reads its bound anew on every iteration)
            f"{deeper}    {items} = n\n",
            f"{deeper}    for _ in range({items}):\n",
            *key,
            *item,
            f"{deeper}        {store}\n",
            f"{deeper}{target} = found\n",
        ]
    return None


def _fields_code(schema: dict[str, Any], names: dict[str, Any]) -> list[str] | None:
    """The body reading every field of a record schema into v0, v1, ... (None: unsupported)."""
    lines = ["    size = len(data)\n"]
    for index, fld in enumerate(schema["fields"]):
        code = _read_code(fld["type"], f"v{index}", "    ", names)
        if code is None:
            return None
        lines += code
    lines.append("    if pos != size:\n        raise _Unusual\n")
    return lines


def _reader_names() -> dict[str, Any]:
    return {
        "_Unusual": _Unusual,
        "_fromordinal": date.fromordinal,
        "_unpack_double": struct.Struct("<d").unpack_from,
    }


def _compile_reader(schema: dict[str, Any]) -> Callable[[bytes, int], tuple[Any, ...]] | None:
    """A reader generated for one record schema: (data, pos) -> field values in schema order.

    It must end exactly at the end of `data`. Anything unusual (a bad union or enum
    index, a truncated or oversized value, an unsupported type) raises, and the caller
    lets fastavro decide instead, so results and errors stay fastavro's.
    """
    names = _reader_names()
    body = _fields_code(schema, names)
    if body is None:
        return None
    targets = ", ".join(f"v{i}" for i in range(len(schema["fields"])))
    source = ["def read(data, pos):\n", *body, f"    return ({targets},)\n"]
    exec(compile("".join(source), f"<avro reader {schema['name']}>", "exec"), names)
    return cast(Callable[[bytes, int], tuple[Any, ...]], names["read"])


def _check_code(check: Check, value: str, names: dict[str, Any]) -> str:
    """A line raising `_Unusual` when `value` fails `check` (Avro already guarantees its type)."""
    if check is _non_empty:
        return f"    if not {value}:\n        raise _Unusual\n"
    limit = MAX_IDENTIFIER_CHARS
    if check is _identifier:
        return f"    if not {value} or len({value}) > {limit}:\n        raise _Unusual\n"
    if check is _short_text:
        return f"    if len({value}) > {limit}:\n        raise _Unusual\n"
    if check is _optional_short_text:
        return f"    if {value} is not None and len({value}) > {limit}:\n        raise _Unusual\n"
    if check is _attribute_map:  # Avro guarantees a map of strings: only the key lengths
        return (
            f"    for key in {value}:\n        if len(key) > {limit}:\n            raise _Unusual\n"
        )
    if check is _timestamp:
        return f"    if not {_TS_MIN} <= {value} <= {_TS_MAX}:\n        raise _Unusual\n"
    if check is _optional_timestamp:
        return (
            f"    if {value} is not None and not {_TS_MIN} <= {value} <= {_TS_MAX}:\n"
            "        raise _Unusual\n"
        )
    if check is _optional_double:  # NaN and infinities give NaN here
        return f"    if {value} is not None and {value} - {value} != 0.0:\n        raise _Unusual\n"
    name = f"_check_{len(names)}"
    names[name] = check
    return f"    if {name}({value}) is not None:\n        raise _Unusual\n"


def _decoder_source(
    schema: dict[str, Any],
    header: bytes,
    checks: tuple[tuple[int, Check], ...],
    names: dict[str, Any],
) -> str | None:
    """The source of `decode(data)` for one record schema (None: unsupported); the names
    it reads (besides `_header` and `_Record`) are added to `names`."""
    body = _fields_code(schema, names)
    if body is None:
        return None
    count = len(schema["fields"])
    source = [
        "def decode(data):\n",
        f"    if data[:{len(header)}] != _header:\n        raise _Unusual\n",
        f"    pos = {len(header)}\n",
    ]
    source += body
    source += [_check_code(check, f"v{index}", names) for index, check in checks]
    source.append(f"    return _Record({', '.join(f'v{i}' for i in range(count))})\n")
    return "".join(source)


def _decoder_parts(
    schema: dict[str, Any],
    header: bytes,
    record_type: type[Any],
    checks: tuple[tuple[int, Check], ...],
) -> tuple[str, dict[str, Any]] | None:
    """The decoder's source and the names it reads (None: unsupported schema)."""
    names = _reader_names()
    names["_header"] = header
    names["_Record"] = record_type
    source = _decoder_source(schema, header, checks, names)
    return None if source is None else (source, names)


def _compile_decoder(
    schema: dict[str, Any],
    header: bytes,
    record_type: type[R],
    checks: tuple[tuple[int, Check], ...],
) -> Callable[[bytes], R] | None:
    """A decoder generated for one record schema: single-object bytes -> a checked record.

    The fast path of `AvroCodec.decode`: it reads like `_compile_reader`, runs the
    checks Avro does not already guarantee (`checks`: field index and check) inline
    and builds the record positionally. Anything unusual or invalid raises, and the
    caller takes the general path, which gives the result or the error with its name.
    The same source compiled with mypyc (`schemas/_native/`, built by setup.py) runs
    instead when it was generated from this very source (~3x faster).
    """
    parts = _decoder_parts(schema, header, record_type, checks)
    if parts is None:
        return None
    source, names = parts
    native = _native_decoder(schema["name"], source, names)
    if native is not None:
        return cast(Callable[[bytes], R], native)
    exec(compile(source, f"<avro decoder {schema['name']}>", "exec"), names)
    return cast(Callable[[bytes], R], names["decode"])


#: Where the generated decoder modules live (compiled with mypyc by setup.py).
NATIVE_PACKAGE: Final = "schemas._native"


def _native_module_name(record_name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", record_name).lower()


def _source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def native_module_source(source: str, names: dict[str, Any]) -> str:
    """A module holding a generated decoder, for mypyc: its globals are bound at import
    by the codec; `SOURCE_DIGEST` says which source it was generated from."""
    bound = sorted(name for name in names if name != "__builtins__")
    # Field values and containers are reused across types (a list, then a map): typed Any;
    # positions, lengths and bytes stay native ints.
    values = sorted(set(re.findall(r"\b(v\d+|found|item|key) = ", source)))
    declared = "".join(f"    {name}: Any\n" for name in values)
    lines = [
        '"""Generated by schemas.codec (python -m schemas.codec --write-native): do not edit."""\n',
        "\n",
        "from typing import Any\n",
        "\n",
        f'SOURCE_DIGEST = "{_source_digest(source)}"\n',
        *[f"{name}: Any = None\n" for name in bound],
        "\n",
        "\n",
        source.replace("def decode(data):", f"def decode(data: bytes) -> Any:\n{declared}", 1),
    ]
    return "".join(lines)


def _native_decoder(record_name: str, source: str, names: dict[str, Any]) -> Any:
    """The native module's `decode` when it was generated from `source`, else None."""
    module_name = f"{NATIVE_PACKAGE}.{_native_module_name(record_name)}"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    if getattr(module, "SOURCE_DIGEST", None) != _source_digest(source):
        return None  # generated from another schema or generator: the exec'd source runs
    for name, value in names.items():
        if name != "__builtins__":
            setattr(module, name, value)
    return module.decode


def native_modules() -> dict[str, str]:
    """File name -> source of every generated decoder module (what `--write-native` writes)."""
    out: dict[str, str] = {}
    codecs: tuple[AvroCodec[Any], ...] = (
        AvroCodec(InteractionEvent),
        AvroCodec(ActionEvent),
        AvroCodec(Decision),
    )
    for codec in codecs:
        schema = codec._read_schema_json
        parts = _decoder_parts(schema, codec._header, codec.record_type, codec._checks_by_index)
        if parts is not None:
            out[f"{_native_module_name(schema['name'])}.py"] = native_module_source(*parts)
    return out


_VARINT_OUT: Final = """\
{i}while n > 127:
{i}    out.append((n & 127) | 128)
{i}    n >>= 7
{i}out.append(n)
"""


def _zigzag_code(value: str, indent: str, low: int = -(2**63), high: int = 2**63 - 1) -> list[str]:
    """Lines appending the zigzag varint of int `value` (range-checked) to `out`."""
    return [
        f"{indent}if not {low} <= {value} <= {high}:\n{indent}    raise _Unusual\n",
        f"{indent}n = ({value} << 1) ^ ({value} >> 63)\n",
        _VARINT_OUT.format(i=indent),
    ]


def _write_code(kind: Any, value: str, indent: str, names: dict[str, Any]) -> list[str] | None:
    """Python lines appending the Avro encoding of `value` to `out` (None: unsupported).

    Values must have exactly the expected type; anything else raises `_Unusual`.
    """
    if isinstance(kind, str):
        kind = {"type": kind}
    if isinstance(kind, list):
        if len(kind) != 2 or kind[0] != "null":
            return None
        inner = _write_code(kind[1], value, indent + "    ", names)
        if inner is None:
            return None
        return [
            f"{indent}if {value} is None:\n{indent}    out.append(0)\n{indent}else:\n",
            f"{indent}    out.append(2)\n",
            *inner,
        ]
    if not isinstance(kind, dict):
        return None
    avro_type, logical = kind.get("type"), kind.get("logicalType")
    if avro_type == "string":
        return [
            f"{indent}if type({value}) is not str:\n{indent}    raise _Unusual\n",
            f"{indent}b = {value}.encode()\n{indent}m = len(b)\n",
            f"{indent}if m < 64:\n{indent}    out.append(m << 1)\n{indent}else:\n",
            f"{indent}    n = m << 1\n",
            _VARINT_OUT.format(i=indent + "    "),
            f"{indent}out += b\n",
        ]
    if avro_type in ("long", "int") and logical in (None, "timestamp-millis"):
        low, high = (-(2**31), 2**31 - 1) if avro_type == "int" else (-(2**63), 2**63 - 1)
        return [
            f"{indent}m = {value}\n",
            f"{indent}if type(m) is not int or not {low} <= m <= {high}:\n",
            f"{indent}    raise _Unusual\n",
            f"{indent}n = (m << 1) ^ (m >> 63)\n",
            _VARINT_OUT.format(i=indent),
        ]
    if avro_type == "int" and logical == "date":
        return [
            f"{indent}if type({value}) is not _date:\n{indent}    raise _Unusual\n",
            f"{indent}m = {value}.toordinal() - {_EPOCH_ORDINAL}\n",
            f"{indent}n = (m << 1) ^ (m >> 63)\n",
            _VARINT_OUT.format(i=indent),
        ]
    if avro_type == "double" and logical is None:
        return [
            f"{indent}if type({value}) is not float:\n{indent}    raise _Unusual\n",
            f"{indent}out += _pack_double({value})\n",
        ]
    if avro_type == "enum":
        index = f"_index_{len(names)}"
        symbols = kind["symbols"]
        if len(symbols) <= 64:  # every index is one varint byte: 2 * i
            names[index] = {symbol: 2 * i for i, symbol in enumerate(symbols)}
            return [f"{indent}out.append({index}[{value}])\n"]
        names[index] = {symbol: i for i, symbol in enumerate(symbols)}
        return [f"{indent}m = {index}[{value}]\n", *_zigzag_code("m", indent)]
    if avro_type in ("map", "array"):
        container = "dict" if avro_type == "map" else "list"
        item = _write_code(
            kind["values" if avro_type == "map" else "items"], "item", indent + "        ", names
        )
        if item is None:
            return None
        loop = "for key, item in c.items():" if avro_type == "map" else "for item in c:"
        key = _write_code("string", "key", indent + "        ", names) if avro_type == "map" else []
        assert key is not None
        return [
            f"{indent}c = {value}\n",
            f"{indent}if type(c) is not {container}:\n{indent}    raise _Unusual\n",
            f"{indent}if c:\n{indent}    n = len(c) << 1\n",
            _VARINT_OUT.format(i=indent + "    "),
            f"{indent}    {loop}\n",
            *key,
            *item,
            f"{indent}out.append(0)\n",
        ]
    return None


def _compile_writer(
    schema: dict[str, Any], header: bytes, checks: tuple[tuple[int, Check], ...] = ()
) -> Callable[..., bytes] | None:
    """A writer generated for one record schema: field values in schema order -> the
    single-object bytes (header + body), exactly what fastavro writes.

    Anything unusual (a value of another type, a number out of range, an unknown
    enum symbol) raises, and the caller lets fastavro write (or refuse) instead.
    With `checks` (field index and check), it first runs the checks of `validate`
    that exact types do not already imply, and raises for a record that fails one.
    """
    names: dict[str, Any] = {
        "_Unusual": _Unusual,
        "_date": date,
        "_pack_double": struct.Struct("<d").pack,
        "_header": header,
    }
    fields = schema["fields"]
    args = ", ".join(f"v{i}" for i in range(len(fields)))
    lines = [f"def write({args}):\n"]
    lines += [_check_code(check, f"v{index}", names) for index, check in checks]
    lines.append("    out = bytearray(_header)\n")
    for index, fld in enumerate(fields):
        code = _write_code(fld["type"], f"v{index}", "    ", names)
        if code is None:
            return None
        lines += code
    lines.append("    return bytes(out)\n")
    exec(compile("".join(lines), f"<avro writer {schema['name']}>", "exec"), names)
    return cast(Callable[..., bytes], names["write"])


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
        self._read_schema_json = _strip_timestamp_logical_types(schema)
        self._read_schema = parse_schema(self._read_schema_json)
        self.fingerprint = schema_fingerprint(record_type)
        self._header = SINGLE_OBJECT_MAGIC + self.fingerprint
        self._checks = _CHECKS[record_type]
        self._decoded_checks = _DECODED_CHECKS[record_type]
        self._timestamp_fields = tuple(
            name for name, _, kind, _ in _SPECS[record_type] if kind in (_TS, _OPT_TS)
        )
        self._avro_names = tuple(f["name"] for f in schema["fields"])
        self._fast_reader = _compile_reader(self._read_schema_json)
        index_of = {name: i for i, name in enumerate(self._avro_names)}
        self._decoded_checks_at = tuple(
            (index_of[name], name, check) for name, check in self._decoded_checks
        )
        self._checks_by_index = tuple((index, check) for index, _, check in self._decoded_checks_at)
        writable = self._avro_names == self._field_names
        self._fast_writer = _compile_writer(schema, self._header) if writable else None
        # What exact types leave open is what a decoded record leaves open: the same checks.
        self._checked_writer = (
            _compile_writer(
                schema,
                self._header,
                self._checks_by_index,
            )
            if writable
            else None
        )
        self._fast_decoder: Callable[[bytes], R] | None = (
            _compile_decoder(
                self._read_schema_json,
                self._header,
                record_type,
                self._checks_by_index,
            )
            if self._positional
            else None
        )
        #: `decode` for hot loops, without its checks for other wire formats: the generated
        #: decoder when there is one. It raises (any exception) for whatever it does not take
        #: (another framing, unusual or invalid records): call `decode` then for the verdict.
        self.fast_decode: Callable[[bytes], R] = self._fast_decoder or self.decode
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

    # -- records <-> Avro dicts

    def to_avro_dict(self, record: R) -> dict[str, Any]:
        """The record as the dict fastavro writes (no copies of nested values)."""
        return dict(zip(self._field_names, self._get_fields(record), strict=True))

    def _validate(self, record: Any) -> None:
        if self.record_type is InteractionEvent and _plainly_valid_event(record):
            return
        if type(record) is not self.record_type:
            raise SchemaValidationError(
                "<record>", f"expected {self.record_type.__name__}, got {type(record).__name__}"
            )
        for name, check in self._checks:
            problem = check(getattr(record, name))
            if problem is not None:
                raise _field_error(name, problem)

    # -- encode

    def encode(self, record: R, *, validate: bool = True) -> bytes:
        """Avro bytes of `record`: single-object encoding, or Confluent framing with a registry.

        Raises `SchemaValidationError` (naming the field) for an invalid record.
        """
        if self._serializer is None and type(record) is self.record_type:
            writer = self._checked_writer if validate else self._fast_writer
            if writer is not None:
                try:
                    return writer(*self._get_fields(record))
                except Exception:  # unusual or invalid: validate names the problem, or
                    pass  # fastavro writes (or refuses) what the writer left
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
                return self._fast_decoder(data)
            except Exception:  # unusual or invalid: the general path gives the record or error
                pass
        if data[:10] == self._header:
            values = self._read_fast(data)
            if values is not None:
                if validate:
                    for index, name, check in self._decoded_checks_at:
                        problem = check(values[index])
                        if problem is not None:
                            raise InvalidRecordError(_field_error(name, problem))
                if self._positional:
                    return self.record_type(*values)
                return self.record_type(**dict(zip(self._avro_names, values, strict=True)))
        fields = self.decode_dict(data)
        if validate:
            for name, check in self._decoded_checks:
                problem = check(fields[name])
                if problem is not None:
                    raise InvalidRecordError(_field_error(name, problem))
        if self._positional:
            return self.record_type(*fields.values())
        return self.record_type(**fields)

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
                value[name] = (moment - _EPOCH) // _ONE_MS
        return value

    def _unknown_fingerprint(self, fingerprint: bytes) -> str:
        for other in _SCHEMA_FILES:
            if other is not self.record_type and schema_fingerprint(other) == fingerprint:
                return f"message holds a {other.__name__}, expected {self.record_type.__name__}"
        return (
            f"unknown schema fingerprint {fingerprint.hex()} (expected {self.fingerprint.hex()} "
            f"for {self.name})"
        )


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


def write_native_modules() -> list[Path]:
    """Write the generated decoder modules into `schemas/_native/` (commit them; setup.py
    compiles them with mypyc). Returns the files written."""
    directory = Path(__file__).with_name("_native")
    written = []
    for file_name, source in native_modules().items():
        path = directory / file_name
        path.write_text(source)
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - python -m schemas.codec --write-native
    import sys

    if sys.argv[1:] != ["--write-native"]:
        sys.exit("usage: python -m schemas.codec --write-native")
    for path in write_native_modules():
        print(path)

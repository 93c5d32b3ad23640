"""The JSON form of the four records, and JSON-lines files of events.

Files, the HTTP collector and `moments replay` use it (docs/design.md 3.5): the
Avro field names, ISO-8601 timestamps with an offset (written as UTC
``+00:00`` with milliseconds) and ``YYYY-MM-DD`` dates. Reading validates with
the checks of `schemas.validation` and raises `SchemaValidationError` naming
the field (and file:line); writing gives the same bytes for the same record.
The hot paths (replay and backfill output, file replay input) have fast paths
that give exactly what the general paths give. Imports nothing of ours but
`schemas.records`, `schemas.errors` and `schemas.validation`; never logs
record contents.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from schemas.errors import SchemaValidationError
from schemas.records import (
    STATUS_EVENT_TYPES,
    ActionEvent,
    ActionStatus,
    Decision,
    InteractionEvent,
)
from schemas.validation import (
    CHANNEL_SET,
    CONTACT_PREFERENCES_CHANGED,
    EPOCH,
    KIND_LIST,
    KIND_MAP,
    KIND_OPT_DATE,
    KIND_OPT_DOUBLE,
    KIND_OPT_TS,
    KIND_TS,
    MAX_IDENTIFIER_CHARS,
    ONE_MS,
    SPECS,
    TS_MAX,
    TS_MIN,
    R,
    Record,
    describe,
    event_problem,
    field_error,
    is_int,
    optional_double,
)

__all__ = [
    "action_from_json",
    "action_status_from_json",
    "append_json_lines",
    "decision_from_json",
    "event_content_id",
    "event_from_json",
    "event_from_parsed",
    "event_of_line",
    "occurred_ms",
    "read_events_jsonl",
    "to_json_bytes",
    "to_json_dict",
    "to_json_line",
    "to_json_lines",
]


def _ms_to_iso(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def _iso_to_ms(name: str, value: Any, where: str) -> int:
    example = "e.g. 2026-01-02T03:04:05.000+00:00"
    if not isinstance(value, str):
        raise SchemaValidationError(
            name,
            f"expected an ISO-8601 timestamp with offset ({example}), got {describe(value)}",
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
    return (moment - EPOCH) // ONE_MS


_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_date(name: str, value: Any, where: str) -> date:
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise SchemaValidationError(name, f"expected a date YYYY-MM-DD, got {describe(value)}", where)


def to_json_dict(record: Record) -> dict[str, Any]:
    """The JSON form: schema field order, ISO-8601 UTC timestamps, YYYY-MM-DD dates, sorted maps."""
    out: dict[str, Any] = {}
    for name, _, kind, _ in SPECS[type(record)]:
        value = getattr(record, name)
        if value is None:
            out[name] = None
        elif kind in (KIND_TS, KIND_OPT_TS):
            out[name] = _ms_to_iso(value)
        elif kind == KIND_OPT_DATE:
            out[name] = value.isoformat()
        elif kind == KIND_MAP:
            out[name] = {k: value[k] for k in sorted(value)}
        elif kind == KIND_LIST:
            out[name] = list(value)
        elif kind == KIND_OPT_DOUBLE:
            out[name] = float(value)
        else:
            out[name] = value
    return out


def to_json_line(record: Record) -> str:
    """One compact JSON line (no newline); the same record always gives the same bytes."""
    return json.dumps(to_json_dict(record), ensure_ascii=False, separators=(",", ":"))


# Day number -> "YYYY-MM-DDT"; the time of day comes from three tables.
_ISO_DAYS: dict[int, str] = {}
_ISO_HOURS_MINUTES: Final = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_ISO_SECONDS: Final = tuple(f"{second:02d}." for second in range(60))
_ISO_MILLIS: Final = tuple(f"{milli:03d}+00:00" for milli in range(1000))


def _fast_ms_to_iso(ms: int) -> str:
    """`_ms_to_iso` without building a datetime (same text, same OverflowError)."""
    # // and % rather than divmod: compiled, these are machine arithmetic
    day = ms // 86_400_000
    rest = ms % 86_400_000
    head = _ISO_DAYS.get(day)
    if head is None:
        if not TS_MIN <= ms <= TS_MAX:  # whole days: a valid day holds only valid ms
            return _ms_to_iso(ms)  # raises the same OverflowError the slow path would
        if len(_ISO_DAYS) >= 65_536:
            _ISO_DAYS.clear()
        head = _ISO_DAYS[day] = _ms_to_iso(day * 86_400_000)[:11]
    minute = rest // 60_000
    rest = rest % 60_000
    return (
        f"{head}{_ISO_HOURS_MINUTES[minute]}{_ISO_SECONDS[rest // 1000]}{_ISO_MILLIS[rest % 1000]}"
    )


_APPEND_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_SORT_KEYS: Final = orjson.OPT_SORT_KEYS
_Fragment: Final = orjson.Fragment


def _action_json(a: ActionEvent) -> dict[str, Any] | None:
    """The JSON form of an engine-made action for orjson (details pre-serialized with sorted
    keys: orjson sorts by UTF-8 bytes, which is code point order), or None when a scalar
    field has an unexpected type and the general path must write it."""
    rule_version, priority, triggered_at = a.rule_version, a.priority, a.triggered_at
    due_by, evidence, details = a.due_by, a.evidence, a.details
    if not (
        type(rule_version) is int
        and type(priority) is int
        and type(triggered_at) is int
        and (due_by is None or type(due_by) is int)
        and type(evidence) is list
        and type(details) is dict
    ):
        return None
    return {
        "action_id": a.action_id,
        "customer_id": a.customer_id,
        "rule": a.rule,
        "action": a.action,
        "rule_version": rule_version,
        "destination": a.destination,
        "priority": priority,
        "reason": a.reason,
        "evidence": evidence,
        "channel_hint": a.channel_hint,
        "triggered_at": _fast_ms_to_iso(triggered_at),
        "due_by": None if due_by is None else _fast_ms_to_iso(due_by),
        "details": _Fragment(orjson.dumps(details, option=_SORT_KEYS)),
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
    lines = bytearray()
    append_json_lines(lines, records)
    return bytes(lines)


def append_json_lines(
    lines: bytearray, records: Iterable[Record], ends: list[int] | None = None, offset: int = 0
) -> None:
    """`to_json_lines(records)` appended to `lines`; with `ends`, `offset` + the length of
    `lines` after each record appended to it (where each record's line ends, in a file whose
    first `offset` bytes were written before `lines`).

    Each line is copied into the one buffer at once and its own bytes freed: orjson
    allocates every result with room to spare and shrinks it, and keeping thousands of
    those alive until a join costs several times the encoding itself."""
    dumps = orjson.dumps
    for record in records:
        try:
            if isinstance(record, ActionEvent):
                obj = _action_json(record)
            elif isinstance(record, Decision):
                obj = _decision_json(record)
            else:
                obj = None
        except TypeError:
            obj = None
        encoded = None
        if obj is not None:
            try:
                encoded = dumps(obj, option=_APPEND_NEWLINE)
            except TypeError:  # what orjson refuses takes the general path (see above)
                encoded = None
        if encoded is None:
            encoded = _generic_json_bytes(record) + b"\n"
        lines += encoded
        if ends is not None:
            ends.append(offset + len(lines))


def _generic_json_bytes(record: Record) -> bytes:
    return to_json_line(record).encode("utf-8")


def _from_json(record_type: type[R], obj: Any, where: str, optional_id: str | None) -> R:
    if not isinstance(obj, dict):
        raise SchemaValidationError(
            "<record>", f"expected a JSON object, got {type(obj).__name__}", where
        )
    specs = SPECS[record_type]
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
            if kind in (KIND_MAP, KIND_LIST):
                continue  # dataclass default
            # an optional field left out reads as null, like a written null
            values[name] = "" if name == "source" else None
            continue
        value = obj[name]
        if kind in (KIND_TS, KIND_OPT_TS):
            value = _iso_to_ms(name, value, where)
        elif kind == KIND_OPT_DATE:
            value = _parse_date(name, value, where)
        elif kind == KIND_OPT_DOUBLE and is_int(value) and not optional_double(value):
            value = float(value)
        elif kind == KIND_MAP and isinstance(value, dict):
            value = dict(value)
        elif kind == KIND_LIST and isinstance(value, list):
            value = list(value)
        problem = check(value)
        if problem is not None:
            raise field_error(name, problem, where)
        values[name] = value
    if optional_id is not None and optional_id not in values:
        values[optional_id] = "pending"
    return record_type(**values)


def event_content_id(event: InteractionEvent) -> str:
    """A deterministic event id from the event's content (everything but event_id): the id
    of an event sent without one, the same for a file line, the collector and the SDK
    (docs/design.md 3.2), so a client's retry is a duplicate. Content is compared in the
    JSON form, so two spellings of one time give one id."""
    content = to_json_dict(event)
    del content["event_id"]
    canonical = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return "h-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def event_from_json(obj: Any, *, where: str = "") -> InteractionEvent:
    """An `InteractionEvent` from its JSON form, validated; without an event_id it gets
    `event_content_id` (derived from its content)."""
    event = _from_json(InteractionEvent, obj, where, optional_id="event_id")
    broken = event_problem(event)
    if broken is not None:
        raise SchemaValidationError(broken[0], broken[1], where)
    if isinstance(obj, dict) and obj.get("event_id") is None:
        event = replace(event, event_id=event_content_id(event))
    return event


def action_from_json(obj: Any, *, where: str = "") -> ActionEvent:
    """An `ActionEvent` from its JSON form (one flat object), validated."""
    return _from_json(ActionEvent, obj, where, optional_id=None)


def decision_from_json(obj: Any, *, where: str = "") -> Decision:
    """A `Decision` from its JSON form, validated."""
    return _from_json(Decision, obj, where, optional_id=None)


def action_status_from_json(obj: Any, *, where: str = "") -> ActionStatus:
    """An `ActionStatus` from its JSON form, validated."""
    return _from_json(ActionStatus, obj, where, optional_id=None)


_STATUS_EVENTS: Final = frozenset(STATUS_EVENT_TYPES)
_EVENT_ORDER: Final = tuple(spec[0] for spec in SPECS[InteractionEvent])
_EVENT_FIELDS: Final = frozenset(_EVENT_ORDER)
_EVENT_FIELD_COUNT: Final = len(_EVENT_ORDER)
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


# "YYYY-MM-DD" -> the epoch milliseconds of its midnight UTC, for the days of times
# written in the JSON form ("2026-01-05T00:10:05.000+00:00"), whose clock part is read
# digit by digit.
_DAY_MS: dict[str, int] = {}
_UTC_TAIL: Final = "+00:00"


def _two_digits(text: str, at: int) -> int:
    """The number the two ASCII digits at `at` write, or -1 where either is no digit."""
    high = ord(text[at]) - 48
    low = ord(text[at + 1]) - 48
    if 0 <= high <= 9 and 0 <= low <= 9:
        return high * 10 + low
    return -1


def _written_form_ms(value: str) -> int | None:
    """`value` as epoch ms when it is a time as the JSON form writes it on a day read before,
    else None. Accepts only what `datetime.fromisoformat` accepts alike."""
    if not (
        len(value) == 29
        and value[10] == "T"
        and value[13] == ":"
        and value[16] == ":"
        and value[19] == "."
        and value[23:] == _UTC_TAIL
    ):
        return None
    day = _DAY_MS.get(value[:10])
    if day is None:
        return None
    hour = _two_digits(value, 11)
    minute = _two_digits(value, 14)
    second = _two_digits(value, 17)
    milli_high = _two_digits(value, 20)
    milli_low = ord(value[22]) - 48
    if not (
        0 <= hour < 24
        and 0 <= minute < 60
        and 0 <= second < 60
        and milli_high >= 0
        and 0 <= milli_low <= 9
    ):
        return None
    return day + ((hour * 60 + minute) * 60 + second) * 1000 + milli_high * 10 + milli_low


def occurred_ms(value: Any) -> int | None:
    """An event's occurred_at JSON value as epoch milliseconds when the fast path accepts it
    (an ISO-8601 string with an offset, in range), else None (the general path judges).

    A time as the JSON form writes it ("2026-01-05T00:10:05.000+00:00") is read digit by
    digit, its day parsed once; any other form by `datetime.fromisoformat`."""
    if type(value) is not str:
        return None
    ms = _written_form_ms(value)
    if ms is not None:
        return ms
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    ms = (moment - EPOCH) // ONE_MS
    if not TS_MIN <= ms <= TS_MAX:
        return None
    if len(value) == 29 and value[23:] == _UTC_TAIL and value[10] == "T":
        # a time in the written form on a new day: the day's midnight for the next ones
        # (any day fromisoformat reads at +00:00 lies wholly in range)
        if len(_DAY_MS) >= 65_536:
            _DAY_MS.clear()
        _DAY_MS[value[:10]] = ms - ms % 86_400_000
    return ms


def event_from_parsed(obj: dict[str, Any]) -> InteractionEvent | None:
    """`event_from_json(obj)` for a well-formed object with an event_id, else None.

    Accepts exactly what the general path accepts and builds the same event; anything
    unusual (a missing id, a wrong type, a non-canonical timestamp) returns None so the
    general path decides, with its error messages. The event holds `obj`'s attributes
    map itself (not a copy): pass a dict nobody else holds, as a freshly parsed line is.
    """
    if len(obj) == _EVENT_FIELD_COUNT:  # every field (as the JSON form writes), or an unknown
        try:
            event_id = obj["event_id"]
            customer_id = obj["customer_id"]
            channel = obj["channel"]
            event_type = obj["type"]
            occurred = obj["occurred_at"]
            source = obj["source"]
            product = obj["product"]
            reference = obj["reference"]
            amount = obj["amount"]
            currency = obj["currency"]
            due_day = obj["due_date"]
            since_day = obj["customer_since"]
            text = obj["text"]
            attributes = obj["attributes"]
        except KeyError:
            return None
    elif _EVENT_FIELDS.issuperset(obj):
        get = obj.get
        event_id = get("event_id")
        customer_id = get("customer_id")
        channel = get("channel")
        event_type = get("type")
        occurred = get("occurred_at")
        source = get("source")
        product = get("product")
        reference = get("reference")
        amount = get("amount")
        currency = get("currency")
        due_day = get("due_date")
        since_day = get("customer_since")
        text = get("text")
        attributes = get("attributes")
    else:
        return None
    if not (
        type(event_id) is str
        and 0 < len(event_id) <= MAX_IDENTIFIER_CHARS
        and type(customer_id) is str
        and 0 < len(customer_id) <= MAX_IDENTIFIER_CHARS
        and type(channel) is str
        and channel in CHANNEL_SET
        and type(event_type) is str
        and 0 < len(event_type) <= MAX_IDENTIFIER_CHARS
    ):
        return None
    occurred_at = occurred_ms(occurred)
    if occurred_at is None:
        return None
    if source is None:
        source = ""
    elif type(source) is not str or len(source) > MAX_IDENTIFIER_CHARS:
        return None
    for value in (product, reference, currency):
        if value is not None and (type(value) is not str or len(value) > MAX_IDENTIFIER_CHARS):
            return None
    if text is not None and type(text) is not str:
        return None
    if amount is not None:
        if type(amount) is int:
            amount = float(amount)  # any int orjson reads fits a double
        elif type(amount) is not float or amount - amount != 0.0:  # NaN or infinite
            return None
    # absent or already seen (the usual cases) without a call; else `_fast_date` judges
    dates = _DATES
    due_date: date | bool | None = None
    if due_day is not None:
        seen = dates.get(due_day) if type(due_day) is str else None
        due_date = seen or _fast_date(due_day)
    customer_since: date | bool | None = None
    if since_day is not None:
        seen = dates.get(since_day) if type(since_day) is str else None
        customer_since = seen or _fast_date(since_day)
    if due_date is False or customer_since is False:
        return None
    if attributes is None:
        attributes = {}
    elif type(attributes) is dict:
        for key, item in attributes.items():
            if type(item) is not str or len(key) > MAX_IDENTIFIER_CHARS:
                return None
    else:
        return None
    event = InteractionEvent(
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
    if (
        customer_since is not None
        or event_type == CONTACT_PREFERENCES_CHANGED
        or event_type in _STATUS_EVENTS
    ) and event_problem(event) is not None:
        return None  # the general path raises the error
    return event


def read_events_jsonl(path: Path | str) -> Iterator[InteractionEvent]:
    """The events of a JSON-lines file, in file order; blank lines are skipped.

    The first bad line (not UTF-8, not JSON, not an object, missing or wrong
    field) raises one `SchemaValidationError` with ``where = "<path>:<line>"``.
    Well-formed lines take a fast path (orjson and `event_from_parsed`); any other line
    is read by `event_of_line`, which gives the same events and the errors.
    """
    loads = orjson.loads
    with open(path, "rb") as lines:
        for lineno, raw in enumerate(lines, start=1):
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is dict:
                event = event_from_parsed(obj)
                if event is not None:
                    yield event
                    continue
            event = event_of_line(raw, lineno, path)
            if event is not None:
                yield event


def event_of_line(raw: bytes, lineno: int, path: Path | str) -> InteractionEvent | None:
    """Line `lineno` of a JSON-lines file of events read by the general path: its event, None
    for a blank line, or the `SchemaValidationError` naming ``<path>:<line>`` and the field."""
    where = f"{path}:{lineno}"
    try:
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaValidationError("<line>", f"not UTF-8 (byte {exc.start + 1})", where) from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaValidationError(
            "<line>", f"not valid JSON: {exc.msg} at column {exc.colno}", where
        ) from None
    return event_from_json(obj, where=where)

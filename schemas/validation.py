"""Validation of the three records: the contract's checks, field by field.

`validate(record)` raises `SchemaValidationError` naming the first field that
breaks the contract (DESIGN.md section 3: types, enum symbols, the 256-character
limits of identifiers, finite doubles, timestamps within years 1..9999).
`_SPECS` lists every record's fields in schema order with their check and kind;
the JSON form, the Avro codec and the generated code all read it, so a rule of
the contract is written once. Imports nothing of ours but `schemas.records` and
`schemas.errors`; never logs record contents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, TypeVar

from schemas.errors import SchemaValidationError
from schemas.records import (
    CHANNELS,
    DESTINATIONS,
    OUTCOMES,
    ActionEvent,
    Decision,
    InteractionEvent,
)

__all__ = ["MAX_IDENTIFIER_CHARS", "Record", "validate"]

Record = InteractionEvent | ActionEvent | Decision
R = TypeVar("R", InteractionEvent, ActionEvent, Decision)


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
_CHANNEL_SET: Final = frozenset(CHANNELS)
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

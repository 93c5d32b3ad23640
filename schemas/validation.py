"""Validation of the four records: the contract's checks, field by field.

`validate(record)` raises `SchemaValidationError` naming the first field that
breaks the contract (docs/design.md 3.3: types, enum symbols, the 256-character
limits of identifiers, finite doubles, timestamps within years 1..9999).
`SPECS` lists every record's fields in schema order with their check and kind;
the JSON form, the Avro codec and the generated code all read it, so a rule of
the contract is written once. The rules that read two fields of an event (a
`customer_since` no later than the day after `occurred_at`, the attributes of a
`contact_preferences_changed`) are `event_problem`, which `validate` runs after
the field checks and every reader of events runs too. Imports nothing of ours
but `schemas.records` and `schemas.errors`; never logs record contents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, TypeVar

from schemas.errors import SchemaValidationError
from schemas.records import (
    ACTION_DONE,
    ACTION_STATUSES,
    CHANNELS,
    DESTINATIONS,
    OUTCOMES,
    RESOLUTIONS,
    STATUS_EVENT_TYPES,
    ActionEvent,
    ActionStatus,
    Decision,
    InteractionEvent,
)

__all__ = [
    "CHANNEL_SET",
    "CHECKS",
    "CONTACT_PREFERENCES_CHANGED",
    "DECODED_CHECKS",
    "EARLIEST_CUSTOMER_SINCE",
    "ENGAGEMENTS",
    "EPOCH",
    "KIND_LIST",
    "KIND_MAP",
    "KIND_OPT_DATE",
    "KIND_OPT_DOUBLE",
    "KIND_OPT_TS",
    "KIND_PLAIN",
    "KIND_TS",
    "MAX_IDENTIFIER_CHARS",
    "ONE_MS",
    "PREFERRED_CHANNELS",
    "SPECS",
    "TS_MAX",
    "TS_MIN",
    "Check",
    "Record",
    "attribute_map",
    "describe",
    "event_problem",
    "field_error",
    "identifier",
    "is_int",
    "non_empty",
    "optional_double",
    "optional_short_text",
    "optional_timestamp",
    "plainly_valid_event",
    "short_text",
    "timestamp",
    "validate",
]

Record = InteractionEvent | ActionEvent | Decision | ActionStatus
R = TypeVar("R", InteractionEvent, ActionEvent, Decision, ActionStatus)


_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)
# Timestamps must also be writable as ISO-8601 (years 1..9999).
TS_MIN: Final = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // ONE_MS
TS_MAX: Final = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - EPOCH) // ONE_MS

Check = Callable[[Any], str | None]

#: The earliest `customer_since` an event may carry; the latest is the day after the
#: event's own occurred_at (UTC), so that no date in the future passes (docs/design.md 3.3).
EARLIEST_CUSTOMER_SINCE: Final = date(1900, 1, 1)
_EARLIEST_SINCE_ORDINAL: Final = EARLIEST_CUSTOMER_SINCE.toordinal()
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_DAY_MS: Final = 86_400_000
#: The consent event (docs/design.md 3.2) and what its attributes `engagement` and
#: `preferred_channel` may say (a person's channel: never billing or other).
CONTACT_PREFERENCES_CHANGED: Final = "contact_preferences_changed"
ENGAGEMENTS: Final = ("opt_out", "opt_in")
PREFERRED_CHANNELS: Final = ("call", "email", "web")
_ENGAGEMENT_SET: Final = frozenset(ENGAGEMENTS)
_PREFERRED_CHANNEL_SET: Final = frozenset(PREFERRED_CHANNELS)
_STATUS_EVENT_SET: Final = frozenset(STATUS_EVENT_TYPES)
_RESOLUTION_SET: Final = frozenset(RESOLUTIONS)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {describe(value)}"


def non_empty(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {describe(value)}"
    return None if value else "must not be empty"


def _optional_text(value: Any) -> str | None:
    return (
        None
        if value is None or isinstance(value, str)
        else f"expected a string or null, got {describe(value)}"
    )


#: Longest identifier (event_id, customer_id, type, source, product, reference, currency,
#: attribute keys) in characters (docs/design.md, section 3.3).
MAX_IDENTIFIER_CHARS: Final = 256


def _too_long(value: str) -> str:
    return f"{len(value)} characters exceed the limit of {MAX_IDENTIFIER_CHARS}"


def identifier(value: Any) -> str | None:
    """A required, non-empty identifier of at most `MAX_IDENTIFIER_CHARS`."""
    if not isinstance(value, str):
        return f"expected a string, got {describe(value)}"
    if not value:
        return "must not be empty"
    return None if len(value) <= MAX_IDENTIFIER_CHARS else _too_long(value)


def short_text(value: Any) -> str | None:
    """A string (maybe empty) of at most `MAX_IDENTIFIER_CHARS`."""
    if not isinstance(value, str):
        return f"expected a string, got {describe(value)}"
    return None if len(value) <= MAX_IDENTIFIER_CHARS else _too_long(value)


def optional_short_text(value: Any) -> str | None:
    """None or a string of at most `MAX_IDENTIFIER_CHARS`."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"expected a string or null, got {describe(value)}"
    return None if len(value) <= MAX_IDENTIFIER_CHARS else _too_long(value)


def attribute_map(value: Any) -> str | None:
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


def timestamp(value: Any) -> str | None:
    if not is_int(value):
        return f"expected int epoch milliseconds, got {describe(value)}"
    if not TS_MIN <= value <= TS_MAX:
        return f"{value} is outside years 1..9999"
    return None


def optional_timestamp(value: Any) -> str | None:
    return None if value is None else timestamp(value)


def _optional_date(value: Any) -> str | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return None
    return f"expected a date or null, got {describe(value)}"


def optional_double(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, float | int) or isinstance(value, bool):
        return f"expected a number or null, got {describe(value)}"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond any double
        finite = False
    return None if finite else f"{str(value)[:40]} is not a finite double"


def _avro_int(low: int = _INT_MIN, high: int = _INT_MAX) -> Check:
    def check(value: Any) -> str | None:
        if not is_int(value):
            return f"expected an integer, got {describe(value)}"
        return None if low <= value <= high else f"{value} is outside {low}..{high}"

    return check


def _string_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected a list of strings, got {describe(value)}"
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return f"[{i}]: expected a string, got {describe(item)}"
    return None


def _string_map(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"expected a map of strings, got {describe(value)}"
    for key, item in value.items():
        if not isinstance(key, str):
            return f"key {key!r}: expected a string key"
        if not isinstance(item, str):
            return f".{key}: expected a string, got {describe(item)}"
    return None


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return f"{type(value).__name__} {value!r}"[:80]


_CHANNEL: Final = _one_of(CHANNELS)
CHANNEL_SET: Final = frozenset(CHANNELS)
_OUTCOME: Final = _one_of(OUTCOMES)

# Field kinds shared by validation and the JSON form, in schema field order.
KIND_TS, KIND_OPT_TS, KIND_OPT_DATE, KIND_OPT_DOUBLE, KIND_MAP, KIND_LIST, KIND_PLAIN = range(7)

_FieldSpec = tuple[str, Check, int, bool]  # name, check, kind, required in JSON

SPECS: Final[dict[type, tuple[_FieldSpec, ...]]] = {
    InteractionEvent: (
        ("event_id", identifier, KIND_PLAIN, True),
        ("customer_id", identifier, KIND_PLAIN, True),
        ("channel", _CHANNEL, KIND_PLAIN, True),
        ("type", identifier, KIND_PLAIN, True),
        ("occurred_at", timestamp, KIND_TS, True),
        ("source", short_text, KIND_PLAIN, False),
        ("product", optional_short_text, KIND_PLAIN, False),
        ("reference", optional_short_text, KIND_PLAIN, False),
        ("amount", optional_double, KIND_OPT_DOUBLE, False),
        ("currency", optional_short_text, KIND_PLAIN, False),
        ("due_date", _optional_date, KIND_OPT_DATE, False),
        ("customer_since", _optional_date, KIND_OPT_DATE, False),
        ("text", _optional_text, KIND_PLAIN, False),
        ("attributes", attribute_map, KIND_MAP, False),
    ),
    ActionEvent: (
        ("action_id", non_empty, KIND_PLAIN, True),
        ("customer_id", non_empty, KIND_PLAIN, True),
        ("rule", non_empty, KIND_PLAIN, True),
        ("action", non_empty, KIND_PLAIN, True),
        ("rule_version", _avro_int(0), KIND_PLAIN, True),
        ("destination", _one_of(DESTINATIONS), KIND_PLAIN, True),
        ("priority", _avro_int(0, 100), KIND_PLAIN, True),
        ("reason", non_empty, KIND_PLAIN, True),
        ("evidence", _string_list, KIND_LIST, True),
        ("channel_hint", _optional_text, KIND_PLAIN, False),
        ("triggered_at", timestamp, KIND_TS, True),
        ("due_by", optional_timestamp, KIND_OPT_TS, False),
        ("details", _string_map, KIND_MAP, False),
    ),
    Decision: (
        ("decision_id", non_empty, KIND_PLAIN, True),
        ("customer_id", non_empty, KIND_PLAIN, True),
        ("rule", non_empty, KIND_PLAIN, True),
        ("rule_version", _avro_int(0), KIND_PLAIN, True),
        ("outcome", _OUTCOME, KIND_PLAIN, True),
        ("reason", non_empty, KIND_PLAIN, True),
        ("action_id", _optional_text, KIND_PLAIN, False),
        ("evidence", _string_list, KIND_LIST, True),
        ("decided_at", timestamp, KIND_TS, True),
        ("blocked_by", _optional_text, KIND_PLAIN, False),
    ),
    ActionStatus: (
        ("action_id", non_empty, KIND_PLAIN, True),
        ("customer_id", non_empty, KIND_PLAIN, True),
        ("rule", non_empty, KIND_PLAIN, True),
        ("destination", non_empty, KIND_PLAIN, True),
        ("status", _one_of(ACTION_STATUSES), KIND_PLAIN, True),
        ("owner", _optional_text, KIND_PLAIN, False),
        ("resolution", _optional_text, KIND_PLAIN, False),
        ("at", timestamp, KIND_TS, True),
        ("event_id", _optional_text, KIND_PLAIN, False),
    ),
}

CHECKS: Final = {t: tuple((name, check) for name, check, _, _ in s) for t, s in SPECS.items()}

# What a successful Avro decode already guarantees (types, enum symbols); a decoded
# record is only checked for the rest (empty ids, ranges, NaN), which keeps decode fast.
_AVRO_ENFORCED: Final[frozenset[Check]] = frozenset(
    (_text, _optional_text, _optional_date, _string_list, _string_map, _CHANNEL, _OUTCOME)
)
DECODED_CHECKS: Final = {
    t: tuple((name, check) for name, check in checks if check not in _AVRO_ENFORCED)
    for t, checks in CHECKS.items()
}


def field_error(name: str, problem: str, where: str = "") -> SchemaValidationError:
    # Container checks report the element as a suffix: "[2]: ..." or ".plan: ...".
    if problem[:1] in "[." and ": " in problem:
        suffix, _, problem = problem.partition(": ")
        return SchemaValidationError(name + suffix, problem, where)
    return SchemaValidationError(name, problem, where)


def _customer_since_problem(since: date, occurred_at: int) -> str | None:
    day = since.toordinal()
    if day < _EARLIEST_SINCE_ORDINAL:
        return f"lies before {EARLIEST_CUSTOMER_SINCE.isoformat()}"
    if day > _EPOCH_ORDINAL + occurred_at // _DAY_MS + 1:
        return "lies in the future: after the day after the event's occurred_at (UTC)"
    return None


def _preferences_problem(attributes: dict[str, str]) -> tuple[str, str] | None:
    engagement = attributes.get("engagement")
    if engagement is not None and engagement not in _ENGAGEMENT_SET:
        return "attributes.engagement", (
            f"must be {' or '.join(ENGAGEMENTS)} in a {CONTACT_PREFERENCES_CHANGED}"
        )
    channel = attributes.get("preferred_channel")
    if channel is not None and channel not in _PREFERRED_CHANNEL_SET:
        return "attributes.preferred_channel", (
            f"must be a person's channel, one of {', '.join(PREFERRED_CHANNELS)}, "
            f"in a {CONTACT_PREFERENCES_CHANGED}"
        )
    return None


def _status_event_problem(event_type: str, attributes: dict[str, str]) -> tuple[str, str] | None:
    owner = attributes.get("owner")
    if owner is not None and len(owner) > MAX_IDENTIFIER_CHARS:
        return "attributes.owner", f"{_too_long(owner)} in an {event_type}"
    resolution = attributes.get("resolution")
    if event_type == ACTION_DONE and resolution is not None and resolution not in _RESOLUTION_SET:
        return "attributes.resolution", (
            f"must be one of {', '.join(RESOLUTIONS)} in an {ACTION_DONE}"
        )
    return None


def event_problem(event: InteractionEvent) -> tuple[str, str] | None:
    """The first rule between an event's fields that `event` breaks, as (field, problem), or
    None. Its fields must have passed their own checks first.

    A `customer_since` lies from 1900-01-01 to the day after the event's occurred_at (UTC):
    deterministic, no wall clock. A `contact_preferences_changed` says `engagement` (when it
    says one) as `opt_out` or `opt_in` and `preferred_channel` as `call`, `email` or `web`.
    A status event of an action (docs/design.md 12) names an `owner` of at most 256
    characters and an `action_done` a known `resolution` (when it names one).
    The problem names no value (customer data).
    """
    since = event.customer_since
    if since is not None:
        problem = _customer_since_problem(since, event.occurred_at)
        if problem is not None:
            return "customer_since", problem
    if event.type == CONTACT_PREFERENCES_CHANGED:
        return _preferences_problem(event.attributes)
    if event.type in _STATUS_EVENT_SET:
        return _status_event_problem(event.type, event.attributes)
    return None


def validate(record: Record) -> None:
    """Raise `SchemaValidationError` naming the first field of `record` that breaks the contract
    (its own checks first, then, for an event, `event_problem`)."""
    checks = CHECKS.get(type(record))
    if checks is None:
        raise SchemaValidationError("<record>", f"not a moments record: {type(record).__name__}")
    for name, check in checks:
        problem = check(getattr(record, name))
        if problem is not None:
            raise field_error(name, problem)
    if type(record) is InteractionEvent:
        broken = event_problem(record)
        if broken is not None:
            raise SchemaValidationError(*broken)


def plainly_valid_event(e: Any) -> bool:
    """True when every check of `validate` surely passes (exact types, the common case),
    `event_problem` included; False means the checks must run (and may still pass, e.g. an
    int amount, or any `contact_preferences_changed` with attributes to judge)."""
    if type(e) is not InteractionEvent:
        return False
    amount, attributes, since = e.amount, e.attributes, e.customer_since
    if not (
        type(e.event_id) is str
        and 0 < len(e.event_id) <= MAX_IDENTIFIER_CHARS
        and type(e.customer_id) is str
        and 0 < len(e.customer_id) <= MAX_IDENTIFIER_CHARS
        and type(e.channel) is str
        and e.channel in CHANNEL_SET
        and type(e.type) is str
        and 0 < len(e.type) <= MAX_IDENTIFIER_CHARS
        and type(e.occurred_at) is int
        and TS_MIN <= e.occurred_at <= TS_MAX
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
        and (
            since is None
            or (
                type(since) is date
                and _EARLIEST_SINCE_ORDINAL
                <= since.toordinal()
                <= _EPOCH_ORDINAL + e.occurred_at // _DAY_MS + 1
            )
        )
        and type(attributes) is dict
    ):
        return False
    for key, value in attributes.items():
        if type(key) is not str or type(value) is not str or len(key) > MAX_IDENTIFIER_CHARS:
            return False
    if e.type in _STATUS_EVENT_SET:
        return _status_event_problem(e.type, attributes) is None
    return e.type != CONTACT_PREFERENCES_CHANGED or _preferences_problem(attributes) is None

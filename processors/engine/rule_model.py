"""The rule pack as typed values: `RulePack`, `Rule`, `Pattern`, `Outcome`, `Relationship`,
the vocabulary they use (kinds, classes, event fields, placeholders) and durations and
percentages as the language writes them. What a rule *says*; the YAML language and its
validation are in rules.py, when a rule fires in core.py. Pure: no files, no Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

from schemas.records import InteractionEvent

DEFAULT_PACK_PATH: Final = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"

#: A rule's class: a service rule is an obligation (never held out, never capped), an
#: engagement rule is a nudge (its own control group, the contact cap).
SERVICE: Final = "service"
ENGAGEMENT: Final = "engagement"
RULE_CLASSES: Final = (SERVICE, ENGAGEMENT)
#: When a rule decides (docs/design.md 11.1): as an event arrives, or once the watermark has
#: passed it.
ON_ARRIVAL: Final = "on_arrival"
AT_WATERMARK: Final = "at_watermark"
DECIDE_WHEN: Final = (ON_ARRIVAL, AT_WATERMARK)
#: What a new version does with the timers an earlier version set (docs/design.md 8.3).
KEEP: Final = "keep"
CANCEL: Final = "cancel"
PENDING_POLICIES: Final = (KEEP, CANCEL)

#: Event fields a condition, a correlation or a detail may name.
EVENT_FIELDS: Final = (
    "channel",
    "type",
    "source",
    "product",
    "reference",
    "amount",
    "currency",
    "due_date",
    "customer_since",
    "text",
)

#: Placeholders a reason template may use (rendered by the engine).
REASON_PLACEHOLDERS: Final = frozenset(
    {
        "customer_id",
        "channel",
        "via",
        "type",
        "what",
        "product",
        "reference",
        "amount",
        "date",
        "count",
        "channels",
        "channel_count",
        "window",
        "within",
        "first_date",
        "first_what",
        "gap",
        "tenure_years",
        "since",
        "products",
        "new_address",
        "balance",
        "negatives",
        "positives",
    }
)

#: Detail sources besides EVENT_FIELDS and `attributes.<key>`.
CUSTOMER_DETAIL_SOURCES: Final = ("customer.products", "customer.since", "customer.last_channel")
#: Detail sources of the event itself beyond its fields: its time (ISO-8601 UTC).
EVENT_DETAIL_SOURCES: Final = ("occurred_at",)
#: The longest `gather` a rule may say (a gathered candidate waits that long).
MAX_GATHER_MS: Final = 86_400_000
#: The key source naming the customer's case (cases.py): `per: case`, `correlate: case`.
CASE_KEY_SOURCE: Final = "case"

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_MS: Final = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
#: How long a deferred candidate without a due_by waits for the contact cap (docs/design.md 5.6).
DEFAULT_DEFER_FOR_MS: Final = 7 * 86_400_000
#: The longest duration a pack may give (10 years): times it adds stay within what an action's
#: timestamps can carry.
MAX_DURATION_MS: Final = 3650 * 86_400_000


class RuleError(Exception):
    """A rule's own code (its Python predicate) raised on an event: the engine suppresses
    that rule's candidate (decision `rule_error`) and goes on with the others. Its message
    names the rule and the error's type only (never what the event held)."""


class RulePackError(ValueError):
    """A rule pack that cannot be used; `problems` lists every error (file, rule, field)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    """What a predicate may know about the customer besides the event (read only)."""

    customer_id: str
    products: tuple[str, ...]
    customer_since: date | None
    last_channel: str | None


Predicate = Callable[[InteractionEvent, CustomerProfile], bool]


@dataclass(frozen=True, slots=True)
class Pattern:
    """Conditions one event must meet. None / empty means "any"."""

    types: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    products: frozenset[str] | None = None
    fields: tuple[tuple[str, frozenset[str | None]], ...] = ()
    attributes: tuple[tuple[str, frozenset[str]], ...] = ()
    min_tenure_years: int | None = None
    #: `by: person`: only events a person made (customer.made_by_person).
    by_person: bool = False
    predicate: Predicate | None = None
    predicate_name: str | None = None


OUTCOME_DIRECTIONS: Final = ("fewer", "more")


@dataclass(frozen=True, slots=True)
class Escalation:
    """`when_overdue`: the service action the engine raises when an action of the rule is
    overdue (docs/design.md 12), with the overdue action as evidence."""

    action: str
    destination: str
    priority: int


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """A destination's working hours (`destinations: {care: {hours: ..., holidays: ...}}`),
    in the engine's time zone: due_by and overdue of its actions count only these hours
    (docs/design.md 12). `days` are weekdays (0 = Monday), `start` / `end` minutes after
    local midnight."""

    days: frozenset[int]
    start: int
    end: int
    holidays: frozenset[date] = frozenset()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an engagement rule is meant to change: customers with at least one event of
    `types` (made by a person, with `by_person`) within `within_ms` after the decision;
    `better` says which way is good."""

    types: frozenset[str]
    within_ms: int
    better: str
    #: `by: person`: only events a person made count (customer.made_by_person).
    by_person: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a pack. Kind-specific fields are None where the kind has none; `kind`
    names its class in kinds.KINDS."""

    id: str
    version: int
    kind: str
    action: str
    destination: str
    priority: int
    rule_class: str
    reason: str
    cool_down_ms: int | None = None
    due_by_ms: int | None = None
    details: tuple[tuple[str, str], ...] = ()
    description: str = ""
    #: match / first / count / profile: the event pattern. sequence / absence: pattern A.
    pattern: Pattern = field(default_factory=Pattern)
    #: sequence: pattern B (`then`); absence: the pattern that must not follow (`missing`).
    follow: Pattern | None = None
    within_ms: int | None = None
    window_ms: int | None = None
    min_count: int | None = None
    min_channels: int = 1
    per: str | None = None
    correlate: str | None = None
    min_deficit: int | None = None
    #: Engagement rules only: what the rule is meant to change (read by the uplift report).
    outcome: Outcome | None = None
    #: Engagement rules: the rule's own control group in percent (None = the engine's default).
    holdout_percent: float | None = None
    #: How long a candidate deferred by the contact cap waits when it has no due_by.
    defer_for_ms: int = DEFAULT_DEFER_FOR_MS
    #: At a switch to this version (docs/design.md 8.3): "keep" lets timers set under an earlier
    #: version fire as promised, "cancel" drops them (decision suppressed, rule_changed).
    pending: str = KEEP
    #: The field that keys this rule's state and cool-down (None = per customer); its kind
    #: derives it from `per` or `correlate` (`Kind.key_field`), kept as a field because the
    #: engine reads it on every match.
    key_field: str | None = field(default=None, compare=False, repr=False)
    #: first: fire only for a product opened (account_opened) at most this long before, or
    #: an event saying attributes.first_invoice "true"; else suppressed `not_new`.
    new_within_ms: int | None = None
    #: match: the candidate waits this long in event time and fires once, with every
    #: matching event of the window as evidence (docs/design.md 11.5).
    gather_ms: int | None = None
    #: match: a candidate older than the newest one that fired is suppressed `superseded`.
    latest_only: bool = False
    #: A customer holding no product gets no candidate: suppressed `nothing_to_update`.
    needs_products: bool = False
    #: A fired action owns the customer for the rule's cool-down: candidates of lower
    #: priority for the same destination are suppressed `owned` (docs/design.md 11.2).
    owner: bool = False
    #: When the rule decides: `at_watermark` (an engagement rule always) once the partition's
    #: watermark passes the event, knowing everything that happened before it within the
    #: allowed lateness; `on_arrival` (a service rule's default) as the event arrives.
    decide: str = "on_arrival"
    #: Raised when an action of the rule is overdue (needs `due_by`; docs/design.md 12).
    when_overdue: Escalation | None = None

    @property
    def at_watermark(self) -> bool:
        """Whether the rule sees an event only once the watermark passes it (11.1)."""
        return self.rule_class == ENGAGEMENT or self.decide == AT_WATERMARK


@dataclass(frozen=True, slots=True)
class Relationship:
    """How the relationship ledger classifies events and fired actions."""

    window_ms: int = 90 * 86_400_000
    positive: frozenset[str] = frozenset()
    negative: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RulePack:
    """A validated rule pack: rules in file order plus the ledger classification."""

    rules: tuple[Rule, ...]
    relationship: Relationship = field(default_factory=Relationship)
    source: str = "<memory>"
    #: Destinations with working hours (`destinations:`), sorted by destination.
    destinations: tuple[tuple[str, BusinessHours], ...] = ()

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def parse_duration(value: Any) -> int:
    """'30d' -> milliseconds. Units: ms, s, m, h, d, w. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a duration such as '48h' or '30d', got {value!r}")
    if isinstance(value, int):
        raise ValueError(f"give a unit, e.g. '{value}d' or '{value}h' (got a bare number)")
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"expected a duration such as '48h' or '30d', got {value!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """Milliseconds -> a human duration for reasons, never a raw count of seconds.

    Beyond 72 hours whole days ("5 days", the rest left out); from an hour on hours and
    minutes ("48 hours", "3 hours 20 minutes"); below, minutes and seconds ("20 minutes").
    """
    if ms > 72 * _HOUR_MS:
        return _units(ms // _UNIT_MS["d"], "day")
    if ms >= _HOUR_MS:
        hours, rest = divmod(ms, _HOUR_MS)
        minutes = rest // _UNIT_MS["m"]
        text = _units(hours, "hour")
        return f"{text} {_units(minutes, 'minute')}" if minutes else text
    if ms >= _UNIT_MS["m"]:
        minutes, rest = divmod(ms, _UNIT_MS["m"])
        seconds = rest // _UNIT_MS["s"]
        text = _units(minutes, "minute")
        return f"{text} {_units(seconds, 'second')}" if seconds else text
    if ms >= _UNIT_MS["s"]:
        return _units(ms // _UNIT_MS["s"], "second")
    return "less than a second"


_HOUR_MS: Final = 3_600_000


def _units(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def parse_percent(value: Any) -> float:
    """'10%', '10' or 10 -> 10.0 (a number 0-100, `%` optional). Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a percentage 0-100 such as '10%', got {value!r}")
    text = str(value).strip().removesuffix("%").strip()
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"expected a percentage 0-100 such as '10%', got {value!r}") from None
    if not 0 <= percent <= 100:
        raise ValueError(f"expected a percentage 0-100, got {value!r}")
    return percent

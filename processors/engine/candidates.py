"""Candidates and conditions: what a rule kind hands to arbitration, and how an event is
tested against a rule's pattern (fields, attributes, tenure, a Python predicate).

Pure: reads only the event and the customer's state it is given.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Final

from processors.engine.customer import made_by_person
from processors.engine.rule_model import CustomerProfile, Pattern, Rule
from processors.engine.state import CHANNEL, PRODUCTS, SINCE
from processors.engine.times import anniversary_ms
from schemas.records import InteractionEvent

#: The context of candidates that have none (shared: contexts are only read).
NO_CONTEXT: Final[dict[str, Any]] = {}


class Candidate:
    """An action a rule wants to take; arbitration turns it into a Decision.

    A plain class with its own `__init__` (not a dataclass): compiled, it is built without
    the interpreted `__init__` a dataclass would run for every candidate.
    """

    __slots__ = ("at", "blocked_by", "context", "event", "evidence", "key", "rule", "suppress")

    def __init__(
        self,
        rule: Rule,
        at: int,
        evidence: list[str],
        key: str = "",
        event: InteractionEvent | None = None,
        context: dict[str, Any] | None = None,
        suppress: str | None = None,
        blocked_by: str | None = None,
    ) -> None:
        self.rule = rule
        self.at = at  # event time of the decision (triggered_at / decided_at)
        self.evidence = evidence
        self.key = key  # cool-down key ("" = per customer)
        self.event = event  # the event that made the rule fire, if any
        self.context: dict[str, Any] = {} if context is None else context  # extra placeholders
        self.suppress = suppress  # set by the kind itself, e.g. already_raised
        self.blocked_by = blocked_by  # with `suppress`: the action that caused it, if known

    def __repr__(self) -> str:
        return f"Candidate(rule={self.rule.id!r}, at={self.at}, key={self.key!r})"


def field_value(event: InteractionEvent, name: str) -> str | None:
    """An event field or `attributes.<key>` as a string (None when absent)."""
    if name.startswith("attributes."):
        return event.attributes.get(name[11:])
    value = getattr(event, name)
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return amount_text(value)
    return str(value)


def amount_text(value: float) -> str:
    """A money amount with two decimals, remembered: float formatting is slow, and a reason
    and the details of the same action both show it."""
    text = _AMOUNTS.get(value)
    if text is None:
        text = f"{value:.2f}"
        if value:  # 0.0 == -0.0 as keys, but they print differently
            if len(_AMOUNTS) >= 65_536:
                _AMOUNTS.clear()
            _AMOUNTS[value] = text
    return text


_AMOUNTS: Final[dict[float, str]] = {}


def profile_of(customer_id: str, state: dict[str, Any]) -> CustomerProfile:
    """What a Python predicate sees of the customer."""
    since = state.get(SINCE)
    return CustomerProfile(
        customer_id=customer_id,
        products=tuple(state.get(PRODUCTS, ())),
        customer_since=date.fromisoformat(since) if since else None,
        last_channel=state.get(CHANNEL),
    )


def matches(p: Pattern, event: InteractionEvent, customer_id: str, state: dict[str, Any]) -> bool:
    """Does the event meet every condition of the pattern? (The type was checked by the index.)"""
    if p.channels is not None and event.channel not in p.channels:
        return False
    if p.products is not None and event.product not in p.products:
        return False
    for name, allowed in p.fields:
        if field_value(event, name) not in allowed:
            return False
    for key, values in p.attributes:
        if event.attributes.get(key) not in values:
            return False
    if p.by_person and not made_by_person(event):
        return False
    if p.min_tenure_years is not None:
        since = state.get(SINCE)
        if since is None or event.occurred_at < anniversary_ms(since, p.min_tenure_years):
            return False
    return p.predicate is None or bool(p.predicate(event, profile_of(customer_id, state)))


def remember(event: InteractionEvent) -> list[Any]:
    """An event as plain JSON values, to keep in the state (`recall` gives it back). Its
    attributes map is shared, not copied: the engine never changes an event."""
    return [
        event.event_id,
        event.channel,
        event.type,
        event.occurred_at,
        event.source,
        event.product,
        event.reference,
        event.amount,
        event.currency,
        None if event.due_date is None else _iso(event.due_date),
        None if event.customer_since is None else _iso(event.customer_since),
        event.text,
        event.attributes,
    ]


def recall(customer_id: str, kept: list[Any]) -> InteractionEvent:
    """The event `remember` kept."""
    due, since = kept[9], kept[10]
    return InteractionEvent(
        kept[0],
        customer_id,
        kept[1],
        kept[2],
        kept[3],
        kept[4],
        kept[5],
        kept[6],
        kept[7],
        kept[8],
        None if due is None else _date(due),
        None if since is None else _date(since),
        kept[11],
        kept[12],
    )


def _date(text: str) -> date:
    """date.fromisoformat, remembered (customer_since is on most events)."""
    day = _DATES.get(text)
    if day is None:
        if len(_DATES) >= 65_536:
            _DATES.clear()
        day = _DATES[text] = date.fromisoformat(text)
    return day


_DATES: Final[dict[str, date]] = {}


def _iso(day: date) -> str:
    """date.isoformat, remembered (formatting costs more than a lookup, and every held
    event of a customer carries the same customer_since)."""
    text = _ISO.get(day)
    if text is None:
        if len(_ISO) >= 65_536:
            _ISO.clear()
        text = _ISO[day] = day.isoformat()
    return text


_ISO: Final[dict[date, str]] = {}


def key_of(rule_field: str | None, event: InteractionEvent) -> str:
    """The event's value of a rule's key or correlation field ("" when none or absent)."""
    if rule_field is None:
        return ""
    if rule_field in TEXT_FIELDS:
        value = getattr(event, rule_field)
        if value is None or type(value) is str:
            return value or ""  # what field_value gives, without its checks
    return field_value(event, rule_field) or ""


#: Event fields holding text (or None): a detail reads them as they are.
TEXT_FIELDS: Final = frozenset(
    {"channel", "type", "source", "product", "reference", "currency", "text"}
)

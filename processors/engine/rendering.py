"""Rendering: an action's reason (its rule's template, placeholders filled in) and details.

`render` and `details` are what arbitration calls for an action that fires or is
deferred; the reason placeholders and detail sources a rule may name are defined here
(the rule language itself is in rules.py). Pure: reads the candidate, its event and the
customer's state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

from processors.engine.candidates import (
    NO_CONTEXT,
    TEXT_FIELDS,
    Candidate,
    amount_text,
    field_value,
)
from processors.engine.state import CHANNEL, PRODUCTS, SINCE
from processors.engine.times import iso_instant, tenure_years, utc_date

if TYPE_CHECKING:
    from processors.engine.arbitration import Step
    from processors.engine.runtime import RuleRuntime

#: How a reason says where something happened.
VIA: Final = {
    "call": "by phone",
    "email": "by email",
    "billing": "through billing",
    "web": "on the web",
    "other": "through another channel",
}
#: How a reason names an event type.
WHAT: Final = {
    "account_opened": "an account opening",
    "account_closed": "an account closure",
    "cancellation_requested": "a cancellation request",
    "invoice_issued": "an invoice",
    "payment_received": "a payment",
    "payment_failed": "a failed payment",
    "payment_demand_issued": "a payment demand",
    "meter_reading_submitted": "a meter reading",
    "dispute_opened": "a dispute",
    "dispute_resolved": "a dispute resolution",
    "complaint_filed": "a complaint",
    "complaint_resolved": "a complaint resolution",
    "feedback_given": "feedback",
    "address_changed": "an address change",
    "inquiry": "an inquiry",
}


def render(step: Step, rt: RuleRuntime, cand: Candidate, balance: int) -> str:
    """The rule's reason template with the placeholders it uses (and only those)."""
    extra = cand.context
    parts = rt.reason_parts
    if parts is None:  # a template str.format must parse itself (a pack built in code)
        ctx: dict[str, Any] = {}
        for name, getter in rt.placeholders:
            ctx[name] = extra[name] if name in extra else getter(step, cand, balance)
        return cand.rule.reason.format_map(ctx)
    # pieces.append, not a bound `append` local: compiled, the method is a direct list append
    # while a bound method is a generic call
    pieces: list[str] = []
    if extra is NO_CONTEXT:
        for literal, _, getter in parts:
            pieces.append(literal)
            pieces.append(getter(step, cand, balance))
    else:
        for literal, name, getter in parts:
            pieces.append(literal)
            if name in extra:
                value = extra[name]
                pieces.append(value if type(value) is str else format(value))
            else:
                pieces.append(getter(step, cand, balance))
    pieces.append(rt.reason_tail)
    return "".join(pieces)


def details(
    step: Step, rt: RuleRuntime, cand: Candidate, ledger: tuple[int, int, int]
) -> dict[str, str]:
    """The rule's details (absent values left out) plus the ledger's, sorted.

    `ledger` is (balance, positives, negatives) at the candidate's time."""
    gathered = cand.context.get("gathered_products") if cand.context else None
    if gathered:  # a gathered candidate names every product concerned
        out = _details(step, rt, cand, ledger)
        out["products"] = gathered
        return dict(sorted(out.items()))
    return _details(step, rt, cand, ledger)


def _details(
    step: Step, rt: RuleRuntime, cand: Candidate, ledger: tuple[int, int, int]
) -> dict[str, str]:
    out: dict[str, str] = {}
    event = cand.event
    if event is not None and rt.event_details is not None:
        state = step.state
        for name, source_kind, read, source in rt.event_details:
            if source_kind == FROM_EVENT:
                value = read(event)
                if value is None:
                    continue
                if type(value) is not str:
                    value = field_value(event, source)
            elif source_kind == FROM_STATE:
                value = read(state)
                if value is None:
                    continue
            else:  # BALANCE: inline, a call of the reader costs more than this
                value = str(ledger[LEDGER_DETAILS[name]])
            out[name] = value
        return out
    ordered = rt.details
    if ordered is None:  # a pack built in code naming a detail twice: the general path
        for name, getter in step.engine.detail_getters[cand.rule.id]:
            value = getter(step, cand)
            if value is not None:
                out[name] = value
        for name, index in LEDGER_DETAILS.items():
            out[name] = str(ledger[index])
        return dict(sorted(out.items()))
    for name, detail in ordered:
        if detail is None:
            out[name] = str(ledger[LEDGER_DETAILS[name]])
        else:
            value = detail(step, cand)
            if value is not None:
                out[name] = value
    return out


#: How a detail of a candidate is read (see `detail_getter`).
DetailGetter = Callable[["Step", Candidate], str | None]


def detail_getter(source: str) -> DetailGetter:
    """How a detail source (see rules.py) is read for a candidate."""
    if source == "customer.products":
        return lambda step, cand: ",".join(step.state.get(PRODUCTS, ()))
    if source == "customer.since":
        return lambda step, cand: step.state.get(SINCE)
    if source == "customer.last_channel":
        return lambda step, cand: step.state.get(CHANNEL)
    if source == "occurred_at":
        return lambda step, cand: (
            None if cand.event is None else iso_instant(cand.event.occurred_at)
        )

    if source in TEXT_FIELDS:
        read = attrgetter(source)

        def from_text_field(step: Step, cand: Candidate) -> str | None:
            event = cand.event
            if event is not None:
                value = read(event)
                if value is None or type(value) is str:
                    return value  # what field_value gives, without its checks
                return field_value(event, source)
            if source == "reference":  # a timer: the correlation key is the A event's reference
                return cand.key or None
            value = cand.context.get(source)
            return None if value is None else str(value)

        return from_text_field

    def from_event(step: Step, cand: Candidate) -> str | None:
        if cand.event is not None:
            return field_value(cand.event, source)
        if source == "reference":  # a timer: the correlation key is the A event's reference
            return cand.key or None
        value = cand.context.get(source)
        return None if value is None else str(value)

    return from_event


#: Where a detail of a candidate with an event comes from (see `event_detail`).
FROM_EVENT: Final = 0  # read(event); a value that is not text goes through field_value
FROM_STATE: Final = 1  # read(customer state)
BALANCE: Final = 2  # details.relationship_*: read((balance, positives, negatives))
#: The ledger's details on every action -> index in (balance, positives, negatives).
LEDGER_DETAILS: Final = {
    "relationship_balance": 0,
    "relationship_negatives": 2,
    "relationship_positives": 1,
}


def ledger_reader(index: int) -> Callable[[Any], Any]:
    return lambda ledger: str(ledger[index])


#: (detail name, where from, read, source) for the candidates that have an event.
EventDetail = tuple[str, int, Callable[[Any], Any], str]


def event_detail(name: str, source: str) -> EventDetail:
    """`detail_getter` for a candidate with an event, as data the details loop reads inline."""
    if source == "customer.products":
        return name, FROM_STATE, lambda state: ",".join(state.get(PRODUCTS, ())), source
    if source == "customer.since":
        return name, FROM_STATE, lambda state: state.get(SINCE), source
    if source == "customer.last_channel":
        return name, FROM_STATE, lambda state: state.get(CHANNEL), source
    if source == "occurred_at":
        return name, FROM_EVENT, lambda event: iso_instant(event.occurred_at), source
    if source.startswith("attributes."):
        key = source[11:]
        return name, FROM_EVENT, lambda event: event.attributes.get(key), source
    if source in TEXT_FIELDS:
        return name, FROM_EVENT, attrgetter(source), source
    return name, FROM_EVENT, lambda event: field_value(event, source), source


def _channel(step: Step, cand: Candidate) -> str:
    return cand.event.channel if cand.event is not None else step.state.get(CHANNEL) or "other"


def _what(event_type: str) -> str:
    return WHAT.get(event_type, event_type.replace("_", " "))


def _tenure(step: Step, cand: Candidate) -> int:
    since = step.state.get(SINCE)
    return tenure_years(date.fromisoformat(since), utc_date(cand.at)) if since else 0


def _amount(step: Step, cand: Candidate, balance: int) -> str:
    event = cand.event
    if event is None or event.amount is None:
        return "an amount"
    if event.currency:
        return f"{amount_text(event.amount)} {event.currency}".strip()
    return amount_text(event.amount)


def _event_attr(name: str, default: str) -> Callable[[Step, Candidate, int], Any]:
    def get(step: Step, cand: Candidate, balance: int) -> Any:
        value = getattr(cand.event, name, None) if cand.event is not None else None
        return value or default

    return get


#: A reason placeholder's text for a candidate (step, candidate, relationship balance).
Placeholder = Callable[["Step", Candidate, int], str]

#: How each reason placeholder is computed when the rule kind did not set it.
PLACEHOLDERS: Final[dict[str, Placeholder]] = {
    "customer_id": lambda step, cand, balance: step.customer_id,
    "channel": lambda step, cand, balance: _channel(step, cand),
    "via": lambda step, cand, balance: VIA.get(
        cand.event.channel if cand.event is not None else step.state.get(CHANNEL) or "other",
        "through another channel",
    ),
    "type": _event_attr("type", ""),
    "what": lambda step, cand, balance: _what(cand.event.type) if cand.event else "",
    "product": lambda step, cand, balance: (
        cand.event.product.replace("_", " ")
        if cand.event is not None and cand.event.product
        else "their account"
    ),
    "reference": _event_attr("reference", "(no reference)"),
    "amount": _amount,
    "date": lambda step, cand, balance: step.engine.day(cand.at),
    "count": lambda step, cand, balance: str(len(cand.evidence)),
    "channels": lambda step, cand, balance: "",
    "channel_count": lambda step, cand, balance: "0",
    "window": lambda step, cand, balance: "",
    "within": lambda step, cand, balance: "",
    "first_date": lambda step, cand, balance: "",
    "first_what": lambda step, cand, balance: "",
    "gap": lambda step, cand, balance: "",
    "tenure_years": lambda step, cand, balance: str(_tenure(step, cand)),
    "since": lambda step, cand, balance: step.state.get(SINCE) or "an unknown date",
    "products": lambda step, cand, balance: (
        ", ".join(p.replace("_", " ") for p in step.state.get(PRODUCTS, ())) or "none on record"
    ),
    "new_address": lambda step, cand, balance: (
        (cand.event.attributes.get("new_address") if cand.event is not None else None)
        or "a new address"
    ),
    "balance": lambda step, cand, balance: str(balance),
    "negatives": lambda step, cand, balance: "0",
    "positives": lambda step, cand, balance: "0",
}

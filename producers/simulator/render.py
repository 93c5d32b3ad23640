"""Rendering: a planned moment as the record its channel system would export (a
contact-centre row, an e-mail, a billing export row, a web JSON event), mapped by the
same adapters `moments ingest` and the collector use, or as the JSON event a system
sends the collector itself (the preference centre, smart meters)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

from producers.adapters.billing import BillingAdapter
from producers.adapters.calls import CallAdapter
from producers.adapters.email import EmailAdapter, EmailMessage
from producers.simulator.habits import (
    CURRENCY,
    DAY,
    EPOCH,
    Customer,
    Plan,
)
from schemas.codec import event_from_json
from schemas.records import InteractionEvent

# --- what customers say, per channel -------------------------------------------------------------

_INQUIRY_CODES: Final = ("BALANCE_ENQUIRY", "TARIFF_QUESTION", "TECH_SUPPORT", "GENERAL", "ROUTER")
_CALL_NOTES: Final[dict[str, tuple[str, ...]]] = {
    "inquiry": (
        "Asked about the current balance and next payment date",
        "Wanted to know how the new tariff compares",
        "Walked through resetting the online account password",
        "Asked when the engineer appointment is",
        "Question about direct debit dates",
    ),
    "complaint": (
        "Upset about repeated service outages this week, wants a manager callback",
        "Engineer missed two appointments; customer very unhappy",
        "Long hold times on previous calls, complaint logged",
    ),
    "dispute": (
        "Disputes the last invoice: estimated reading far above actual usage",
        "Charged twice for the same month, wants it reversed",
        "Does not recognise a roaming charge on the bill",
    ),
    "feedback": (
        "Suggests text reminders before the direct debit is taken",
        "Likes the new app, would like dark mode",
        "Would prefer a paperless statement by default",
    ),
    "move": ("Moving house next month, gave the new address", "Moved last week, update address"),
    "meter": ("Read out the meter reading over the phone",),
    "complaint_resolved": ("Called back: apologised, credit applied, customer satisfied",),
}
# intent: ((subject, body), ...). Each must map to its intent's event type via email.yaml.
EMAIL_TEMPLATES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "inquiry": (
        ("Question about my account", "Hi, when is my next payment due? Regards"),
        ("Opening hours", "Hello, are your stores open on Sundays?"),
        ("Online login", "I cannot log in to the website, can you reset my password?"),
        ("Tariff question", "Is there a cheaper tariff for my {product}?"),
    ),
    "complaint": (
        (
            "Complaint about your service",
            "This is the third outage this month. I want to complain formally. Ref {reference}.",
        ),
        ("Very disappointed", "The engineer never came. Unacceptable. Case {reference}."),
        ("Poor service", "I want to complain about the poor service on the phone yesterday."),
        ("Nobody came", "Nobody turned up for the appointment again. Unacceptable."),
    ),
    "dispute": (
        (
            "[{reference}] Disputed invoice",
            "I dispute the amount on my last {product} bill, the reading is wrong.",
        ),
        ("[{reference}] Wrong amount on my bill", "I was overcharged this month, please correct."),
        ("Incorrect bill", "I dispute my last {product} bill, the amount is far too high."),
    ),
    "feedback": (
        ("A suggestion", "It would be nice to get a reminder before the direct debit."),
        ("Feedback on the app", "Feedback: the new app is great but slow to load."),
    ),
    "move": (
        ("Change of address", "Hi, we moved last weekend.\nNew address: {address}\nThanks"),
        ("Moving house", "We are moving house.\nNew address: {address}"),
    ),
    "cancel": (
        ("Please cancel my {product}", "I need to cancel my {product} contract: {reason}."),
        ("Cancellation", "Please terminate my {product} contract at the end of the month."),
    ),
    "meter": (("Meter reading", "My {product} meter reading today is {reading}."),),
}
# The templates an e-mail may use, by whether it names a case reference (a case opened
# without one is written in words that name none).
_EMAIL_CHOICES: Final = {
    named: {
        intent: tuple(t for t in templates if ("{reference}" in t[0] + t[1]) == named) or templates
        for intent, templates in EMAIL_TEMPLATES.items()
    }
    for named in (False, True)
}
_WEB_TEXT: Final[dict[str, tuple[str, ...]]] = {
    "inquiry": ("Contact form: question about my bill", "Chat: how do I change my tariff?"),
    "complaint": ("Complaint form: repeated outages", "Complaint form: rude agent on the phone"),
    "dispute": ("Dispute form: invoice amount incorrect",),
    "feedback": (
        "Survey: 9/10, love the new app",
        "Survey: 4/10, hard to find the meter reading page",
        "Idea: let me pay with a bank transfer",
    ),
    "cancel": ("Cancellation form",),
}


# --- rendering: a planned moment as its channel's own record, through the adapter ---------------


class Renderer:
    """Turns planned moments into channel-native records and maps them with the real adapters."""

    def __init__(self, customers: list[Customer], seed: int) -> None:
        self.customers = customers
        self.seed = seed
        self.calls = CallAdapter()
        self.billing = BillingAdapter()
        self.email = EmailAdapter(customers={c.email: c.customer_id for c in customers})
        self._iso_days: dict[int, str] = {}
        # By kind of moment (habits: BILL, CALL, MAIL, WEB, SYSTEM, LATE, AGAIN).
        self.dispatch: tuple[Callable[[Plan, int], InteractionEvent], ...] = (
            self._billing_row,
            self._call_row,
            self._email,
            self._web_event,
            self._system_event,
            self._late,
            self._again,
        )

    def render(self, moment: Plan, number: int) -> InteractionEvent:
        """The event of one planned moment; `number` (its position in the whole simulation,
        from 1) makes the channel's record id, so ids never depend on who renders what."""
        return self.dispatch[moment[1]](moment, number)

    def _late(self, moment: Plan, number: int) -> InteractionEvent:
        """A record that arrives after its time: the record itself, at its arrival's number."""
        first = moment[3][0]
        return self.dispatch[first[1]](first, number)

    def _again(self, moment: Plan, number: int) -> InteractionEvent:
        """A record delivered once more: the same record as the first delivery, byte for byte
        (rendering depends on the plan and the number alone)."""
        first, first_number = moment[3]
        return self.dispatch[first[1]](first, first_number)

    def iso(self, ms: int, suffix: str = "Z") -> str:
        """`YYYY-MM-DDTHH:MM:SS` + suffix, the way exports write timestamps."""
        day, rest = divmod(ms, DAY)
        return day_prefix(day) + time_of_day(rest // 1000) + suffix

    def _billing_row(self, moment: Plan, number: int) -> InteractionEvent:
        ts, _, index, payload = moment
        customer = self.customers[index]
        record_type, product, reference, amount, due = payload[:5]
        since = customer.since_text
        if customer.product_since is not None:
            own = customer.product_since.get(product)
            if own is not None and ts >= own[0]:
                since = own[1]  # the contract's start: younger than the customer's
        row: dict[str, Any] = {
            "record_id": f"B{self.seed}-{number}",
            "customer_id": customer.customer_id,
            "record_type": record_type,
            "posted_at": ts,
            "product": product,
            "customer_since": since,
        }
        if reference is not None:
            row["reference"] = reference
        if amount is not None:
            row["amount"] = amount
            row["currency"] = CURRENCY
        if due is not None:
            row["due_date"] = day_prefix(due // DAY)[:10]
        if record_type == "METER_READING":
            row["reading"] = payload[5] if len(payload) > 5 else "0"
            row["unit"] = "kWh" if product == "electricity" else "m3"
            row["submitted_by"] = "customer"  # entered in the app
        elif record_type == "PAYMENT_FAILED":
            row["failure_reason"] = (
                "insufficient_funds" if amount and amount > 100 else "card_expired"
            )
        return self.billing.map_record(row)

    def _call_row(self, moment: Plan, number: int) -> InteractionEvent:
        ts, _, index, (intent, product, reference, extra, draw) = moment
        customer = self.customers[index]
        notes_pool = _CALL_NOTES.get(intent)
        if intent == "inquiry":
            disposition = _INQUIRY_CODES[int(draw * len(_INQUIRY_CODES))]
        else:
            disposition = _DISPOSITIONS[intent]
        if intent == "cancel":
            notes = extra[1]
        else:
            notes = notes_pool[int(draw * len(notes_pool))] if notes_pool else ""
        row = {
            "call_id": f"CL{self.seed}-{number}",
            "customer_id": customer.customer_id,
            "started_at": self.iso(ts),
            "queue": _QUEUES[intent],
            "disposition": disposition,
            "agent_id": f"A{number % 40:02d}",
            "duration_s": str(60 + number % 900),
            "notes": notes,
            "customer_since": customer.since_text,
        }
        if product is not None:
            row["product"] = product
        if reference is not None:
            row["reference"] = reference
        if intent == "move":
            row["new_address"] = extra
        elif intent == "meter":
            row["reading"] = extra
            row["submitted_by"] = "customer"
        return self.calls.map_record(row)

    def _email(self, moment: Plan, number: int) -> InteractionEvent:
        ts, _, index, (intent, product, reference, extra, draw) = moment
        customer = self.customers[index]
        templates = _EMAIL_CHOICES[reference is not None][intent]
        subject, body = templates[int(draw * len(templates))]
        if "{" in subject or "{" in body:
            values = {
                "product": (product or "account").replace("_", " "),
                "reference": reference or "",
                "address": extra if intent == "move" else "",
                "reason": extra[0] if intent == "cancel" else "",
                "reading": extra if intent == "meter" else "",
            }
            subject, body = subject.format(**values), body.format(**values)
        message = EmailMessage(
            message_id=f"{number}.{self.seed}@mail.sim.example",
            sender=customer.email,
            occurred_at=ts,
            subject=subject,
            body=body,
        )
        return self.email.map_record(message)

    def _web_event(self, moment: Plan, number: int) -> InteractionEvent:
        ts, _, index, (intent, product, reference, extra, draw) = moment
        customer = self.customers[index]
        obj: dict[str, Any] = {
            "event_id": f"web-{self.seed}-{number}",
            "customer_id": customer.customer_id,
            "channel": "web",
            "type": _WEB_TYPES[intent],
            "occurred_at": self.iso(ts, ".000+00:00"),
            "source": "web-portal",
        }
        if product is not None:
            obj["product"] = product
        if reference is not None:
            obj["reference"] = reference
        texts = _WEB_TEXT.get(intent)
        if texts:
            obj["text"] = texts[int(draw * len(texts))]
        if intent == "move":
            obj["attributes"] = {"new_address": extra, "form": "profile"}
        elif intent == "meter":
            obj["attributes"] = {
                "reading": extra,
                "form": "meter-reading",
                "submitted_by": "customer",
            }
        elif intent == "cancel":
            obj["attributes"] = {"reason": extra[0], "form": "cancellation"}
        return event_from_json(obj)

    def _system_event(self, moment: Plan, number: int) -> InteractionEvent:
        """A system's own JSON event: a smart meter's upload (channel `other`) or a change in
        the preference centre, made on the web or by phone (docs/design.md, section 11)."""
        ts, _, index, (intent, product, _reference, extra, _draw) = moment
        customer = self.customers[index]
        obj: dict[str, Any]
        if intent == "smart_meter":
            obj = {
                "event_id": f"meter-{self.seed}-{number}",
                "customer_id": customer.customer_id,
                "channel": "other",
                "type": "meter_reading_submitted",
                "occurred_at": self.iso(ts, ".000+00:00"),
                "source": "smart-meter",
                "product": product,
                "attributes": {
                    "submitted_by": "meter",
                    "reading": extra,
                    "unit": "kWh" if product == "electricity" else "m3",
                },
            }
        else:
            channel, engagement, preferred = extra
            attributes = {"form": "preferences"} if channel == "web" else {}
            if engagement is not None:
                attributes["engagement"] = engagement
            if preferred is not None:
                attributes["preferred_channel"] = preferred
            obj = {
                "event_id": f"pref-{self.seed}-{number}",
                "customer_id": customer.customer_id,
                "channel": channel,
                "type": "contact_preferences_changed",
                "occurred_at": self.iso(ts, ".000+00:00"),
                "source": "preference-centre",
                "customer_since": customer.since_text,
                "attributes": attributes,
            }
        return event_from_json(obj)


_DISPOSITIONS: Final = {
    "complaint": "COMPLAINT",
    "dispute": "DISPUTE",
    "feedback": "FEEDBACK",
    "move": "MOVE",
    "cancel": "CANCEL",
    "meter": "METER_READING",
    "complaint_resolved": "COMPLAINT_RESOLVED",
}
_QUEUES: Final = {
    "inquiry": "general",
    "complaint": "complaints",
    "dispute": "billing",
    "feedback": "general",
    "move": "moves",
    "cancel": "retention",
    "meter": "general",
    "complaint_resolved": "complaints",
}
_WEB_TYPES: Final = {
    "inquiry": "inquiry",
    "complaint": "complaint_filed",
    "dispute": "dispute_opened",
    "feedback": "feedback_given",
    "move": "address_changed",
    "cancel": "cancellation_requested",
    "meter": "meter_reading_submitted",
}


# --- export timestamps, fast (cached: simulations revisit the same days and seconds) -----------

_day_prefixes: dict[int, str] = {}
_times_of_day: dict[int, str] = {}


def day_prefix(day: int) -> str:
    """`YYYY-MM-DDT` of an epoch day number (cached: simulations revisit the same days)."""
    prefix = _day_prefixes.get(day)
    if prefix is None:
        prefix = _day_prefixes[day] = (EPOCH + timedelta(days=day)).isoformat()[:11]
    return prefix


def time_of_day(second: int) -> str:
    """`HH:MM:SS` of a second of the day (cached: at most 86,400 of them)."""
    text = _times_of_day.get(second)
    if text is None:
        text = _times_of_day[second] = (
            f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        )
    return text

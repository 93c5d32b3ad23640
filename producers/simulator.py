"""The journey simulator: a population of customers living through days of small moments.

`simulate(customers, days, seed)` plans what a realistic population does over
time (accounts opened, monthly invoices, payments of which some fail, dunning,
meter readings, disputes and complaints with resolutions of which some never
come, life events that end in cancellations, moves, feedback, inquiries over
every channel with a daily rhythm, omnichannel bursts, long-tenured customers)
and embeds each seed story of DESIGN.md section 5 at a configurable rate.
Customers respond to the engagement actions they would receive (`Effects`: an
explained first bill means fewer disputes, a thanked reading more readings), so
`moments report uplift` has a true effect to find, or none when the sizes are 0.

Every moment is rendered as the record its channel system would export (a
contact-centre row, an e-mail, a billing export row, a web JSON event) and sent
through the same adapters `moments ingest` and the collector use, so the
simulator exercises them. The output is deterministic for a seed (no wall clock,
no global random state) and ordered by `occurred_at` across all customers.

`write_simulation` writes the events as JSON lines (the form `moments replay`
reads), optionally in two processes; `publish_simulation` sends them through the
publisher SDK. This module never talks to Kafka itself.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from producers.adapters.billing import BillingAdapter
from producers.adapters.calls import CallAdapter
from producers.adapters.email import EmailAdapter, EmailMessage
from schemas.codec import event_from_json
from schemas.records import InteractionEvent

T = TypeVar("T")
DAY: Final = 86_400_000
HOUR: Final = 3_600_000
MINUTE: Final = 60_000
#: Where a simulation starts unless told otherwise (never the wall clock: runs are reproducible).
DEFAULT_START: Final = datetime(2026, 1, 5, tzinfo=UTC)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Planning runs 30 days at a time: follow-ups (payments, resolutions) are carried into later weeks.
_WINDOW: Final = 30 * DAY

# --- the population's habits -------------------------------------------------------------------


@dataclass(frozen=True)
class Effects:
    """How a customer's later behaviour responds to the engagement actions it would receive.

    Closes the loop for `moments report uplift` (DESIGN.md section 9): each size is a
    relative change in the behaviour the rule's `outcome` measures, for the customers who
    would get the action. `held_out(customer_id, rule_id)` says who would not; pass the
    engine's own membership function (the CLI passes `processors.engine.ids.in_holdout`
    with the holdout percent) so both agree. All zero (the default): no response at all,
    and the simulation is exactly what it was without effects.
    """

    #: Cut in the dispute and complaint rate in the 60 days after an explained first bill.
    explain_first_bill: float = 0.0
    #: Rise in the meter-reading rate in the 60 days after a thank-you for a reading.
    thank_meter_reading: float = 0.0
    #: Cut in the cancellations of a customer recognised for 5+ years of loyalty.
    recognize_tenure: float = 0.0
    held_out: Callable[[str, str], bool] | None = None

    def __post_init__(self) -> None:
        for name in ("explain_first_bill", "thank_meter_reading", "recognize_tenure"):
            size = getattr(self, name)
            high = 10.0 if name == "thank_meter_reading" else 1.0
            if not 0.0 <= size <= high:
                raise ValueError(f"effect {name} must be between 0 and {high:g}, got {size}")

    def receives(self, customer_id: str, rule_id: str) -> bool:
        """Whether the customer would get the rule's action (not in its control group)."""
        return self.held_out is None or not self.held_out(customer_id, rule_id)


#: How long an action's effect lasts in the simulation (the default pack's outcome windows).
_EFFECT_MS: Final = 60 * 86_400_000


@dataclass(frozen=True)
class Rates:
    """How often things happen, per customer per 30 days unless said otherwise."""

    inquiry: float = 0.7
    complaint: float = 0.04
    dispute: float = 0.025
    feedback: float = 0.08
    meter_reading: float = 0.35  # per metered product
    move: float = 0.012
    life_event: float = 0.008
    omnichannel_burst: float = 0.01
    new_product: float = 0.01
    payment_failure: float = 0.06  # per invoice
    retry_success: float = 0.6  # a failed payment paid within a week
    unresolved: float = 0.15  # cases that never get resolved
    new_customer_share: float = 0.3  # customers who join during the simulation
    story_rate: float = 0.05  # customers who live one seed story
    effects: Effects = Effects()  # how customers respond to the actions they would receive


#: Seed stories of DESIGN.md section 5 (and the ledger rule of issue 4), one per rule.
STORIES: Final = (
    "life_event_check_in",
    "explain_first_bill",
    "case_follow_up",
    "case_unresolved",
    "thank_meter_reading",
    "review_payment_demand",
    "recognize_tenure",
    "route_feedback",
    "propagate_address",
    "omnichannel_escalation",
    "repair_relationship",
)

#: `ends_ms` of a product nobody asked to cancel.
_OPEN: Final = 1 << 62

# product: (monthly amount low, high, metered, currency)
PRODUCTS: Final[dict[str, tuple[float, float, bool]]] = {
    "electricity": (45.0, 180.0, True),
    "gas": (35.0, 160.0, True),
    "broadband": (25.0, 60.0, False),
    "mobile": (10.0, 55.0, False),
    "credit_card": (40.0, 1400.0, False),
    "auto_insurance": (30.0, 95.0, False),
    "home_insurance": (15.0, 45.0, False),
}
_PRODUCT_NAMES: Final = tuple(PRODUCTS)
_PRODUCT_WEIGHTS: Final = tuple(accumulate((24, 18, 16, 14, 10, 10, 8)))
CURRENCY: Final = "EUR"


def _hour_table(weights: tuple[float, ...]) -> tuple[list[float], float]:
    cumulative = list(accumulate(weights))
    return cumulative, cumulative[-1]


# Daily rhythm: relative activity per hour of day (UTC), per channel.
_CALL_HOURS: Final = _hour_table(
    (0, 0, 0, 0, 0, 0, 0, 0, 4, 8, 10, 10, 7, 8, 9, 9, 8, 6, 4, 2, 0, 0, 0, 0)
)
_EMAIL_HOURS: Final = _hour_table(
    (1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 5, 7, 7, 7, 6, 6, 6, 6, 6, 5, 4, 5, 6, 6, 4, 2)
)
_WEB_HOURS: Final = _hour_table(
    (2, 1, 0.5, 0.3, 0.3, 0.5, 1.5, 3, 4, 5, 5, 5, 6, 6, 5, 5, 5, 6, 7, 9, 10, 9, 6, 4)
)

# Channel kinds of a planned moment.
_BILL, _CALL, _MAIL, _WEB = 0, 1, 2, 3

# intent: cumulative weights over (call, email, web)
_CHANNEL_MIX: Final[dict[str, tuple[float, float, float]]] = {
    "inquiry": (0.45, 0.70, 1.0),
    "complaint": (0.50, 0.85, 1.0),
    "dispute": (0.50, 0.90, 1.0),
    "feedback": (0.15, 0.40, 1.0),
    "move": (0.30, 0.50, 1.0),
    "cancel": (0.55, 0.85, 1.0),
    "meter": (0.05, 0.20, 1.0),
}

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
_CANCEL_REASONS: Final = (
    ("moving abroad", "Customer is moving abroad and wants to cancel"),
    ("bereavement", "Partner passed away; closing the joint account"),
    ("job loss", "Lost job, cannot afford the contract, wants to cancel"),
    ("separation", "Separating from partner, cancelling the shared contract"),
    ("retirement", "Retiring and cutting costs, wants to cancel"),
)
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
    ),
    "dispute": (
        (
            "[{reference}] Disputed invoice",
            "I dispute the amount on my last {product} bill, the reading is wrong.",
        ),
        ("[{reference}] Wrong amount on my bill", "I was overcharged this month, please correct."),
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
_STREETS: Final = ("Harbour Road", "Elm Street", "Quay Street", "Mill Lane", "Station Road")
_TOWNS: Final = ("Leith", "York", "Bristol", "Cork", "Ghent", "Utrecht", "Porto")
_FIRST: Final = ("ana", "ben", "chloe", "dan", "eva", "finn", "gita", "hugo", "ines", "jon")
_LAST: Final = ("smith", "garcia", "okafor", "chen", "berg", "rossi", "novak", "kaur", "dubois")


# --- planning ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Product:
    name: str
    opened_ms: int
    bill_offset: int  # day of the month cycle the invoice runs (0..27)
    base_amount: float
    metered: bool
    ends_ms: int = _OPEN
    invoices: int = 0
    last_invoice: str | None = None


@dataclass(slots=True)
class _Customer:
    index: int
    customer_id: str
    email: str
    since: date
    since_text: str
    joins_ms: int  # when the relationship starts (before the start for existing customers)
    activity: float  # contact-rate multiplier (quiet, normal, chatty)
    products: list[_Product] = field(default_factory=list)
    story: str | None = None
    story_ms: int = 0
    address: str = ""
    explained: list[int] = field(default_factory=list)  # when first bills were explained
    thanked: int | None = None  # when a meter reading was last thanked


# A planned moment: (occurred_at, channel kind, customer index, payload).
Plan = tuple[int, int, int, tuple[Any, ...]]


class _World:
    """The planned population; `moments()` yields its rendered, adapted events in time order."""

    def __init__(
        self,
        customers: int,
        days: int,
        seed: int,
        start_ms: int,
        rates: Rates,
        first_index: int = 1,
    ) -> None:
        if customers < 0 or days < 0:
            raise ValueError("customers and days must not be negative")
        self.rng = random.Random(seed)
        self.seed = seed
        self.rates = rates
        self.start_ms = start_ms
        self.end_ms = start_ms + days * DAY
        self.days = days
        self.cases = 0
        self.customers = [self._customer(first_index + i) for i in range(customers)]
        self._happening_tables: dict[float, tuple[list[float], float]] = {}
        # In the order of the weights in `_happenings`.
        self._happen: tuple[Callable[[_Customer, int, int, list[Plan]], None], ...] = (
            self._inquiry,
            self._complaint,
            self._dispute,
            self._feedback,
            self._burst,
            self._move,
            self._life_event,
            self._new_product,
        )
        self.renderer = _Renderer(self)

    # -- population

    def _customer(self, number: int) -> _Customer:
        rng, rates = self.rng, self.rates
        index = number - 1
        customer_id = f"CUST-{number:06d}"
        email = f"{self._pick(_FIRST)}.{self._pick(_LAST)}{number}@mail.example"
        if rng.random() < rates.new_customer_share and self.days > 0:
            joins_ms = self.start_ms + int(rng.random() * self.days * DAY)
        else:
            # Tenure: many a few years, a long tail back to 25 years.
            years = min(25.0, rng.expovariate(1 / 5.0))
            joins_ms = self.start_ms - int(years * 365.25 * DAY) - DAY
        since = (_EPOCH + timedelta(milliseconds=joins_ms)).date()
        draw = rng.random()
        activity = 0.4 if draw < 0.4 else (1.0 if draw < 0.85 else 2.5)
        customer = _Customer(
            index, customer_id, email, since, since.isoformat(), joins_ms, activity
        )
        customer.address = self._address()
        for name in self._pick_products(self._pick((1, 1, 2, 2, 2, 3))):
            customer.products.append(self._product(name, joins_ms))
        if rng.random() < rates.story_rate:
            customer.story = STORIES[self._below(len(STORIES))]
            span = max(1, self.days - 12)
            customer.story_ms = self.start_ms + int(rng.random() * span * DAY)
            customer.story_ms = max(customer.story_ms, joins_ms + 45 * DAY)
            if customer.story == "recognize_tenure" and joins_ms > self.start_ms - 6 * 365 * DAY:
                customer.joins_ms = self.start_ms - int((6 + rng.random() * 10) * 365.25 * DAY)
                customer.since = (_EPOCH + timedelta(milliseconds=customer.joins_ms)).date()
                customer.since_text = customer.since.isoformat()
                for product in customer.products:
                    product.opened_ms = customer.joins_ms
        return customer

    def _pick_products(self, count: int) -> list[str]:
        chosen: list[str] = []
        while len(chosen) < count:
            name = _PRODUCT_NAMES[
                bisect_right(_PRODUCT_WEIGHTS, self.rng.random() * _PRODUCT_WEIGHTS[-1])
            ]
            if name not in chosen:
                chosen.append(name)
        return chosen

    def _product(self, name: str, opened_ms: int) -> _Product:
        low, high, metered = PRODUCTS[name]
        return _Product(
            name=name,
            opened_ms=opened_ms,
            bill_offset=self._below(28),
            base_amount=low + (high - low) * self.rng.random(),
            metered=metered,
        )

    def _address(self) -> str:
        return (
            f"{1 + self._below(199)} {self._pick(_STREETS)}, {self._pick(_TOWNS)} "
            f"{self._pick('ABCDEFGHJK')}{1 + self._below(98)} {1 + self._below(8)}"
            f"{self._pick('ABDEFGHJLNPQRSTUWXYZ')}{self._pick('ABDEFGHJLNPQRSTUWXYZ')}"
        )

    # -- time helpers

    def _at_hour(self, day_ms: int, hours: tuple[list[float], float]) -> int:
        """A moment on the day starting at `day_ms`, following a channel's daily rhythm."""
        cumulative, total = hours
        hour = bisect_right(cumulative, self.rng.random() * total)
        return day_ms + min(hour, 23) * HOUR + self._within(HOUR)

    def _below(self, n: int) -> int:
        """A uniform int in [0, n) (random.randrange is several times slower)."""
        return int(self.rng.random() * n)

    def _pick(self, options: Sequence[T]) -> T:
        """One of `options`, uniformly."""
        return options[int(self.rng.random() * len(options))]

    def _within(self, span_ms: int) -> int:
        """A random offset below `span_ms` in whole seconds (exports carry second precision)."""
        return int(self.rng.random() * (span_ms // 1000)) * 1000

    def _open_hours(self, ms: int) -> int:
        """`ms`, or the next moment the call centre is open (08:00-20:00 UTC)."""
        hour = ms % DAY // HOUR
        if 8 <= hour < 20:
            return ms
        day = ms - ms % DAY + (DAY if hour >= 20 else 0)
        return day + 8 * HOUR + self._within(HOUR)

    def _day_of(self, ms: int) -> int:
        return ms - ms % DAY

    def _contact_time(self, window_start: int, window_ms: int, channel: int) -> int:
        day = self._day_of(window_start + int(self.rng.random() * window_ms))
        if channel == _CALL:
            weekday = (day // DAY + 3) % 7  # 1970-01-01 was a Thursday
            if weekday >= 5 and self.rng.random() < 0.7:
                day += (7 - weekday) * DAY  # the call centre is quiet at weekends
            return self._at_hour(day, _CALL_HOURS)
        return self._at_hour(day, _EMAIL_HOURS if channel == _MAIL else _WEB_HOURS)

    def _channel(self, intent: str) -> int:
        mix = _CHANNEL_MIX[intent]
        draw = self.rng.random()
        return _CALL if draw < mix[0] else (_MAIL if draw < mix[1] else _WEB)

    def _case(self, prefix: str) -> str:
        self.cases += 1
        return f"{prefix}-{self.seed}-{self.cases}"

    # -- one planning window

    def _happenings(self, activity: float) -> tuple[list[float], float]:
        """Cumulative rates (per 30 days) of what a customer of this activity level may do."""
        table = self._happening_tables.get(activity)
        if table is None:
            r = self.rates
            weights = (
                r.inquiry * activity,
                r.complaint * activity,
                r.dispute * activity,
                r.feedback * activity,
                r.omnichannel_burst * activity,
                r.move,
                r.life_event,
                r.new_product,
            )
            cumulative = list(accumulate(weights))
            table = self._happening_tables[activity] = (cumulative, cumulative[-1])
        return table

    def plan_window(self, w0: int, w1: int, out: list[Plan]) -> None:
        """Append what every customer starts doing in [w0, w1) (follow-ups may come later).

        All a customer's happenings in a window are one Poisson draw over the summed rates,
        each then picks what it is: cheap enough for hundreds of thousands of customers.
        """
        rng = self.rng
        meter_rate = self.rates.meter_reading
        happen = self._happen
        for customer in self.customers:
            joins = customer.joins_ms
            if joins >= w1:
                continue
            if joins >= w0:
                for product in customer.products:
                    self._open(customer, product, joins, out)
            active_from = joins if joins > w0 else w0
            scale = (w1 - active_from) / (30 * DAY)
            boost = 1.0
            if customer.thanked is not None and customer.thanked + _EFFECT_MS >= active_from:
                boost += self.rates.effects.thank_meter_reading
            for product in customer.products:
                self._bill(customer, product, w0, w1, out)
                chance = meter_rate * scale * boost
                if product.metered and product.ends_ms > w1 and rng.random() < chance:
                    ts = self._meter_reading(customer, product, active_from, w1, out)
                    self._thank(customer, ts)
            cumulative, total = self._happenings(customer.activity)
            for _ in range(_poisson(rng, total * scale)):
                kind = bisect_right(cumulative, rng.random() * total)
                happen[min(kind, len(happen) - 1)](customer, active_from, w1, out)
            if customer.story is not None and w0 <= customer.story_ms < w1:
                self._story(customer, customer.story, customer.story_ms, out)

    # -- how customers respond to the actions they would receive (Effects)

    def _thank(self, customer: _Customer, ts: int) -> None:
        effects = self.rates.effects
        if not effects.thank_meter_reading:
            return
        if effects.receives(customer.customer_id, "thank_meter_reading") and (
            customer.thanked is None or ts > customer.thanked
        ):
            customer.thanked = ts

    def _calmed(self, customer: _Customer, ts: int) -> bool:
        """True when an explained first bill keeps this dispute or complaint from happening."""
        effect = self.rates.effects.explain_first_bill
        if not effect or not any(t < ts <= t + _EFFECT_MS for t in customer.explained):
            return False
        return self.rng.random() < effect

    def _kept(self, customer: _Customer, ts: int) -> bool:
        """True when recognised loyalty keeps this customer from asking to cancel."""
        effects = self.rates.effects
        if not effects.recognize_tenure or ts - customer.joins_ms < 5 * 365.25 * DAY:
            return False
        if not effects.receives(customer.customer_id, "recognize_tenure"):
            return False
        return self.rng.random() < effects.recognize_tenure

    def _inquiry(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        self._contact(customer, "inquiry", w0, w1, out)

    def _feedback(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        self._contact(customer, "feedback", w0, w1, out)

    # -- moments

    def _open(self, customer: _Customer, product: _Product, at: int, out: list[Plan]) -> None:
        ts = self._at_hour(self._day_of(at), _WEB_HOURS)
        product.opened_ms = ts
        out.append((ts, _BILL, customer.index, ("ACCOUNT_OPENED", product.name, None, None, None)))

    def _bill(
        self, customer: _Customer, product: _Product, w0: int, w1: int, out: list[Plan]
    ) -> None:
        # Invoices run every 30 days from the product's billing offset, at the 02:00 batch.
        first = self._day_of(product.opened_ms) + (product.bill_offset + 30) * DAY + 2 * HOUR
        if first >= w1 or product.ends_ms <= w0:
            return
        n = max(0, math.ceil((w0 - first) / (30 * DAY)))
        issued = first + n * 30 * DAY
        random = self.rng.random
        while issued < w1 and issued < product.ends_ms:
            self._invoice(customer, product, issued + int(random() * 3600) * 1000, out)
            issued += 30 * DAY

    def _invoice(self, customer: _Customer, product: _Product, ts: int, out: list[Plan]) -> None:
        rng, rates = self.rng, self.rates
        product.invoices += 1
        effects = rates.effects
        if (
            product.invoices == 1
            and effects.explain_first_bill
            and effects.receives(customer.customer_id, "explain_first_bill")
        ):
            customer.explained.append(ts)
        reference = f"INV-{self.seed}-{customer.index + 1}-{product.invoices}"
        product.last_invoice = reference
        amount = round(product.base_amount * (0.8 + 0.4 * rng.random()), 2)
        due = ts + 14 * DAY
        index = customer.index
        out.append((ts, _BILL, index, ("INVOICE", product.name, reference, amount, due)))
        debit = due - due % DAY + 5 * HOUR + int(rng.random() * 7200) * 1000
        if rng.random() >= rates.payment_failure:
            out.append((debit, _BILL, index, ("PAYMENT", product.name, reference, amount, None)))
            return
        out.append((debit, _BILL, index, ("PAYMENT_FAILED", product.name, reference, amount, None)))
        if rng.random() < rates.retry_success:
            paid = debit + (2 + self._below(5)) * DAY + self._within(8 * HOUR)
            out.append((paid, _BILL, index, ("PAYMENT", product.name, reference, amount, None)))
            return
        demand = self._day_of(due) + 7 * DAY + 9 * HOUR
        out.append(
            (
                demand,
                _BILL,
                index,
                ("PAYMENT_DEMAND", product.name, reference, amount, demand + 14 * DAY),
            )
        )
        if rng.random() < 0.7:
            paid = demand + (1 + self._below(10)) * DAY + self._within(10 * HOUR)
            out.append((paid, _BILL, index, ("PAYMENT", product.name, reference, amount, None)))

    def _meter_reading(
        self, customer: _Customer, product: _Product, w0: int, w1: int, out: list[Plan]
    ) -> int:
        draw = self.rng.random()
        reading = str(1000 + self._below(60000))
        mix = _CHANNEL_MIX["meter"]
        if draw < 0.3:  # recorded by billing (app, smart-meter upload)
            ts = self._contact_time(w0, w1 - w0, _WEB)
            payload: tuple[Any, ...] = ("METER_READING", product.name, None, None, None, reading)
            out.append((ts, _BILL, customer.index, payload))
            return ts
        draw = self.rng.random()
        channel = _CALL if draw < mix[0] else (_MAIL if draw < mix[1] else _WEB)
        ts = self._contact_time(w0, w1 - w0, channel)
        self._say(customer, channel, "meter", ts, product.name, None, reading, out)
        return ts

    def _contact(self, customer: _Customer, intent: str, w0: int, w1: int, out: list[Plan]) -> None:
        channel = self._channel(intent)
        ts = self._contact_time(w0, w1 - w0, channel)
        self._say(customer, channel, intent, ts, self._any_product(customer), None, None, out)

    def _any_product(self, customer: _Customer) -> str | None:
        """A product the customer talks about: one they hold and have not asked to cancel."""
        held = [p for p in customer.products if p.ends_ms == _OPEN]
        return self._pick(held).name if held else None

    def _complaint(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        channel = self._channel("complaint")
        ts = self._contact_time(w0, w1 - w0, channel)
        if customer.explained and self._calmed(customer, ts):
            return
        reference = self._case("CMP")
        product = self._any_product(customer)
        self._say(customer, channel, "complaint", ts, product, reference, None, out)
        delay = self._resolution_delay()
        if delay is not None:
            resolved = self._at_hour(self._day_of(ts + delay), _CALL_HOURS)
            resolved = self._open_hours(max(resolved, ts + HOUR))
            self._say(
                customer, _CALL, "complaint_resolved", resolved, product, reference, None, out
            )

    def _dispute(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        billed = [p for p in customer.products if p.last_invoice]
        if not billed:
            return
        product = self._pick(billed)
        channel = self._channel("dispute")
        ts = self._contact_time(w0, w1 - w0, channel)
        if customer.explained and self._calmed(customer, ts):
            return
        reference = self._case("DSP")
        self._say(customer, channel, "dispute", ts, product.name, reference, None, out)
        delay = self._resolution_delay()
        if delay is not None:
            resolved = max(self._day_of(ts + delay) + 16 * HOUR, ts + HOUR)
            payload = ("DISPUTE_RESOLVED", product.name, reference, None, None)
            out.append((resolved, _BILL, customer.index, payload))

    def _resolution_delay(self) -> int | None:
        """None for a case nobody ever resolves; else mostly within two days, some much later."""
        rng = self.rng
        if rng.random() < self.rates.unresolved:
            return None
        if rng.random() < 0.7:
            return self._within(40 * HOUR) + HOUR
        return (3 + self._below(12)) * DAY

    def _move(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        customer.address = self._address()
        channel = self._channel("move")
        ts = self._contact_time(w0, w1 - w0, channel)
        self._say(customer, channel, "move", ts, None, None, customer.address, out)

    def _life_event(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        if not customer.products:
            return
        rng = self.rng
        reason, notes = _CANCEL_REASONS[self._below(len(_CANCEL_REASONS))]
        product = self._pick(customer.products)
        channel = self._channel("cancel")
        ts = self._contact_time(w0, w1 - w0, channel)
        if self._kept(customer, ts):
            return
        if reason == "moving abroad" and rng.random() < 0.5:
            customer.address = self._address()
            move_at = max(ts - (1 + self._below(5)) * DAY, w0)
            self._say(customer, _WEB, "move", move_at, None, None, customer.address, out)
        self._say(customer, channel, "cancel", ts, product.name, None, (reason, notes), out)
        product.ends_ms = min(product.ends_ms, ts + 30 * DAY)
        if rng.random() < 0.8:  # the rest change their mind, or the closure is never recorded
            closed = ("ACCOUNT_CLOSED", product.name, None, None, None)
            out.append((product.ends_ms, _BILL, customer.index, closed))

    def _burst(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        """An omnichannel burst: 3-4 contacts within two days over at least two channels."""
        rng = self.rng
        ts = self._contact_time(w0, w1 - w0, _WEB)
        channels = [_WEB, _CALL, _MAIL, _CALL][: 3 + self._below(2)]
        product = self._any_product(customer)
        for i, channel in enumerate(channels):
            at = ts + i * (2 + self._below(14)) * HOUR
            if channel == _CALL:
                at = self._open_hours(at)
            intent = "complaint" if i == 2 and rng.random() < 0.3 else "inquiry"
            reference = self._case("CMP") if intent == "complaint" else None
            self._say(customer, channel, intent, at, product, reference, None, out)

    def _new_product(self, customer: _Customer, w0: int, w1: int, out: list[Plan]) -> None:
        if len(customer.products) >= 4:
            return
        held = {p.name for p in customer.products}
        options = [name for name in _PRODUCT_NAMES if name not in held]
        if not options:
            return
        product = self._product(self._pick(options), w0 + int(self.rng.random() * (w1 - w0)))
        customer.products.append(product)
        self._open(customer, product, product.opened_ms, out)

    # -- seed stories (DESIGN.md section 5), one per customer who has one

    def _story(self, customer: _Customer, story: str, ts: int, out: list[Plan]) -> None:
        index = customer.index
        payload: tuple[Any, ...]
        day = self._day_of(ts)
        if story == "life_event_check_in":
            if customer.products:
                reason = _CANCEL_REASONS[0]
                held = customer.products[0].name
                self._say(customer, _CALL, "cancel", day + 10 * HOUR, held, None, reason, out)
        elif story == "explain_first_bill":
            names = {p.name for p in customer.products}
            name = next((n for n in _PRODUCT_NAMES if n not in names), None)
            if name is not None:
                opened = self._product(name, day + 11 * HOUR)
                customer.products.append(opened)
                out.append(
                    (day + 11 * HOUR, _BILL, index, ("ACCOUNT_OPENED", name, None, None, None))
                )
                self._invoice(customer, opened, day + 6 * DAY + 2 * HOUR, out)
        elif story in ("case_follow_up", "case_unresolved"):
            reference = self._case("DSP")
            product = self._any_product(customer)
            self._say(customer, _CALL, "dispute", day + 9 * HOUR, product, reference, None, out)
            if story == "case_follow_up":
                payload = ("DISPUTE_RESOLVED", product, reference, None, None)
                out.append((day + 30 * HOUR, _BILL, index, payload))
            else:  # a later contact moves the customer's partition past the 48 h deadline
                self._say(customer, _WEB, "feedback", day + 80 * HOUR, product, None, None, out)
        elif story in ("thank_meter_reading", "review_payment_demand"):
            reading = str(1000 + self._below(60000))
            self._say(customer, _WEB, "meter", day + 19 * HOUR, "electricity", None, reading, out)
            if story == "review_payment_demand":
                amount = round(80 + self.rng.random() * 300, 2)
                demand = day + 3 * DAY + 9 * HOUR
                reference = f"INV-{self.seed}-{index + 1}-S"
                payload = ("PAYMENT_DEMAND", "electricity", reference, amount, demand + 14 * DAY)
                out.append((demand, _BILL, index, payload))
        elif story == "recognize_tenure":
            self._say(customer, _CALL, "inquiry", day + 11 * HOUR, None, None, None, out)
        elif story == "route_feedback":
            self._say(customer, _MAIL, "feedback", day + 20 * HOUR, None, None, None, out)
        elif story == "propagate_address":
            customer.address = self._address()
            self._say(customer, _CALL, "move", day + 15 * HOUR, None, None, customer.address, out)
        elif story == "omnichannel_escalation":
            for i, channel in enumerate((_CALL, _MAIL, _WEB)):
                self._say(
                    customer, channel, "inquiry", day + (9 + 5 * i) * HOUR, None, None, None, out
                )
        elif story == "repair_relationship":
            name = customer.products[0].name if customer.products else "mobile"
            amount = round(40 + self.rng.random() * 100, 2)
            reference = f"INV-{self.seed}-{index + 1}-R"
            for i, record_type in enumerate(("PAYMENT_FAILED", "PAYMENT_FAILED", "PAYMENT_DEMAND")):
                due = day + (i + 20) * DAY if record_type == "PAYMENT_DEMAND" else None
                payload = (record_type, name, reference, amount, due)
                out.append((day + i * 4 * DAY + 6 * HOUR, _BILL, index, payload))
            self._say(
                customer,
                _WEB,
                "complaint",
                day + 9 * DAY + 20 * HOUR,
                name,
                self._case("CMP"),
                None,
                out,
            )

    # -- what a customer says on a channel

    def _say(
        self,
        customer: _Customer,
        channel: int,
        intent: str,
        ts: int,
        product: str | None,
        reference: str | None,
        extra: Any,
        out: list[Plan],
    ) -> None:
        out.append(
            (ts, channel, customer.index, (intent, product, reference, extra, self.rng.random()))
        )

    # -- running

    def windows(self) -> Iterator[list[Plan]]:
        """The planned moments window by window, each window's list ordered by time.

        Everything planned in a window happens at or after its start, so emitting a
        window's due moments before planning the next keeps the output globally ordered.
        """
        pending: list[Plan] = []
        key = itemgetter(0)
        w0 = self.start_ms
        while w0 < self.end_ms:
            w1 = min(w0 + _WINDOW, self.end_ms)
            self.plan_window(w0, w1, pending)
            pending.sort(key=key)
            cut = bisect_left(pending, w1, key=key)
            due, pending = pending[:cut], pending[cut:]
            yield due
            w0 = w1

    def moments(self) -> Iterator[InteractionEvent]:
        """Every planned moment, rendered and adapted, ordered by occurred_at."""
        render = self.renderer.render
        number = 0
        for due in self.windows():
            for moment in due:
                number += 1
                yield render(moment, number)


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth; the rates here are small)."""
    if lam <= 0:
        return 0
    limit = math.exp(-lam)
    count, product = 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


# --- rendering: a planned moment as its channel's own record, through the adapter ---------------


class _Renderer:
    """Turns planned moments into channel-native records and maps them with the real adapters."""

    def __init__(self, world: _World) -> None:
        self.world = world
        self.customers = world.customers
        self.seed = world.seed
        self.calls = CallAdapter()
        self.billing = BillingAdapter()
        self.email = EmailAdapter(customers={c.email: c.customer_id for c in world.customers})
        self._iso_days: dict[int, str] = {}
        self.dispatch: tuple[Callable[[Plan, int], InteractionEvent], ...] = (
            self._billing_row,
            self._call_row,
            self._email,
            self._web_event,
        )

    def render(self, moment: Plan, number: int) -> InteractionEvent:
        """The event of one planned moment; `number` (its position in the whole simulation,
        from 1) makes the channel's record id, so ids never depend on who renders what."""
        return self.dispatch[moment[1]](moment, number)

    def iso(self, ms: int, suffix: str = "Z") -> str:
        """`YYYY-MM-DDTHH:MM:SS` + suffix, the way exports write timestamps."""
        day, rest = divmod(ms, DAY)
        return _day_prefix(day) + _time_of_day(rest // 1000) + suffix

    def _billing_row(self, moment: Plan, number: int) -> InteractionEvent:
        ts, _, index, payload = moment
        customer = self.customers[index]
        record_type, product, reference, amount, due = payload[:5]
        row: dict[str, Any] = {
            "record_id": f"B{self.seed}-{number}",
            "customer_id": customer.customer_id,
            "record_type": record_type,
            "posted_at": ts,
            "product": product,
            "customer_since": customer.since_text,
        }
        if reference is not None:
            row["reference"] = reference
        if amount is not None:
            row["amount"] = amount
            row["currency"] = CURRENCY
        if due is not None:
            row["due_date"] = _day_prefix(due // DAY)[:10]
        if record_type == "METER_READING":
            row["reading"] = payload[5] if len(payload) > 5 else "0"
            row["unit"] = "kWh" if product == "electricity" else "m3"
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
        return self.calls.map_record(row)

    def _email(self, moment: Plan, number: int) -> InteractionEvent:
        ts, _, index, (intent, product, reference, extra, draw) = moment
        customer = self.customers[index]
        templates = EMAIL_TEMPLATES[intent]
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
            obj["attributes"] = {"reading": extra, "form": "meter-reading"}
        elif intent == "cancel":
            obj["attributes"] = {"reason": extra[0], "form": "cancellation"}
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


# --- public entry points -----------------------------------------------------------------------


def _start_ms(start: datetime | int | None) -> int:
    if start is None:
        start = DEFAULT_START
    if isinstance(start, datetime):
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        ms = (start - _EPOCH) // timedelta(milliseconds=1)
    else:
        ms = int(start)
    return ms - ms % DAY  # days run midnight to midnight UTC


def simulate(
    customers: int,
    days: int,
    seed: int,
    *,
    start: datetime | int | None = None,
    story_rate: float | None = None,
    rates: Rates | None = None,
) -> Iterator[InteractionEvent]:
    """Interaction events of `customers` over `days` from `start`, deterministic for `seed`.

    `story_rate` is the share of customers who live one seed story (default 5%).
    Events come ordered by occurred_at; ids derive from the channels' own record ids.
    """
    chosen = _rates(rates, story_rate)
    world = _World(customers, days, seed, _start_ms(start), chosen)
    return world.moments()


@dataclass
class SimulationSummary:
    """What a simulation produced and how fast."""

    events: int = 0
    seconds: float = 0.0
    by_channel: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class EventPublisher(Protocol):
    """What `publish_simulation` needs of `producers.publisher.Publisher`."""

    def publish(self, event: InteractionEvent) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


def _rates(rates: Rates | None, story_rate: float | None) -> Rates:
    chosen = rates or Rates()
    if story_rate is not None:
        if not 0.0 <= story_rate <= 1.0:
            raise ValueError(f"story_rate must be between 0 and 1, got {story_rate}")
        chosen = Rates(**{**chosen.__dict__, "story_rate": story_rate})
    return chosen


def write_simulation(
    path: Path,
    customers: int,
    days: int,
    seed: int,
    *,
    start: datetime | int | None = None,
    story_rate: float | None = None,
    rates: Rates | None = None,
    workers: int | None = None,
) -> SimulationSummary:
    """Write the simulation as InteractionEvent JSON lines (what `moments replay` reads).

    `workers` > 1 renders in that many forked processes (each plans the whole, cheap,
    deterministic population and renders its share of chunks); the file is byte for byte
    the same as with one. None: two workers for large runs when a second core is idle.
    """
    chosen = _rates(rates, story_rate)
    start_ms = _start_ms(start)
    if workers is None:
        workers = _default_workers(customers * days)
    began = time.perf_counter()
    if workers <= 1:
        counts = _write_share(Path(path), customers, days, seed, start_ms, chosen, 0, 1)
    else:
        counts = _write_parallel(Path(path), customers, days, seed, start_ms, chosen, workers)
    summary = SimulationSummary(seconds=time.perf_counter() - began)
    for (channel, event_type), count in counts.items():
        summary.events += count
        summary.by_channel[channel] += count
        summary.by_type[event_type] += count
    return summary


_channel_and_type = attrgetter("channel", "type")


def _default_workers(customer_days: int) -> int:
    """Two processes for a large run when a second core is idle (each plans the population
    again, so a busy second core makes it slower, not faster); else one."""
    cores = os.cpu_count() or 1
    if customer_days < 500_000 or cores < 2:
        return 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        return 1
    return 2 if busy < cores - 1.2 else 1


# Rendering work is split into chunks of this many moments (parallel writes).
_CHUNK: Final = 32_768


def _write_share(
    out_path: Path,
    customers: int,
    days: int,
    seed: int,
    start_ms: int,
    rates: Rates,
    share: int,
    shares: int,
) -> Counter[tuple[str, str]]:
    """Render chunks `share`, `share + shares`, ... into `out_path` (one file) or, when
    `shares` > 1, into `out_path/<chunk>.jsonl`; return counts by (channel, type)."""
    world = _World(customers, days, seed, start_ms, rates)
    with _no_cyclic_gc():
        return _render_share(world, out_path, share, shares)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: nothing here makes cycles (refcounting frees it
    all), and full collections over millions of planned moments cost a third of the run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _render_share(
    world: _World, out_path: Path, share: int, shares: int
) -> Counter[tuple[str, str]]:
    dispatch = world.renderer.dispatch
    counts: Counter[tuple[str, str]] = Counter()
    base = 0
    chunk_no = 0
    single = shares == 1
    out = out_path.open("w", encoding="utf-8", newline="\n") if single else None
    try:
        for due in world.windows():
            for low in range(0, len(due), _CHUNK):
                if chunk_no % shares == share:
                    events = _render_chunk(dispatch, due[low : low + _CHUNK], base + low + 1)
                    counts.update(map(_channel_and_type, events))
                    lines = [json_line(event) for event in events]
                    lines.append("")
                    text = "\n".join(lines)
                    if out is not None:
                        out.write(text)
                    else:
                        (out_path / f"{chunk_no:08d}.jsonl").write_text(text, encoding="utf-8")
                chunk_no += 1
            base += len(due)
    finally:
        if out is not None:
            out.close()
    return counts


def _render_chunk(
    dispatch: tuple[Callable[[Plan, int], InteractionEvent], ...],
    moments: list[Plan],
    first_number: int,
) -> list[InteractionEvent]:
    """Render a chunk channel by channel (each adapter's code and data stay hot in the CPU
    caches: about 10% faster than in time order), then put the events back in time order."""
    events: list[Any] = [None] * len(moments)
    for kind, render in enumerate(dispatch):
        for position, moment in enumerate(moments):
            if moment[1] == kind:
                events[position] = render(moment, first_number + position)
    return events


def _write_parallel(
    path: Path,
    customers: int,
    days: int,
    seed: int,
    start_ms: int,
    rates: Rates,
    workers: int,
) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    with tempfile.TemporaryDirectory(prefix=".moments-sim-", dir=path.parent or None) as tmp:
        parts = Path(tmp)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(
                    _write_share, parts, customers, days, seed, start_ms, rates, share, workers
                )
                for share in range(workers)
            ]
            for future in futures:
                counts.update(future.result())
        with path.open("wb") as out:
            for part in sorted(parts.iterdir()):
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
    return counts


def publish_simulation(
    publisher: EventPublisher,
    customers: int,
    days: int,
    seed: int,
    *,
    start: datetime | int | None = None,
    story_rate: float | None = None,
    rates: Rates | None = None,
) -> SimulationSummary:
    """Publish the simulation through the publisher SDK; returns after the broker acknowledged."""
    summary = SimulationSummary()
    began = time.perf_counter()
    events = simulate(customers, days, seed, start=start, story_rate=story_rate, rates=rates)
    with _no_cyclic_gc():
        for event in events:
            publisher.publish(event)
            summary.events += 1
            summary.by_channel[event.channel] += 1
            summary.by_type[event.type] += 1
    publisher.flush()
    summary.seconds = time.perf_counter() - began
    return summary


# --- the JSON form, fast ------------------------------------------------------------------------

_encode_text: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
_day_prefixes: dict[int, str] = {}
_times_of_day: dict[int, str] = {}


def _day_prefix(day: int) -> str:
    """`YYYY-MM-DDT` of an epoch day number (cached: simulations revisit the same days)."""
    prefix = _day_prefixes.get(day)
    if prefix is None:
        prefix = _day_prefixes[day] = (_EPOCH + timedelta(days=day)).isoformat()[:11]
    return prefix


def _time_of_day(second: int) -> str:
    """`HH:MM:SS` of a second of the day (cached: at most 86,400 of them)."""
    text = _times_of_day.get(second)
    if text is None:
        text = _times_of_day[second] = (
            f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        )
    return text


def _iso_ms(ms: int) -> str:
    """The codec's timestamp form, quoted: `"YYYY-MM-DDTHH:MM:SS.mmm+00:00"`."""
    day, rest = divmod(ms, DAY)
    seconds, millis = divmod(rest, 1000)
    fraction = '.000+00:00"' if millis == 0 else f'.{millis:03d}+00:00"'
    return '"' + _day_prefix(day) + _time_of_day(seconds) + fraction


def _opt_text(value: str | None) -> str:
    return "null" if value is None else _encode_text(value)


def json_line(event: InteractionEvent) -> str:
    """`schemas.codec.to_json_line(event)`, byte for byte, without the generic machinery.

    Every simulated event goes through this, so it is written for speed; a unit
    test checks it against the codec on every simulated event.
    """
    attributes = event.attributes
    if attributes:
        attrs = ",".join(
            f"{_encode_text(k)}:{_encode_text(attributes[k])}" for k in sorted(attributes)
        )
    else:
        attrs = ""
    amount = event.amount
    due = event.due_date
    since = event.customer_since
    return (
        f'{{"event_id":{_encode_text(event.event_id)},'
        f'"customer_id":{_encode_text(event.customer_id)},'
        f'"channel":"{event.channel}","type":{_encode_text(event.type)},'
        f'"occurred_at":{_iso_ms(event.occurred_at)},'
        f'"source":{_encode_text(event.source)},'
        f'"product":{_opt_text(event.product)},'
        f'"reference":{_opt_text(event.reference)},'
        f'"amount":{"null" if amount is None else float.__repr__(float(amount))},'
        f'"currency":{_opt_text(event.currency)},'
        f'"due_date":{"null" if due is None else chr(34) + due.isoformat() + chr(34)},'
        f'"customer_since":{"null" if since is None else chr(34) + since.isoformat() + chr(34)},'
        f'"text":{_opt_text(event.text)},'
        f'"attributes":{{{attrs}}}}}'
    )


# --- the seed stories, one customer each, for `moments demo` -------------------------------------

#: The customer who lives each seed story in `seed_stories` (rule id -> customer id).
STORY_CUSTOMERS: Final = {rule: f"demo-{rule.replace('_', '-')}" for rule in STORIES}


def seed_stories(start_ms: int) -> list[InteractionEvent]:
    """One customer per default rule, each living exactly that rule's story, from `start_ms`.

    The records are what the channels would export (call rows, e-mails, billing rows,
    web JSON) and go through the adapters. Ordered by occurred_at; deterministic.
    """
    t0 = start_ms
    c = STORY_CUSTOMERS
    calls, billing = CallAdapter(), BillingAdapter()
    email = EmailAdapter(
        customers={
            "hana.novak@mail.example": c["case_follow_up"],
            "omar.said@mail.example": c["review_payment_demand"],
            "lea.martin@mail.example": c["route_feedback"],
            "ivo.berg@mail.example": c["omnichannel_escalation"],
        }
    )
    ten_years_ago = (_EPOCH + timedelta(milliseconds=t0 - 9 * 365 * DAY)).date().isoformat()

    def iso(ms: int) -> str:
        return (_EPOCH + timedelta(milliseconds=ms)).isoformat()

    def call(
        call_id: str, customer: str, at: int, disposition: str, notes: str, **extra: str
    ) -> InteractionEvent:
        row = {
            "call_id": call_id,
            "customer_id": customer,
            "started_at": iso(at),
            "queue": "general",
            "disposition": disposition,
            "notes": notes,
        }
        return calls.map_record({**row, **extra})

    def bill(
        record_id: str, customer: str, at: int, record_type: str, product: str, **extra: Any
    ) -> InteractionEvent:
        row = {
            "record_id": record_id,
            "customer_id": customer,
            "record_type": record_type,
            "posted_at": at,
            "product": product,
        }
        return billing.map_record({**row, **extra})

    def mail(message_id: str, sender: str, at: int, subject: str, body: str) -> InteractionEvent:
        return email.map_record(EmailMessage(message_id, sender, at, subject, body))

    def web(
        event_id: str, customer: str, at: int, event_type: str, **extra: Any
    ) -> InteractionEvent:
        obj = {
            "event_id": event_id,
            "customer_id": customer,
            "channel": "web",
            "type": event_type,
            "occurred_at": iso(at),
            "source": "web-portal",
        }
        return event_from_json({**obj, **extra})

    money = {"currency": CURRENCY}
    events = [
        # A cancellation by phone: is a life event behind it?
        call(
            "demo-1",
            c["life_event_check_in"],
            t0 + 1 * HOUR,
            "CANCEL",
            "Moving abroad with the family next month; wants to cancel broadband",
            product="broadband",
        ),
        # A new gas account and its first invoice: explain it before it lands.
        bill("demo-2", c["explain_first_bill"], t0 + 2 * HOUR, "ACCOUNT_OPENED", "gas"),
        bill(
            "demo-3",
            c["explain_first_bill"],
            t0 + 2 * DAY,
            "INVOICE",
            "gas",
            reference="INV-D-1",
            amount=96.4,
            due_date=iso(t0 + 16 * DAY)[:10],
            **money,
        ),
        # A complaint by e-mail, resolved by a call-back the next day.
        mail(
            "demo-4@mail.example",
            "hana.novak@mail.example",
            t0 + 3 * HOUR,
            "[CMP-90001] Engineer did not turn up",
            "I waited all day and nobody came. This is unacceptable.",
        ),
        call(
            "demo-5",
            c["case_follow_up"],
            t0 + 20 * HOUR,
            "COMPLAINT_RESOLVED",
            "Apologised, new appointment booked, credit applied",
            reference="CMP-90001",
        ),
        # A dispute by phone that nobody resolves; a payment two days later moves time on.
        call(
            "demo-6",
            c["case_unresolved"],
            t0 + 4 * HOUR,
            "DISPUTE",
            "Disputes the estimated electricity bill",
            reference="DSP-90002",
            product="electricity",
        ),
        bill(
            "demo-7",
            c["case_unresolved"],
            t0 + 4 * HOUR + 52 * HOUR,
            "PAYMENT",
            "electricity",
            reference="INV-D-2",
            amount=40.0,
            **money,
        ),
        # A meter reading on the website: thank the customer.
        web(
            "demo-8",
            c["thank_meter_reading"],
            t0 + 5 * HOUR,
            "meter_reading_submitted",
            product="gas",
            attributes={"reading": "04521", "form": "meter-reading"},
        ),
        # A meter reading by e-mail answered three days later by a payment demand.
        mail(
            "demo-9@mail.example",
            "omar.said@mail.example",
            t0 + 6 * HOUR,
            "Meter reading",
            "My electricity meter reading today is 40213.",
        ),
        bill(
            "demo-10",
            c["review_payment_demand"],
            t0 + 6 * HOUR + 3 * DAY,
            "PAYMENT_DEMAND",
            "electricity",
            reference="INV-D-3",
            amount=212.0,
            due_date=iso(t0 + 17 * DAY)[:10],
            **money,
        ),
        # A customer of nine years calls with a question.
        call(
            "demo-11",
            c["recognize_tenure"],
            t0 + 7 * HOUR,
            "TARIFF_QUESTION",
            "Asked whether a cheaper tariff exists",
            customer_since=ten_years_ago,
        ),
        # A suggestion by e-mail: route it to its owner.
        mail(
            "demo-12@mail.example",
            "lea.martin@mail.example",
            t0 + 8 * HOUR,
            "A suggestion",
            "It would be nice to get a text before the direct debit is taken.",
        ),
        # Two products, then a move by phone: update both.
        bill("demo-13", c["propagate_address"], t0 + 1 * HOUR, "ACCOUNT_OPENED", "electricity"),
        bill("demo-14", c["propagate_address"], t0 + 90 * MINUTE, "ACCOUNT_OPENED", "broadband"),
        call(
            "demo-15",
            c["propagate_address"],
            t0 + 9 * HOUR,
            "MOVE",
            "Moved last week",
            new_address="12 Harbour Road, Leith EH6 6JJ",
        ),
        # Three contacts in a day over three channels: one owner takes over.
        call("demo-16", c["omnichannel_escalation"], t0 + 10 * HOUR, "GENERAL", "Router issue"),
        mail(
            "demo-17@mail.example",
            "ivo.berg@mail.example",
            t0 + 14 * HOUR,
            "Still no internet",
            "The router still does not connect, what should I do?",
        ),
        web("demo-18", c["omnichannel_escalation"], t0 + 20 * HOUR, "inquiry", text="Chat"),
    ]
    # Failed payments and a demand pile up: negatives outnumber positives by 4.
    for i, record_type in enumerate(
        ("PAYMENT_FAILED", "PAYMENT_FAILED", "PAYMENT_DEMAND", "PAYMENT_FAILED")
    ):
        extra: dict[str, Any] = {"reference": "INV-D-4", "amount": 58.9, **money}
        if record_type == "PAYMENT_DEMAND":
            extra["due_date"] = iso(t0 + 30 * DAY)[:10]
        at = t0 + (1 + 3 * i) * DAY + 6 * HOUR
        events.append(
            bill(f"demo-{19 + i}", c["repair_relationship"], at, record_type, "mobile", **extra)
        )
    events.sort(key=lambda event: event.occurred_at)
    return events

"""The population's habits: how often things happen, what customers hold and how they
respond to actions (`Rates`, `Effects`), how their records reach us (late, twice), the
daily rhythms and channel mix, and the customer and product records the planner keeps
(`Customer`, `Product`, `Plan`), and what a seed story asks of the planner (`Planner`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import accumulate
from typing import Any, Final, Protocol

from producers.simulator.teams import Teams

DAY: Final = 86_400_000
HOUR: Final = 3_600_000
MINUTE: Final = 60_000
SECOND: Final = 1_000
#: Where a simulation starts unless told otherwise (never the wall clock: runs are reproducible).
DEFAULT_START: Final = datetime(2026, 1, 5, tzinfo=UTC)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Planning runs 30 days at a time: follow-ups (payments, resolutions) are carried into later weeks.
WINDOW: Final = 30 * DAY

# --- the population's habits -------------------------------------------------------------------


@dataclass(frozen=True)
class Effects:
    """How a customer's later behaviour responds to the engagement actions it would receive.

    Closes the loop for `moments report uplift` (docs/design.md, section 9): each size is a
    relative change in the behaviour the rule's `outcome` measures, for the customers who
    would get the action. `held_out(customer_id, rule_id)` says who would not; pass the
    engine's own membership function (the CLI passes `processors.engine.ids.in_holdout`
    with the holdout percent) so both agree. The planner also leaves out whom the engine
    would not treat (docs/design.md, section 11): a customer opted out of engagement, a
    first bill with no `account_opened` of its product in the 90 days before, a reading
    a meter uploaded. All zero (the default): no response at all, and the simulation is
    exactly what it was without effects.
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
EFFECT_MS: Final = 60 * 86_400_000
#: A first invoice is a new product's when its `account_opened` came at most this long before.
NEW_WITHIN_MS: Final = 90 * 86_400_000


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
    # The teams that act on the actions (docs/design.md 12); None: every action counts as
    # done at once and no status event is sent (the simulation before teams).
    teams: Teams | None = None
    # Revision 3 (docs/design.md, section 11): the customer's truth as systems report it.
    first_bill_surprise: float = 0.12  # new products' first bills disputed or complained of
    smart_meter: float = 0.4  # customers whose meters upload a reading every month
    smart_meter_readings: float = 0.2  # their own readings, relative to `meter_reading`
    preferences: float = 0.015  # contact preference changes (opt out, opt in, channel)
    unreferenced_case: float = 0.08  # disputes and complaints opened naming no reference
    unreferenced_resolution: float = 0.1  # resolutions of a referenced case naming none
    repeated_case: float = 0.12  # cases raised again on other channels, same reference
    multi_cancel: float = 0.35  # life events that cancel 2-3 products in one sitting
    product_since: float = 0.5  # new products whose billing rows carry their own start
    # How records reach us, per record: their file position is their arrival.
    late: float = 0.02  # delivered 1 s - 5 min after their time, behind later records
    too_late: float = 0.0005  # delivered 8-10 days after their time
    redelivered: float = 0.003  # delivered again, 1-12 hours after the first delivery
    redelivered_late: float = 0.0003  # delivered again, about 10 days after the first


#: Seed stories of the default pack (docs/design.md 5.2), one per rule.
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
OPEN: Final = 1 << 62

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
PRODUCT_NAMES: Final = tuple(PRODUCTS)
PRODUCT_WEIGHTS: Final = tuple(accumulate((24, 18, 16, 14, 10, 10, 8)))
CURRENCY: Final = "EUR"


def _hour_table(weights: tuple[float, ...]) -> tuple[list[float], float]:
    cumulative = list(accumulate(weights))
    return cumulative, cumulative[-1]


# Daily rhythm: relative activity per hour of day (UTC), per channel.
CALL_HOURS: Final = _hour_table(
    (0, 0, 0, 0, 0, 0, 0, 0, 4, 8, 10, 10, 7, 8, 9, 9, 8, 6, 4, 2, 0, 0, 0, 0)
)
EMAIL_HOURS: Final = _hour_table(
    (1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 5, 7, 7, 7, 6, 6, 6, 6, 6, 5, 4, 5, 6, 6, 4, 2)
)
WEB_HOURS: Final = _hour_table(
    (2, 1, 0.5, 0.3, 0.3, 0.5, 1.5, 3, 4, 5, 5, 5, 6, 6, 5, 5, 5, 6, 7, 9, 10, 9, 6, 4)
)

# Kinds of a planned moment: its channel's record (BILL .. WEB), a system's own JSON event
# (SYSTEM: the preference centre, smart meters), or a delivery out of time order of one of
# those (LATE: `(arrival, LATE, index, (plan,))`; AGAIN: `(arrival, AGAIN, index, (plan,
# number))`, the record `number` delivered once more).
BILL, CALL, MAIL, WEB, SYSTEM, LATE, AGAIN = 0, 1, 2, 3, 4, 5, 6

# intent: cumulative weights over (call, email, web)
CHANNEL_MIX: Final[dict[str, tuple[float, float, float]]] = {
    "inquiry": (0.45, 0.70, 1.0),
    "complaint": (0.50, 0.85, 1.0),
    "dispute": (0.50, 0.90, 1.0),
    "feedback": (0.15, 0.40, 1.0),
    "move": (0.30, 0.50, 1.0),
    "cancel": (0.55, 0.85, 1.0),
    "meter": (0.05, 0.20, 1.0),
}
CANCEL_REASONS: Final = (
    ("moving abroad", "Customer is moving abroad and wants to cancel"),
    ("bereavement", "Partner passed away; closing the joint account"),
    ("job loss", "Lost job, cannot afford the contract, wants to cancel"),
    ("separation", "Separating from partner, cancelling the shared contract"),
    ("retirement", "Retiring and cutting costs, wants to cancel"),
)

STREETS: Final = ("Harbour Road", "Elm Street", "Quay Street", "Mill Lane", "Station Road")
TOWNS: Final = ("Leith", "York", "Bristol", "Cork", "Ghent", "Utrecht", "Porto")
FIRST_NAMES: Final = ("ana", "ben", "chloe", "dan", "eva", "finn", "gita", "hugo", "ines", "jon")
SURNAMES: Final = ("smith", "garcia", "okafor", "chen", "berg", "rossi", "novak", "kaur", "dubois")


# --- a customer, as the planner keeps it ------------------------------------------------------


@dataclass(slots=True)
class Product:
    """A product a simulated customer holds, with its billing cycle."""

    name: str
    opened_ms: int
    bill_offset: int  # day of the month cycle the invoice runs (0..27)
    base_amount: float
    metered: bool
    ends_ms: int = OPEN
    invoices: int = 0
    last_invoice: str | None = None
    announced: bool = False  # its `account_opened` is in the simulation


@dataclass(slots=True)
class Customer:
    """A simulated customer: who they are, what they hold and how they have been treated."""

    index: int
    customer_id: str
    email: str
    since: date
    since_text: str
    joins_ms: int  # when the relationship starts (before the start for existing customers)
    activity: float  # contact-rate multiplier (quiet, normal, chatty)
    products: list[Product] = field(default_factory=list)
    story: str | None = None
    story_ms: int = 0
    address: str = ""
    explained: list[int] = field(default_factory=list)  # when first bills were explained
    thanked: int | None = None  # when a meter reading was last thanked
    smart_meter: bool = False  # metered products upload a reading every month
    # Engagement consent as (when, opted out), in time order; empty: never said.
    consent: list[tuple[int, bool]] = field(default_factory=list)
    # product -> (opened at, its start date) for billing rows that carry the product's own
    # start as customer_since (a contract start, younger than the customer's).
    product_since: dict[str, tuple[int, str]] | None = None

    def opted_out(self, ts: int) -> bool:
        """Whether the customer has opted out of engagement at `ts`."""
        for at, out in reversed(self.consent):
            if at <= ts:
                return out
        return False


# A planned moment: (occurred_at, channel kind, customer index, payload).
Plan = tuple[int, int, int, tuple[Any, ...]]


class Planner(Protocol):
    """What a seed story (`stories.plan_story`) asks of the planner (`world.World`)."""

    rng: random.Random
    seed: int

    def day_of(self, ms: int) -> int:
        """Midnight UTC of the day of `ms`."""
        ...

    def below(self, n: int) -> int:
        """A uniform int in [0, n)."""
        ...

    def new_address(self) -> str:
        """A random postal address."""
        ...

    def new_case(self, prefix: str) -> str:
        """The next case reference (`prefix-seed-n`)."""
        ...

    def make_product(self, name: str, opened_ms: int) -> Product:
        """A product record, opened at `opened_ms`, with a random billing cycle and amount."""
        ...

    def open_product(self, customer: Customer, name: str, ts: int, out: list[Plan]) -> Product:
        """Give the customer a new product at `ts` and plan its `account_opened`."""
        ...

    def any_product(self, customer: Customer) -> str | None:
        """A product the customer holds and has not asked to cancel."""
        ...

    def invoice(self, customer: Customer, product: Product, ts: int, out: list[Plan]) -> None:
        """Plan an invoice at `ts` and what follows it (payment, or failure and dunning)."""
        ...

    def say(
        self,
        customer: Customer,
        channel: int,
        intent: str,
        ts: int,
        product: str | None,
        reference: str | None,
        extra: Any,
        out: list[Plan],
    ) -> None:
        """Plan a contact of the customer's on `channel` (rendered in its channel's words)."""
        ...

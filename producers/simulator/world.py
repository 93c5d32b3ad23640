"""Scenario and event generation: `World` plans what a population does, window by window
(invoices, payments, contacts, cases and their resolutions, moves, life events, bursts),
how customers respond to the actions they would receive, and yields the rendered events
in time order; `simulate` is its entry point."""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from typing import Any, TypeVar

from producers.simulator.habits import (
    BILL,
    CALL,
    CALL_HOURS,
    CANCEL_REASONS,
    CHANNEL_MIX,
    DAY,
    DEFAULT_START,
    EFFECT_MS,
    EMAIL_HOURS,
    EPOCH,
    FIRST_NAMES,
    HOUR,
    MAIL,
    OPEN,
    PRODUCT_NAMES,
    PRODUCT_WEIGHTS,
    PRODUCTS,
    STORIES,
    STREETS,
    SURNAMES,
    TOWNS,
    WEB,
    WEB_HOURS,
    WINDOW,
    Customer,
    Plan,
    Product,
    Rates,
)
from producers.simulator.render import Renderer
from producers.simulator.stories import plan_story
from schemas.records import InteractionEvent

T = TypeVar("T")


class World:
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
        self._happen: tuple[Callable[[Customer, int, int, list[Plan]], None], ...] = (
            self._inquiry,
            self._complaint,
            self._dispute,
            self._feedback,
            self._burst,
            self._move,
            self._life_event,
            self._new_product,
        )
        self.renderer = Renderer(self.customers, seed)

    # -- population

    def _customer(self, number: int) -> Customer:
        rng, rates = self.rng, self.rates
        index = number - 1
        customer_id = f"CUST-{number:06d}"
        email = f"{self._pick(FIRST_NAMES)}.{self._pick(SURNAMES)}{number}@mail.example"
        if rng.random() < rates.new_customer_share and self.days > 0:
            joins_ms = self.start_ms + int(rng.random() * self.days * DAY)
        else:
            # Tenure: many a few years, a long tail back to 25 years.
            years = min(25.0, rng.expovariate(1 / 5.0))
            joins_ms = self.start_ms - int(years * 365.25 * DAY) - DAY
        since = (EPOCH + timedelta(milliseconds=joins_ms)).date()
        draw = rng.random()
        activity = 0.4 if draw < 0.4 else (1.0 if draw < 0.85 else 2.5)
        customer = Customer(index, customer_id, email, since, since.isoformat(), joins_ms, activity)
        customer.address = self.new_address()
        for name in self._pick_products(self._pick((1, 1, 2, 2, 2, 3))):
            customer.products.append(self.make_product(name, joins_ms))
        if rng.random() < rates.story_rate:
            customer.story = STORIES[self.below(len(STORIES))]
            span = max(1, self.days - 12)
            customer.story_ms = self.start_ms + int(rng.random() * span * DAY)
            customer.story_ms = max(customer.story_ms, joins_ms + 45 * DAY)
            if customer.story == "recognize_tenure" and joins_ms > self.start_ms - 6 * 365 * DAY:
                customer.joins_ms = self.start_ms - int((6 + rng.random() * 10) * 365.25 * DAY)
                customer.since = (EPOCH + timedelta(milliseconds=customer.joins_ms)).date()
                customer.since_text = customer.since.isoformat()
                for product in customer.products:
                    product.opened_ms = customer.joins_ms
        return customer

    def _pick_products(self, count: int) -> list[str]:
        chosen: list[str] = []
        while len(chosen) < count:
            name = PRODUCT_NAMES[
                bisect_right(PRODUCT_WEIGHTS, self.rng.random() * PRODUCT_WEIGHTS[-1])
            ]
            if name not in chosen:
                chosen.append(name)
        return chosen

    def make_product(self, name: str, opened_ms: int) -> Product:
        low, high, metered = PRODUCTS[name]
        return Product(
            name=name,
            opened_ms=opened_ms,
            bill_offset=self.below(28),
            base_amount=low + (high - low) * self.rng.random(),
            metered=metered,
        )

    def new_address(self) -> str:
        return (
            f"{1 + self.below(199)} {self._pick(STREETS)}, {self._pick(TOWNS)} "
            f"{self._pick('ABCDEFGHJK')}{1 + self.below(98)} {1 + self.below(8)}"
            f"{self._pick('ABDEFGHJLNPQRSTUWXYZ')}{self._pick('ABDEFGHJLNPQRSTUWXYZ')}"
        )

    # -- time helpers

    def _at_hour(self, day_ms: int, hours: tuple[list[float], float]) -> int:
        """A moment on the day starting at `day_ms`, following a channel's daily rhythm."""
        cumulative, total = hours
        hour = bisect_right(cumulative, self.rng.random() * total)
        return day_ms + min(hour, 23) * HOUR + self._within(HOUR)

    def below(self, n: int) -> int:
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

    def day_of(self, ms: int) -> int:
        return ms - ms % DAY

    def _contact_time(self, window_start: int, window_ms: int, channel: int) -> int:
        day = self.day_of(window_start + int(self.rng.random() * window_ms))
        if channel == CALL:
            weekday = (day // DAY + 3) % 7  # 1970-01-01 was a Thursday
            if weekday >= 5 and self.rng.random() < 0.7:
                day += (7 - weekday) * DAY  # the call centre is quiet at weekends
            return self._at_hour(day, CALL_HOURS)
        return self._at_hour(day, EMAIL_HOURS if channel == MAIL else WEB_HOURS)

    def _channel(self, intent: str) -> int:
        mix = CHANNEL_MIX[intent]
        draw = self.rng.random()
        return CALL if draw < mix[0] else (MAIL if draw < mix[1] else WEB)

    def new_case(self, prefix: str) -> str:
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
            if customer.thanked is not None and customer.thanked + EFFECT_MS >= active_from:
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
                plan_story(self, customer, customer.story, customer.story_ms, out)

    # -- how customers respond to the actions they would receive (Effects)

    def _thank(self, customer: Customer, ts: int) -> None:
        effects = self.rates.effects
        if not effects.thank_meter_reading:
            return
        if effects.receives(customer.customer_id, "thank_meter_reading") and (
            customer.thanked is None or ts > customer.thanked
        ):
            customer.thanked = ts

    def _calmed(self, customer: Customer, ts: int) -> bool:
        """True when an explained first bill keeps this dispute or complaint from happening."""
        effect = self.rates.effects.explain_first_bill
        if not effect or not any(t < ts <= t + EFFECT_MS for t in customer.explained):
            return False
        return self.rng.random() < effect

    def _kept(self, customer: Customer, ts: int) -> bool:
        """True when recognised loyalty keeps this customer from asking to cancel."""
        effects = self.rates.effects
        if not effects.recognize_tenure or ts - customer.joins_ms < 5 * 365.25 * DAY:
            return False
        if not effects.receives(customer.customer_id, "recognize_tenure"):
            return False
        return self.rng.random() < effects.recognize_tenure

    def _inquiry(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        self._contact(customer, "inquiry", w0, w1, out)

    def _feedback(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        self._contact(customer, "feedback", w0, w1, out)

    # -- moments

    def _open(self, customer: Customer, product: Product, at: int, out: list[Plan]) -> None:
        ts = self._at_hour(self.day_of(at), WEB_HOURS)
        product.opened_ms = ts
        out.append((ts, BILL, customer.index, ("ACCOUNT_OPENED", product.name, None, None, None)))

    def _bill(
        self, customer: Customer, product: Product, w0: int, w1: int, out: list[Plan]
    ) -> None:
        # Invoices run every 30 days from the product's billing offset, at the 02:00 batch.
        first = self.day_of(product.opened_ms) + (product.bill_offset + 30) * DAY + 2 * HOUR
        if first >= w1 or product.ends_ms <= w0:
            return
        n = max(0, math.ceil((w0 - first) / (30 * DAY)))
        issued = first + n * 30 * DAY
        random = self.rng.random
        while issued < w1 and issued < product.ends_ms:
            self.invoice(customer, product, issued + int(random() * 3600) * 1000, out)
            issued += 30 * DAY

    def invoice(self, customer: Customer, product: Product, ts: int, out: list[Plan]) -> None:
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
        out.append((ts, BILL, index, ("INVOICE", product.name, reference, amount, due)))
        debit = due - due % DAY + 5 * HOUR + int(rng.random() * 7200) * 1000
        if rng.random() >= rates.payment_failure:
            out.append((debit, BILL, index, ("PAYMENT", product.name, reference, amount, None)))
            return
        out.append((debit, BILL, index, ("PAYMENT_FAILED", product.name, reference, amount, None)))
        if rng.random() < rates.retry_success:
            paid = debit + (2 + self.below(5)) * DAY + self._within(8 * HOUR)
            out.append((paid, BILL, index, ("PAYMENT", product.name, reference, amount, None)))
            return
        demand = self.day_of(due) + 7 * DAY + 9 * HOUR
        out.append(
            (
                demand,
                BILL,
                index,
                ("PAYMENT_DEMAND", product.name, reference, amount, demand + 14 * DAY),
            )
        )
        if rng.random() < 0.7:
            paid = demand + (1 + self.below(10)) * DAY + self._within(10 * HOUR)
            out.append((paid, BILL, index, ("PAYMENT", product.name, reference, amount, None)))

    def _meter_reading(
        self, customer: Customer, product: Product, w0: int, w1: int, out: list[Plan]
    ) -> int:
        draw = self.rng.random()
        reading = str(1000 + self.below(60000))
        if draw < 0.3:  # recorded by billing (app, smart-meter upload)
            ts = self._contact_time(w0, w1 - w0, WEB)
            payload: tuple[Any, ...] = ("METER_READING", product.name, None, None, None, reading)
            out.append((ts, BILL, customer.index, payload))
            return ts
        channel = self._channel("meter")
        ts = self._contact_time(w0, w1 - w0, channel)
        self.say(customer, channel, "meter", ts, product.name, None, reading, out)
        return ts

    def _contact(self, customer: Customer, intent: str, w0: int, w1: int, out: list[Plan]) -> None:
        channel = self._channel(intent)
        ts = self._contact_time(w0, w1 - w0, channel)
        self.say(customer, channel, intent, ts, self.any_product(customer), None, None, out)

    def any_product(self, customer: Customer) -> str | None:
        """A product the customer talks about: one they hold and have not asked to cancel."""
        held = [p for p in customer.products if p.ends_ms == OPEN]
        return self._pick(held).name if held else None

    def _complaint(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        channel = self._channel("complaint")
        ts = self._contact_time(w0, w1 - w0, channel)
        if customer.explained and self._calmed(customer, ts):
            return
        reference = self.new_case("CMP")
        product = self.any_product(customer)
        self.say(customer, channel, "complaint", ts, product, reference, None, out)
        delay = self._resolution_delay()
        if delay is not None:
            resolved = self._at_hour(self.day_of(ts + delay), CALL_HOURS)
            resolved = self._open_hours(max(resolved, ts + HOUR))
            self.say(customer, CALL, "complaint_resolved", resolved, product, reference, None, out)

    def _dispute(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        billed = [p for p in customer.products if p.last_invoice]
        if not billed:
            return
        product = self._pick(billed)
        channel = self._channel("dispute")
        ts = self._contact_time(w0, w1 - w0, channel)
        if customer.explained and self._calmed(customer, ts):
            return
        reference = self.new_case("DSP")
        self.say(customer, channel, "dispute", ts, product.name, reference, None, out)
        delay = self._resolution_delay()
        if delay is not None:
            resolved = max(self.day_of(ts + delay) + 16 * HOUR, ts + HOUR)
            payload = ("DISPUTE_RESOLVED", product.name, reference, None, None)
            out.append((resolved, BILL, customer.index, payload))

    def _resolution_delay(self) -> int | None:
        """None for a case nobody ever resolves; else mostly within two days, some much later."""
        rng = self.rng
        if rng.random() < self.rates.unresolved:
            return None
        if rng.random() < 0.7:
            return self._within(40 * HOUR) + HOUR
        return (3 + self.below(12)) * DAY

    def _move(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        customer.address = self.new_address()
        channel = self._channel("move")
        ts = self._contact_time(w0, w1 - w0, channel)
        self.say(customer, channel, "move", ts, None, None, customer.address, out)

    def _life_event(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        if not customer.products:
            return
        rng = self.rng
        reason, notes = CANCEL_REASONS[self.below(len(CANCEL_REASONS))]
        product = self._pick(customer.products)
        channel = self._channel("cancel")
        ts = self._contact_time(w0, w1 - w0, channel)
        if self._kept(customer, ts):
            return
        if reason == "moving abroad" and rng.random() < 0.5:
            customer.address = self.new_address()
            move_at = max(ts - (1 + self.below(5)) * DAY, w0)
            self.say(customer, WEB, "move", move_at, None, None, customer.address, out)
        self.say(customer, channel, "cancel", ts, product.name, None, (reason, notes), out)
        product.ends_ms = min(product.ends_ms, ts + 30 * DAY)
        if rng.random() < 0.8:  # the rest change their mind, or the closure is never recorded
            closed = ("ACCOUNT_CLOSED", product.name, None, None, None)
            out.append((product.ends_ms, BILL, customer.index, closed))

    def _burst(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        """An omnichannel burst: 3-4 contacts within two days over at least two channels."""
        rng = self.rng
        ts = self._contact_time(w0, w1 - w0, WEB)
        channels = [WEB, CALL, MAIL, CALL][: 3 + self.below(2)]
        product = self.any_product(customer)
        for i, channel in enumerate(channels):
            at = ts + i * (2 + self.below(14)) * HOUR
            if channel == CALL:
                at = self._open_hours(at)
            intent = "complaint" if i == 2 and rng.random() < 0.3 else "inquiry"
            reference = self.new_case("CMP") if intent == "complaint" else None
            self.say(customer, channel, intent, at, product, reference, None, out)

    def _new_product(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        if len(customer.products) >= 4:
            return
        held = {p.name for p in customer.products}
        options = [name for name in PRODUCT_NAMES if name not in held]
        if not options:
            return
        product = self.make_product(self._pick(options), w0 + int(self.rng.random() * (w1 - w0)))
        customer.products.append(product)
        self._open(customer, product, product.opened_ms, out)

    # -- what a customer says on a channel

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
            w1 = min(w0 + WINDOW, self.end_ms)
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


def start_day_ms(start: datetime | int | None) -> int:
    if start is None:
        start = DEFAULT_START
    if isinstance(start, datetime):
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        ms = (start - EPOCH) // timedelta(milliseconds=1)
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
    chosen = effective_rates(rates, story_rate)
    world = World(customers, days, seed, start_day_ms(start), chosen)
    return world.moments()


def effective_rates(rates: Rates | None, story_rate: float | None) -> Rates:
    chosen = rates or Rates()
    if story_rate is not None:
        if not 0.0 <= story_rate <= 1.0:
            raise ValueError(f"story_rate must be between 0 and 1, got {story_rate}")
        chosen = Rates(**{**chosen.__dict__, "story_rate": story_rate})
    return chosen

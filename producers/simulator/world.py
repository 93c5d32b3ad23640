"""Scenario and event generation: `World` plans what a population does, window by window
(invoices, payments, meter readings and uploads, contacts, cases and their resolutions,
moves, life events, bursts, consent), how customers respond to the actions they would
receive, and how the records reach us (in time order, but some late and some twice); it
yields the rendered events in arrival order; `simulate` is its entry point."""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from heapq import heappop, heappush
from itertools import accumulate
from operator import itemgetter
from typing import Any, TypeVar

from producers.simulator.habits import (
    AGAIN,
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
    LATE,
    MAIL,
    MINUTE,
    NEW_WITHIN_MS,
    OPEN,
    PRODUCT_NAMES,
    PRODUCT_WEIGHTS,
    PRODUCTS,
    SECOND,
    STORIES,
    STREETS,
    SURNAMES,
    SYSTEM,
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
from producers.simulator.teams import act
from schemas.records import InteractionEvent

T = TypeVar("T")


class World:
    """The planned population; `moments()` yields its rendered, adapted events in arrival order."""

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
        # How records reach us draws from its own stream: planning stays what it is.
        self.arrivals = random.Random(seed * 7919 + 104_729)
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
        customer.smart_meter = rng.random() < rates.smart_meter
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

    def open_product(self, customer: Customer, name: str, ts: int, out: list[Plan]) -> Product:
        """Give the customer a new product at `ts` and plan its `account_opened` (so its first
        invoice is a new product's, docs/design.md section 11). A customer who was already
        ours may show the product's own, younger start on its billing rows."""
        product = self.make_product(name, ts)
        product.announced = True
        customer.products.append(product)
        if self.day_of(customer.joins_ms) < self.day_of(ts) and (
            self.rng.random() < self.rates.product_since
        ):
            start = (EPOCH + timedelta(milliseconds=ts)).date().isoformat()
            if customer.product_since is None:
                customer.product_since = {}
            customer.product_since[name] = (ts, start)
        out.append((ts, BILL, customer.index, ("ACCOUNT_OPENED", name, None, None, None)))
        return product

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
        rng, rates = self.rng, self.rates
        meter_rate = rates.meter_reading
        smart_rate = meter_rate * rates.smart_meter_readings
        preferences = rates.preferences
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
            # Consent first: what the customer says about contact holds for the window.
            if preferences and rng.random() < preferences * scale:
                self._preferences(customer, active_from, w1, out)
            boost = 1.0
            thanked = customer.thanked
            if thanked is not None and thanked < w1 and thanked + EFFECT_MS >= active_from:
                boost += rates.effects.thank_meter_reading
            smart = customer.smart_meter
            for product in customer.products:
                self._bill(customer, product, w0, w1, out)
                if not product.metered or product.ends_ms <= w1:
                    continue
                if smart:
                    self._uploads(customer, product, w0, w1, out)
                chance = (smart_rate if smart else meter_rate) * scale * boost
                if rng.random() < chance:
                    ts = self._meter_reading(customer, product, active_from, w1, out)
                    self._thank(customer, ts)
            cumulative, total = self._happenings(customer.activity)
            for _ in range(_poisson(rng, total * scale)):
                kind = bisect_right(cumulative, rng.random() * total)
                happen[min(kind, len(happen) - 1)](customer, active_from, w1, out)
            if customer.story is not None and w0 <= customer.story_ms < w1:
                plan_story(self, customer, customer.story, customer.story_ms, out)

    # -- how customers respond to the actions they would receive (Effects)

    def _receives(self, customer: Customer, rule: str, ts: int) -> bool:
        """Whether the customer would get the rule's engagement action at `ts`: not in its
        control group, and not opted out (docs/design.md, section 11)."""
        if customer.consent and customer.opted_out(ts):
            return False
        return self.rates.effects.receives(customer.customer_id, rule)

    def _done_at(self, customer: Customer, rule: str, destination: str, ts: int) -> int | None:
        """When the team completes the action `rule` raised at `ts` (its effect starts then),
        or None when it never does (docs/design.md 12): the same fate `teams.act` emits."""
        teams = self.rates.teams
        if teams is None:
            return ts
        fate = teams.fate(self.seed, customer.customer_id, rule, destination, ts)
        if not fate.completed or fate.done_ms is None:
            return None
        return ts + fate.done_ms

    def _thank(self, customer: Customer, ts: int) -> None:
        """A reading the customer made themselves (never a meter's upload) is thanked."""
        effects = self.rates.effects
        if not effects.thank_meter_reading:
            return
        if (customer.thanked is None or ts > customer.thanked) and self._receives(
            customer, "thank_meter_reading", ts
        ):
            done = self._done_at(customer, "thank_meter_reading", "recognition", ts)
            if done is not None:
                customer.thanked = done

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
        if not self._receives(customer, "recognize_tenure", ts):
            return False
        if self._done_at(customer, "recognize_tenure", "recognition", 0) is None:
            return False
        return self.rng.random() < effects.recognize_tenure

    def _inquiry(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        self._contact(customer, "inquiry", w0, w1, out)

    def _feedback(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        self._contact(customer, "feedback", w0, w1, out)

    # -- moments

    def _open(self, customer: Customer, product: Product, at: int, out: list[Plan]) -> None:
        """A product a new customer joins with opens on the day they join."""
        ts = self._at_hour(self.day_of(at), WEB_HOURS)
        product.opened_ms = ts
        product.announced = True
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
        # Only a new product's first bill is explained: a long-held product's first invoice
        # in the simulated period is not its first (docs/design.md, section 11).
        new = (
            product.invoices == 1 and product.announced and ts - product.opened_ms <= NEW_WITHIN_MS
        )
        if (
            new
            and rates.effects.explain_first_bill
            and self._receives(customer, "explain_first_bill", ts)
        ):
            done = self._done_at(customer, "explain_first_bill", "billing", ts)
            if done is not None:
                customer.explained.append(done)
        reference = f"INV-{self.seed}-{customer.index + 1}-{product.invoices}"
        product.last_invoice = reference
        if new and rng.random() < rates.first_bill_surprise:
            self._surprised(customer, product, ts, out)
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
        if draw < 0.3:  # entered in the billing app, recorded by billing
            ts = self._contact_time(w0, w1 - w0, WEB)
            payload: tuple[Any, ...] = ("METER_READING", product.name, None, None, None, reading)
            out.append((ts, BILL, customer.index, payload))
            return ts
        channel = self._channel("meter")
        ts = self._contact_time(w0, w1 - w0, channel)
        self.say(customer, channel, "meter", ts, product.name, None, reading, out)
        return ts

    def _uploads(
        self, customer: Customer, product: Product, w0: int, w1: int, out: list[Plan]
    ) -> None:
        """A smart meter's monthly uploads in [w0, w1): a night batch a few days before the
        product's invoice, from the month after it opened."""
        first = self.day_of(product.opened_ms) + (3 + (product.bill_offset + 24) % 28) * DAY
        start = max(w0, product.opened_ms)
        if first < start:
            first += math.ceil((start - first) / (30 * DAY)) * 30 * DAY
        random, index = self.rng.random, customer.index
        at = first
        while at < w1:
            ts = at + HOUR + int(random() * 10_800) * SECOND
            reading = str(1000 + int(random() * 60000))
            out.append((ts, SYSTEM, index, ("smart_meter", product.name, None, reading, 0.0)))
            at += 30 * DAY

    def _preferences(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        """A contact preference change on the web or by phone: opting out of engagement
        (some opt in again weeks later), opting back in, or a preferred channel."""
        rng = self.rng
        channel = WEB if rng.random() < 0.7 else CALL
        ts = self._contact_time(w0, w1 - w0, channel)
        consent = customer.consent
        if consent and consent[-1][0] >= ts:
            return  # a change already planned for later stands
        opted_out = bool(consent) and consent[-1][1]
        draw = rng.random()
        engagement: str | None = None
        if opted_out:
            engagement = "opt_in" if draw < 0.6 else None
        elif draw < 0.4:
            engagement = "opt_out"
        preferred = None
        if engagement is None or rng.random() < 0.3:
            preferred = self._pick(("call", "email", "web"))
        self._say_preferences(customer, channel, ts, engagement, preferred, out)
        if engagement is None:
            return
        consent.append((ts, engagement == "opt_out"))
        if engagement == "opt_out" and rng.random() < 0.3:
            later = self._at_hour(self.day_of(ts) + (3 + self.below(43)) * DAY, WEB_HOURS)
            consent.append((later, False))
            self._say_preferences(customer, WEB, later, "opt_in", None, out)

    def _say_preferences(
        self,
        customer: Customer,
        channel: int,
        ts: int,
        engagement: str | None,
        preferred: str | None,
        out: list[Plan],
    ) -> None:
        said = ("web" if channel == WEB else "call", engagement, preferred)
        out.append((ts, SYSTEM, customer.index, ("preferences", None, None, said, 0.0)))

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
        self._open_complaint(customer, channel, ts, self.any_product(customer), out)

    def _open_complaint(
        self, customer: Customer, channel: int, ts: int, product: str | None, out: list[Plan]
    ) -> None:
        reference = self._case_reference("CMP")
        self.say(customer, channel, "complaint", ts, product, reference, None, out)
        delay = self._resolution_delay()
        resolved = None
        if delay is not None:
            resolved = self._at_hour(self.day_of(ts + delay), CALL_HOURS)
            resolved = self._open_hours(max(resolved, ts + HOUR))
        if reference is not None:
            self._repeat(customer, "complaint", channel, ts, resolved, product, reference, out)
        if resolved is not None:
            said = self._resolution_reference(reference)
            self.say(customer, CALL, "complaint_resolved", resolved, product, said, None, out)

    def _dispute(self, customer: Customer, w0: int, w1: int, out: list[Plan]) -> None:
        billed = [p for p in customer.products if p.last_invoice]
        if not billed:
            return
        product = self._pick(billed)
        channel = self._channel("dispute")
        ts = self._contact_time(w0, w1 - w0, channel)
        if customer.explained and self._calmed(customer, ts):
            return
        self._open_dispute(customer, channel, ts, product, out)

    def _open_dispute(
        self, customer: Customer, channel: int, ts: int, product: Product, out: list[Plan]
    ) -> None:
        reference = self._case_reference("DSP")
        self.say(customer, channel, "dispute", ts, product.name, reference, None, out)
        delay = self._resolution_delay()
        resolved = None
        if delay is not None:
            resolved = max(self.day_of(ts + delay) + 16 * HOUR, ts + HOUR)
        if reference is not None:
            self._repeat(customer, "dispute", channel, ts, resolved, product.name, reference, out)
        if resolved is not None:
            said = self._resolution_reference(reference)
            payload = ("DISPUTE_RESOLVED", product.name, said, None, None)
            out.append((resolved, BILL, customer.index, payload))

    def _surprised(self, customer: Customer, product: Product, ts: int, out: list[Plan]) -> None:
        """A new product's first bill surprises: the customer disputes it or complains within
        two weeks, unless it was explained (the premise of explain_first_bill)."""
        dispute = self.rng.random() < 0.6
        channel = self._channel("dispute" if dispute else "complaint")
        at = self._contact_time(ts + DAY, 13 * DAY, channel)
        if customer.explained and self._calmed(customer, at):
            return
        if dispute:
            self._open_dispute(customer, channel, at, product, out)
        else:
            self._open_complaint(customer, channel, at, product.name, out)

    def _case_reference(self, prefix: str) -> str | None:
        """A new case's reference, or None for an opening that names none (a case of its
        own, docs/design.md section 11)."""
        if self.rng.random() < self.rates.unreferenced_case:
            return None
        return self.new_case(prefix)

    def _resolution_reference(self, reference: str | None) -> str | None:
        """The reference a resolution names: its case's, but some name none."""
        if reference is None or self.rng.random() < self.rates.unreferenced_resolution:
            return None
        return reference

    def _repeat(
        self,
        customer: Customer,
        intent: str,
        channel: int,
        ts: int,
        resolved: int | None,
        product: str | None,
        reference: str,
        out: list[Plan],
    ) -> None:
        """Some customers raise an open case again on other channels, naming its reference,
        before it is resolved (within three days at most)."""
        rng = self.rng
        if rng.random() >= self.rates.repeated_case:
            return
        until = resolved if resolved is not None else ts + 72 * HOUR
        others = [c for c in (CALL, MAIL, WEB) if c != channel]
        if rng.random() < 0.7:
            others = [others[self.below(2)]]
        at = ts
        for again in others:
            at += HOUR + self._within(20 * HOUR)
            if again == CALL:
                at = self._open_hours(at)
            if at >= until:
                return
            self.say(customer, again, intent, at, product, reference, None, out)

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
        """A life event ends in cancellations: one product, or 2-3 within minutes in one
        sitting on one channel (a call, a form, e-mails)."""
        held = [p for p in customer.products if p.ends_ms == OPEN]
        if not held:
            return
        rng = self.rng
        reason, notes = CANCEL_REASONS[self.below(len(CANCEL_REASONS))]
        channel = self._channel("cancel")
        ts = self._contact_time(w0, w1 - w0, channel)
        if self._kept(customer, ts):
            return
        chosen = [held.pop(self.below(len(held)))]
        if held and rng.random() < self.rates.multi_cancel:
            chosen.append(held.pop(self.below(len(held))))
            if held and rng.random() < 0.3:
                chosen.append(held.pop(self.below(len(held))))
        if channel == CALL:  # one call, before the call centre closes at 20:00
            ts = min(ts, self.day_of(ts) + 20 * HOUR - 15 * MINUTE)
        if reason == "moving abroad" and rng.random() < 0.5:
            customer.address = self.new_address()
            move_at = max(ts - (1 + self.below(5)) * DAY, w0)
            self.say(customer, WEB, "move", move_at, None, None, customer.address, out)
        at = ts
        for i, product in enumerate(chosen):
            if i:
                at += MINUTE + self._within(3 * MINUTE)
            self.say(customer, channel, "cancel", at, product.name, None, (reason, notes), out)
            product.ends_ms = min(product.ends_ms, at + 30 * DAY)
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
        day = self.day_of(w0 + int(self.rng.random() * (w1 - w0)))
        self.open_product(customer, self._pick(options), self._at_hour(day, WEB_HOURS), out)

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
        """The planned moments window by window, each window's list in arrival order.

        Everything planned in a window happens at or after its start, so emitting a
        window's due moments before planning the next keeps the output globally ordered
        by arrival: the moment's time, except for the records `_deliveries` makes late
        or delivers twice.
        """
        pending: list[Plan] = []
        key = itemgetter(0)
        w0 = self.start_ms
        delivered = 0
        while w0 < self.end_ms:
            w1 = min(w0 + WINDOW, self.end_ms)
            self.plan_window(w0, w1, pending)
            pending.sort(key=key)
            cut = bisect_left(pending, w1, key=key)
            due, pending = pending[:cut], pending[cut:]
            due = self._deliveries(due, delivered, w1, pending)
            yield due
            delivered += len(due)
            w0 = w1

    def _deliveries(
        self, due: list[Plan], delivered: int, w1: int, pending: list[Plan]
    ) -> list[Plan]:
        """A window's moments (ordered by time) as their records arrive, `delivered` records
        having arrived before: some arrive a little late (1 s - 5 min, behind later records,
        inside the allowed lateness), a few much later (8-10 days: too late), and some are
        delivered again, the same record, hours or about ten days after the first time
        (docs/design.md, section 11). What arrives after `w1` goes to `pending`; nothing
        is delivered after the simulated period.
        """
        rates = self.rates
        late, displaced = rates.late, rates.late + rates.too_late
        again, repeated = rates.redelivered, rates.redelivered + rates.redelivered_late
        if not displaced and not repeated:
            return due
        draw = self.arrivals.random
        end = self.end_ms
        key = itemgetter(0)
        if displaced:
            kept: list[Plan] = []
            moved: list[Plan] = []
            for plan in due:
                if plan[1] < LATE:
                    chance = draw()
                    if chance < displaced:
                        if chance < late:
                            lag = SECOND + int(draw() * 299) * SECOND
                        else:
                            lag = 8 * DAY + int(draw() * 172_800) * SECOND
                        arrival = plan[0] + lag
                        if arrival < end:
                            wrapped = (arrival, LATE, plan[2], (plan,))
                            (moved if arrival < w1 else pending).append(wrapped)
                            continue
                kept.append(plan)
            if moved:
                kept += moved
                kept.sort(key=key)  # stable: a late record comes after those of its time
            due = kept
        if not repeated:
            return due
        out: list[Plan] = []
        copies: list[tuple[int, int, Plan]] = []
        for plan in due:
            while copies and copies[0][0] <= plan[0]:
                out.append(heappop(copies)[2])
            out.append(plan)
            if plan[1] != AGAIN:
                chance = draw()
                if chance < repeated:
                    if chance < again:
                        lag = HOUR + int(draw() * 39_600) * SECOND
                    else:
                        lag = 10 * DAY + int(draw() * 43_200) * SECOND
                    arrival = plan[0] + lag
                    if arrival < end:
                        first = plan[3][0] if plan[1] == LATE else plan
                        number = delivered + len(out)
                        copy = (arrival, AGAIN, plan[2], (first, number))
                        if arrival < w1:
                            heappush(copies, (arrival, number, copy))
                        else:
                            pending.append(copy)
        while copies:
            out.append(heappop(copies)[2])
        return out

    def moments(self) -> Iterator[InteractionEvent]:
        """Every planned moment, rendered and adapted, in arrival order."""
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
    Events come in arrival order: by occurred_at, except the few `Rates` makes late or
    delivers twice; ids derive from the channels' own record ids.
    """
    chosen = effective_rates(rates, story_rate)
    world = World(customers, days, seed, start_day_ms(start), chosen)
    teams = chosen.teams
    if teams is None or teams.watch is None:
        return world.moments()
    return act(world.moments(), teams, seed, teams.watch(), world.end_ms)


def effective_rates(rates: Rates | None, story_rate: float | None) -> Rates:
    chosen = rates or Rates()
    if story_rate is not None:
        if not 0.0 <= story_rate <= 1.0:
            raise ValueError(f"story_rate must be between 0 and 1, got {story_rate}")
        chosen = Rates(**{**chosen.__dict__, "story_rate": story_rate})
    return chosen

"""The seed stories of docs/design.md 5.2: `plan_story` embeds one in a simulated
customer's life (`Rates.story_rate`); `seed_stories` is one customer per default rule,
each living exactly that rule's story, for `moments demo`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from producers.adapters.billing import BillingAdapter
from producers.adapters.calls import CallAdapter
from producers.adapters.email import EmailAdapter, EmailMessage
from producers.simulator.habits import (
    BILL,
    CALL,
    CANCEL_REASONS,
    CURRENCY,
    DAY,
    EPOCH,
    HOUR,
    MAIL,
    MINUTE,
    PRODUCT_NAMES,
    STORIES,
    WEB,
    Customer,
    Plan,
    Planner,
)
from schemas.codec import event_from_json
from schemas.records import InteractionEvent

# --- a seed story in a simulated customer's life ------------------------------------------------


def plan_story(world: Planner, customer: Customer, story: str, ts: int, out: list[Plan]) -> None:
    """Plan `customer`'s seed story (docs/design.md 5.2) on the day of `ts`."""
    index = customer.index
    payload: tuple[Any, ...]
    day = world.day_of(ts)
    if story == "life_event_check_in":
        if customer.products:
            reason = CANCEL_REASONS[0]
            held = customer.products[0].name
            world.say(customer, CALL, "cancel", day + 10 * HOUR, held, None, reason, out)
    elif story == "explain_first_bill":
        names = {p.name for p in customer.products}
        name = next((n for n in PRODUCT_NAMES if n not in names), None)
        if name is not None:
            opened = world.open_product(customer, name, day + 11 * HOUR, out)
            world.invoice(customer, opened, day + 6 * DAY + 2 * HOUR, out)
    elif story in ("case_follow_up", "case_unresolved"):
        reference = world.new_case("DSP")
        product = world.any_product(customer)
        world.say(customer, CALL, "dispute", day + 9 * HOUR, product, reference, None, out)
        if story == "case_follow_up":
            payload = ("DISPUTE_RESOLVED", product, reference, None, None)
            out.append((day + 30 * HOUR, BILL, index, payload))
        else:  # a later contact moves the customer's partition past the 48 h deadline
            world.say(customer, WEB, "feedback", day + 80 * HOUR, product, None, None, out)
    elif story in ("thank_meter_reading", "review_payment_demand"):
        reading = str(1000 + world.below(60000))
        world.say(customer, WEB, "meter", day + 19 * HOUR, "electricity", None, reading, out)
        if story == "review_payment_demand":
            amount = round(80 + world.rng.random() * 300, 2)
            demand = day + 3 * DAY + 9 * HOUR
            reference = f"INV-{world.seed}-{index + 1}-S"
            payload = ("PAYMENT_DEMAND", "electricity", reference, amount, demand + 14 * DAY)
            out.append((demand, BILL, index, payload))
    elif story == "recognize_tenure":
        world.say(customer, CALL, "inquiry", day + 11 * HOUR, None, None, None, out)
    elif story == "route_feedback":
        world.say(customer, MAIL, "feedback", day + 20 * HOUR, None, None, None, out)
    elif story == "propagate_address":
        customer.address = world.new_address()
        world.say(customer, CALL, "move", day + 15 * HOUR, None, None, customer.address, out)
    elif story == "omnichannel_escalation":
        for i, channel in enumerate((CALL, MAIL, WEB)):
            world.say(customer, channel, "inquiry", day + (9 + 5 * i) * HOUR, None, None, None, out)
    elif story == "repair_relationship":
        name = customer.products[0].name if customer.products else "mobile"
        amount = round(40 + world.rng.random() * 100, 2)
        reference = f"INV-{world.seed}-{index + 1}-R"
        for i, record_type in enumerate(("PAYMENT_FAILED", "PAYMENT_FAILED", "PAYMENT_DEMAND")):
            due = day + (i + 20) * DAY if record_type == "PAYMENT_DEMAND" else None
            payload = (record_type, name, reference, amount, due)
            out.append((day + i * 4 * DAY + 6 * HOUR, BILL, index, payload))
        world.say(
            customer,
            WEB,
            "complaint",
            day + 9 * DAY + 20 * HOUR,
            name,
            world.new_case("CMP"),
            None,
            out,
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
    ten_years_ago = (EPOCH + timedelta(milliseconds=t0 - 9 * 365 * DAY)).date().isoformat()

    def iso(ms: int) -> str:
        return (EPOCH + timedelta(milliseconds=ms)).isoformat()

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
        bill(
            "demo-24",
            c["explain_first_bill"],
            t0 + 9 * DAY,
            "PAYMENT",
            "gas",
            reference="INV-D-1",
            amount=96.4,
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
        bill(
            "demo-25",
            c["thank_meter_reading"],
            t0 + 8 * DAY,
            "PAYMENT",
            "gas",
            reference="INV-D-6",
            amount=73.2,
            **money,
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
        # A customer of nine years calls with a question (and pays a week later: engagement
        # rules see an event once event time has moved past it, docs/design.md 11.1).
        call(
            "demo-11",
            c["recognize_tenure"],
            t0 + 7 * HOUR,
            "TARIFF_QUESTION",
            "Asked whether a cheaper tariff exists",
            customer_since=ten_years_ago,
        ),
        bill(
            "demo-23",
            c["recognize_tenure"],
            t0 + 7 * DAY,
            "PAYMENT",
            "electricity",
            reference="INV-D-5",
            amount=51.0,
            **money,
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
        # Later events of the same customers move event time past the moments above (the
        # rules deciding at the watermark see an event once it has, docs/design.md 11.1).
        bill(
            "demo-26",
            c["omnichannel_escalation"],
            t0 + 5 * DAY,
            "PAYMENT",
            "broadband",
            reference="INV-D-7",
            amount=35.0,
            **money,
        ),
        bill(
            "demo-27",
            c["propagate_address"],
            t0 + 6 * DAY,
            "PAYMENT",
            "electricity",
            reference="INV-D-8",
            amount=62.5,
            **money,
        ),
        web("demo-28", c["repair_relationship"], t0 + 12 * DAY, "inquiry", text="Payment plan?"),
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

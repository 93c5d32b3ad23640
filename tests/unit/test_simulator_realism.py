"""The customer's truth in a simulation (docs/design.md, section 11): consent, cases without
a reference or raised twice, meters that read themselves, first bills of new and of
long-held products, tenure, and several cancellations in one sitting."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from itertools import pairwise

from producers.simulator import DAY, MINUTE, simulate
from schemas.records import InteractionEvent
from tests.support.simulated import CUSTOMERS, START, events

CASE_OPENINGS = ("complaint_filed", "dispute_opened")


def in_time_order() -> list[InteractionEvent]:
    return sorted(events(), key=lambda e: e.occurred_at)


def test_some_customers_opt_out_of_engagement_some_opt_in_again_some_choose_a_channel() -> None:
    changes = [e for e in in_time_order() if e.type == "contact_preferences_changed"]
    said = Counter(e.attributes.get("engagement") for e in changes)
    deciding = {e.customer_id for e in changes if e.attributes.get("engagement")}

    assert {e.channel for e in changes} == {"web", "call"}
    assert 0.003 * CUSTOMERS < said["opt_out"] < 0.05 * CUSTOMERS
    assert 0 < said["opt_in"] < said["opt_out"]
    assert len(deciding) < 0.05 * CUSTOMERS
    preferred = Counter(e.attributes["preferred_channel"] for e in changes if
                        "preferred_channel" in e.attributes)  # fmt: skip
    assert set(preferred) == {"call", "email", "web"}
    out: set[str] = set()
    for event in changes:  # only a customer who opted out opts in again
        engagement = event.attributes.get("engagement")
        if engagement == "opt_in":
            assert event.customer_id in out
            out.discard(event.customer_id)
        elif engagement == "opt_out":
            out.add(event.customer_id)


def test_cases_opened_without_a_reference_raised_again_and_resolved_without_one() -> None:
    openings = [e for e in events() if e.type in CASE_OPENINGS]
    resolutions = [e for e in events() if e.type in ("complaint_resolved", "dispute_resolved")]
    unreferenced = sum(1 for e in openings if e.reference is None)
    by_reference: dict[str, list[InteractionEvent]] = defaultdict(list)
    for event in openings:
        if event.reference is not None:
            by_reference[event.reference].append(event)
    raised_again = [cases for cases in by_reference.values() if len(cases) > 1]

    assert 0.03 < unreferenced / len(openings) < 0.15
    assert 0.05 < len(raised_again) / len(by_reference) < 0.25
    for cases in raised_again:  # the same case, on other channels, within three days
        assert len({e.channel for e in cases}) == len(cases)
        assert len({(e.type, e.customer_id) for e in cases}) == 1
        assert max(e.occurred_at for e in cases) - min(e.occurred_at for e in cases) < 3 * DAY
    unreferenced_resolutions = sum(1 for e in resolutions if e.reference is None)
    assert 0.05 < unreferenced_resolutions / len(resolutions) < 0.3


def test_smart_meters_upload_monthly_beside_the_readings_people_make() -> None:
    readings = [e for e in in_time_order() if e.type == "meter_reading_submitted"]
    uploads = [e for e in readings if e.attributes.get("submitted_by") == "meter"]
    by_people = [e for e in readings if e.attributes.get("submitted_by") != "meter"]

    assert {(e.channel, e.source) for e in uploads} == {("other", "smart-meter")}
    assert len(uploads) > len(by_people) > 0.2 * len(uploads)
    assert {e.channel for e in by_people} == {"web", "call", "email", "billing"}
    for event in by_people:  # the e-mail adapter cannot say who sent a reading; the rest do
        assert event.channel == "email" or event.attributes["submitted_by"] == "customer"
    months: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for event in uploads:
        months[event.customer_id, event.product].append(event.occurred_at)
    gaps = [b - a for times in months.values() for a, b in pairwise(times)]
    assert gaps and all(29 * DAY < gap < 31 * DAY for gap in gaps)


def test_a_new_products_first_bill_follows_its_opening_a_long_held_ones_has_none() -> None:
    opened: dict[tuple[str, str | None], int] = {}
    first_bills: dict[tuple[str, str | None], int] = {}
    for event in in_time_order():
        key = (event.customer_id, event.product)
        if event.type == "account_opened":
            opened.setdefault(key, event.occurred_at)
        elif event.type == "invoice_issued":
            first_bills.setdefault(key, event.occurred_at)
    new = [key for key in first_bills if key in opened]
    long_held = [key for key in first_bills if key not in opened]

    assert len(new) > 0.05 * len(first_bills) and len(long_held) > 0.5 * len(first_bills)
    for key in new:
        assert 0 < first_bills[key] - opened[key] <= 90 * DAY


def test_customer_since_is_never_in_the_future_or_before_1900_and_the_earliest_stays() -> None:
    seen: dict[str, set[date]] = defaultdict(set)
    for event in events():
        since = event.customer_since
        if since is None:
            continue
        day = datetime.fromtimestamp(event.occurred_at / 1000, UTC).date()
        assert date(1900, 1, 1) <= since <= day, event
        seen[event.customer_id].add(since)
    younger = {c for c, dates in seen.items() if len(dates) > 1}

    # A new product's billing rows may carry its own start; every other record the customer's.
    assert 0 < len(younger) < 0.1 * len(seen)
    for customer in younger:
        rows = [e for e in events() if e.customer_id == customer and e.customer_since]
        earliest = min(seen[customer])
        assert all(e.customer_since == earliest for e in rows if e.channel != "billing")


def test_customer_since_stays_valid_for_long_and_new_tenures_over_many_seeds() -> None:
    for seed in range(5):
        for event in simulate(300, 30, seed=seed, start=START):
            since = event.customer_since
            if since is not None:
                day = datetime.fromtimestamp(event.occurred_at / 1000, UTC).date()
                assert date(1900, 1, 1) <= since <= day, event


def test_several_products_cancelled_in_one_sitting() -> None:
    cancellations: dict[str, list[InteractionEvent]] = defaultdict(list)
    for event in in_time_order():
        if event.type == "cancellation_requested":
            cancellations[event.customer_id].append(event)
    sittings: Counter[int] = Counter()
    for history in cancellations.values():
        run = [history[0]]
        for event in history[1:]:
            if event.occurred_at - run[-1].occurred_at <= 5 * MINUTE:
                run.append(event)
                continue
            sittings[len(run)] += 1
            run = [event]
        sittings[len(run)] += 1
    several = [n for n in sittings if n > 1]
    for history in cancellations.values():  # one channel, different products
        for a, b in pairwise(history):
            if b.occurred_at - a.occurred_at <= 5 * MINUTE:
                assert a.channel == b.channel
                # an e-mail's product is in its words ("home insurance"), not always a field
                assert (a.product, a.attributes.get("subject")) != (
                    b.product,
                    b.attributes.get("subject"),
                )

    assert several and max(several) <= 3
    assert 0.1 < sum(sittings[n] for n in several) / sum(sittings.values()) < 0.6

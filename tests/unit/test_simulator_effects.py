"""The simulator's customers respond to the actions they would receive (section 9), and
only those the engine would treat do (section 11)."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest

from common.settings import Settings
from moments.report import simulation_rates
from processors.engine.ids import in_holdout
from producers.simulator import DAY, HOUR, Effects, Rates, simulate
from producers.simulator.habits import Plan
from producers.simulator.world import World, start_day_ms
from schemas.records import InteractionEvent


def types(rates: Rates | None, customers: int = 600) -> Counter[str]:
    return Counter(e.type for e in simulate(customers, 90, seed=5, rates=rates))


def once(rates: Rates | None, customers: int) -> list[InteractionEvent]:
    """Every event once (repeated deliveries dropped), in time order."""
    seen: set[str] = set()
    events = []
    for event in simulate(customers, 120, seed=5, rates=rates):
        if event.event_id not in seen:
            seen.add(event.event_id)
            events.append(event)
    return sorted(events, key=lambda e: e.occurred_at)


def cases_after_a_new_products_first_bill(rates: Rates | None) -> int:
    """Disputes and complaints within 60 days after a customer's first invoice of a product
    whose account_opened came before it (what explain_first_bill's outcome measures)."""
    opened: dict[str, set[str | None]] = {}
    first_bill: dict[str, int] = {}
    cases = 0
    for e in once(rates, 1200):
        if e.type == "account_opened":
            opened.setdefault(e.customer_id, set()).add(e.product)
        elif e.type == "invoice_issued" and e.product in opened.get(e.customer_id, ()):
            first_bill.setdefault(e.customer_id, e.occurred_at)
        elif e.type in ("dispute_opened", "complaint_filed") and e.customer_id in first_bill:
            cases += e.occurred_at <= first_bill[e.customer_id] + 60 * DAY
    return cases


def readings_people_made(rates: Rates | None) -> int:
    return sum(
        1
        for e in once(rates, 600)
        if e.type == "meter_reading_submitted" and e.attributes.get("submitted_by") != "meter"
    )


def test_zero_effects_change_nothing() -> None:
    zero = Rates(effects=Effects(held_out=partial(in_holdout, percent=50.0)))
    assert list(simulate(200, 60, seed=5, rates=zero)) == list(simulate(200, 60, seed=5))


def test_customers_respond_to_the_actions_they_receive() -> None:
    moved = Rates(effects=Effects(explain_first_bill=1.0, thank_meter_reading=2.0))

    base_cases = cases_after_a_new_products_first_bill(None)
    assert base_cases >= 15
    assert cases_after_a_new_products_first_bill(moved) < base_cases * 0.5
    assert readings_people_made(moved) > readings_people_made(None) * 1.3


def test_only_what_the_engine_would_treat_moves_a_customer() -> None:
    world = World(1, 30, 3, start_day_ms(None), Rates(effects=Effects(explain_first_bill=1.0)))
    customer = world.customers[0]
    t0 = world.start_ms + DAY
    out: list[Plan] = []
    long_held = world.make_product("gas", t0 - 400 * DAY)  # no account_opened: not new
    customer.products.append(long_held)
    world.invoice(customer, long_held, t0, out)
    assert customer.explained == []

    opted_out = world.open_product(customer, "mobile", t0, out)
    customer.consent.append((t0 + HOUR, True))
    world.invoice(customer, opted_out, t0 + 30 * DAY, out)
    assert customer.explained == []

    customer.consent.append((t0 + 2 * HOUR, False))
    opted_in = world.open_product(customer, "broadband", t0 + 3 * HOUR, out)
    world.invoice(customer, opted_in, t0 + 31 * DAY, out)
    assert customer.explained == [t0 + 31 * DAY]
    assert [p[3][0] for p in out].count("ACCOUNT_OPENED") == 2


def test_the_control_group_does_not_respond() -> None:
    everyone_held_out = Effects(
        explain_first_bill=1.0, thank_meter_reading=1.0, held_out=lambda customer, rule: True
    )
    assert types(Rates(effects=everyone_held_out)) == types(None)


def test_the_cli_decides_membership_with_the_engines_own_function() -> None:
    rates = simulation_rates(Settings(holdout_percent=10.0), ["explain_first_bill=0.25"])
    held_out = rates.effects.held_out
    assert isinstance(held_out, partial) and held_out.func is in_holdout
    assert held_out.keywords == {"percent": 10.0}
    assert rates.effects.explain_first_bill == 0.25
    defaults = Settings().simulator.simulate_effects
    assert rates.effects.recognize_tenure == defaults["recognize_tenure"]


@pytest.mark.parametrize("name", ["explain_first_bill", "recognize_tenure"])
def test_an_effect_out_of_range_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"effect {name} must be between 0 and 1"):
        Effects(**{name: 1.5})

"""The simulator's customers respond to the actions they would receive (section 9)."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest

from common.settings import Settings
from moments.report import simulation_rates
from processors.engine.ids import in_holdout
from producers.simulator import Effects, Rates, simulate


def types(rates: Rates | None, customers: int = 600) -> Counter[str]:
    return Counter(e.type for e in simulate(customers, 90, seed=5, rates=rates))


def test_zero_effects_change_nothing() -> None:
    zero = Rates(effects=Effects(held_out=partial(in_holdout, percent=50.0)))
    assert list(simulate(200, 60, seed=5, rates=zero)) == list(simulate(200, 60, seed=5))


def test_customers_respond_to_the_actions_they_receive() -> None:
    base = types(None)
    moved = types(Rates(effects=Effects(explain_first_bill=1.0, thank_meter_reading=1.0)))
    assert moved["dispute_opened"] < base["dispute_opened"] * 0.6
    assert moved["meter_reading_submitted"] > base["meter_reading_submitted"] * 1.2


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

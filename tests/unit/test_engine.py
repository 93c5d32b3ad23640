"""The trigger engine with the default pack: life_event_check_in, cool-down, action ids."""

from __future__ import annotations

from datetime import date

from processors.engine import DictStore, Engine, EngineConfig, load_rule_pack
from tests.support.engine import T0, D, H, ev, fired, run


def test_cancellation_by_phone_raises_a_life_event_check_in_for_care() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    out = engine.process(
        DictStore(), ev("cancellation_requested", T0, product="credit_card", event_id="x1")
    )
    [action] = out.actions
    assert (action.rule, action.action, action.destination) == (
        "life_event_check_in",
        "life_event_check_in",
        "care",
    )
    assert (action.priority, action.rule_version, action.triggered_at) == (80, 1, T0)
    assert action.evidence == ["x1"]
    assert action.channel_hint == "call"
    assert action.reason.startswith(
        "The customer asked to cancel credit card by phone on 2026-01-01"
    )
    assert action.reason.endswith(".")
    [decision] = out.decisions
    assert (decision.outcome, decision.reason, decision.action_id) == (
        "fired",
        "fired",
        action.action_id,
    )


def test_cancellation_on_every_channel_fires() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    for channel in ("call", "email", "billing", "web", "other"):
        out = engine.process(
            DictStore(), ev("cancellation_requested", T0, customer=channel, channel=channel)
        )
        assert fired(out, "life_event_check_in") == ["life_event_check_in"], channel


def test_cool_down_suppresses_for_30_days_then_fires_again() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    first = run(engine, store, ev("cancellation_requested", T0))
    assert fired(first, "life_event_check_in") == ["life_event_check_in"]

    almost = run(engine, store, ev("cancellation_requested", T0 + 30 * D - 1, channel="web"))
    assert fired(almost, "life_event_check_in") == []
    [decision] = [d for d in almost.decisions if d.rule == "life_event_check_in"]
    assert (decision.outcome, decision.reason, decision.action_id) == (
        "suppressed",
        "cool_down",
        None,
    )

    # the suppressed candidate did not restart the cool-down: exactly 30 d after the fired one
    again = run(engine, store, ev("cancellation_requested", T0 + 30 * D, channel="email"))
    assert fired(again, "life_event_check_in") == ["life_event_check_in"]
    assert again.actions[0].triggered_at == T0 + 30 * D


def test_action_id_is_deterministic_and_depends_on_rule_customer_evidence() -> None:
    pack = load_rule_pack()

    def action_id(customer: str, event_id: str) -> str:
        out = Engine(pack, EngineConfig()).process(
            DictStore(), ev("cancellation_requested", T0, customer=customer, event_id=event_id)
        )
        return out.actions[0].action_id

    assert action_id("c1", "a") == action_id("c1", "a")
    assert action_id("c1", "a") != action_id("c2", "a")
    assert action_id("c1", "a") != action_id("c1", "b")
    assert len(action_id("c1", "a")) == 32


def test_duplicate_event_is_ignored_with_a_decision() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    first = run(engine, store, ev("cancellation_requested", T0, event_id="dup"))
    again = run(engine, store, ev("cancellation_requested", T0, event_id="dup"))
    assert len(first.actions) == 1
    assert again.actions == []
    assert {(d.rule, d.outcome, d.reason) for d in again.decisions} == {
        ("life_event_check_in", "suppressed", "duplicate_event"),
        ("omnichannel_escalation", "suppressed", "duplicate_event"),
    }


def test_customers_are_independent() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    out = run(
        engine,
        store,
        ev("cancellation_requested", T0, customer="a"),
        ev("cancellation_requested", T0 + H, customer="b"),
    )
    assert sorted(a.customer_id for a in out.actions) == ["a", "b"]


def test_relationship_balance_is_on_every_action() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    out = engine.process(
        DictStore(),
        ev("cancellation_requested", T0, customer_since=date(2024, 1, 1)),
    )
    assert all("relationship_balance" in a.details for a in out.actions)
    assert out.actions[0].details["relationship_balance"] == "-1"

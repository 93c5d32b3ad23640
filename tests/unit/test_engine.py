"""The trigger engine with the default pack: life_event_check_in, cool-down, action ids."""

from __future__ import annotations

from datetime import date

from processors.engine import DictStore, Engine, EngineConfig, EngineOutput, load_rule_pack
from schemas.records import InteractionEvent
from tests.support.engine import T0, D, H, ev, fired, run


def settled(engine: Engine, store: DictStore, *events: InteractionEvent) -> EngineOutput:
    """The outputs of `events`, then of the watermark passing an hour after the last of them:
    life_event_check_in gathers a sitting's cancellations for an hour before it fires."""
    out = run(engine, store, *events)
    out.extend(engine.advance_watermark(store, max(e.occurred_at for e in events) + H))
    return out


def test_cancellation_by_phone_raises_a_life_event_check_in_for_care() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    arrived = engine.process(
        store, ev("cancellation_requested", T0, product="credit_card", event_id="x1")
    )
    assert arrived.actions == []  # it waits the hour of its sitting
    out = engine.advance_watermark(store, T0 + H)
    [action] = out.actions
    assert (action.rule, action.action, action.destination) == (
        "life_event_check_in",
        "life_event_check_in",
        "care",
    )
    assert (action.priority, action.rule_version, action.triggered_at) == (80, 1, T0 + H)
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
        out = settled(
            engine, DictStore(), ev("cancellation_requested", T0, customer=channel, channel=channel)
        )
        assert fired(out, "life_event_check_in") == ["life_event_check_in"], channel


def test_cool_down_suppresses_for_30_days_then_fires_again() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    first = settled(engine, store, ev("cancellation_requested", T0))
    assert fired(first, "life_event_check_in") == ["life_event_check_in"]
    assert first.actions[0].triggered_at == T0 + H

    almost = settled(engine, store, ev("cancellation_requested", T0 + 30 * D - 1, channel="web"))
    assert fired(almost, "life_event_check_in") == []
    [decision] = [d for d in almost.decisions if d.rule == "life_event_check_in"]
    assert (decision.outcome, decision.reason, decision.action_id) == (
        "suppressed",
        "cool_down",
        None,
    )
    assert decision.decided_at == T0 + H + 30 * D - 1

    # the suppressed candidate did not restart the cool-down: the next sitting's fires
    again = settled(engine, store, ev("cancellation_requested", T0 + 30 * D + H, channel="email"))
    [action] = [a for a in again.actions if a.rule == "life_event_check_in"]
    assert action.triggered_at == T0 + 30 * D + 2 * H


def test_action_id_is_deterministic_and_depends_on_rule_customer_evidence() -> None:
    pack = load_rule_pack()

    def action_id(customer: str, event_id: str) -> str:
        out = settled(
            Engine(pack, EngineConfig()),
            DictStore(),
            ev("cancellation_requested", T0, customer=customer, event_id=event_id),
        )
        return out.actions[0].action_id

    assert action_id("c1", "a") == action_id("c1", "a")
    assert action_id("c1", "a") != action_id("c2", "a")
    assert action_id("c1", "a") != action_id("c1", "b")
    assert len(action_id("c1", "a")) == 32


def test_duplicate_event_is_ignored_with_a_decision() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    first = settled(engine, store, ev("cancellation_requested", T0, event_id="dup"))
    again = settled(engine, store, ev("cancellation_requested", T0, event_id="dup"))
    assert len(first.actions) == 1
    assert again.actions == []
    assert {(d.rule, d.outcome, d.reason) for d in again.decisions} == {
        ("life_event_check_in", "suppressed", "duplicate_event"),
        ("omnichannel_escalation", "suppressed", "duplicate_event"),
    }


def test_customers_are_independent() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    out = settled(
        engine,
        store,
        ev("cancellation_requested", T0, customer="a"),
        ev("cancellation_requested", T0 + 30 * 60_000, customer="b"),  # within a's sitting
    )
    assert sorted(a.customer_id for a in out.actions) == ["a", "b"]


def test_relationship_balance_is_on_every_action() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    out = settled(
        engine,
        DictStore(),
        ev("cancellation_requested", T0, customer_since=date(2024, 1, 1)),
    )
    assert out.actions and all("relationship_balance" in a.details for a in out.actions)
    assert out.actions[0].details["relationship_balance"] == "-1"

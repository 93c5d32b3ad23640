"""Forgetting a customer in the engine state: nothing left, nothing fires, others untouched."""

from __future__ import annotations

from processors.engine import (
    DictStore,
    Engine,
    EngineConfig,
    StateStore,
    forget_customer,
    load_rule_pack,
)
from processors.engine.erasure import PARTITION_ERASERS
from processors.engine.interfaces import TIMER_CHUNK_PREFIX, TIMER_INDEX_KEY, customer_key
from schemas.records import InteractionEvent
from tests.support.engine import T0, H, ev, run, run_settled


def case_opened(customer: str, at: int, reference: str) -> list[InteractionEvent]:
    return [
        ev("complaint_filed", at, customer=customer, reference=reference, channel="email"),
        ev("inquiry", at + H, customer=customer, channel="web"),
    ]


def held_about(store: DictStore, customer: str) -> list[str]:
    """Every key of the store whose value mentions the customer."""
    return sorted(key for key, value in store.data.items() if customer in repr((key, value)))


def test_forgetting_drops_the_customers_state_and_pending_timers_only() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    run(engine, store, *case_opened("gone", T0, "CASE-1"), *case_opened("kept", T0, "CASE-2"))
    assert held_about(store, "gone") and held_about(store, "kept")

    removed = forget_customer(store, "gone")

    # the customer's key, their case_unresolved timer, the hold timer of their inquiry
    # (the engagement rules have not seen it yet) and their follow-up's overdue timer
    assert removed == 4
    assert held_about(store, "gone") == []
    assert store.get(customer_key("kept")) is not None
    out = engine.advance(store, T0 + 72 * H)  # past both 48 h deadlines
    # kept's complaint arrived behind the watermark: its follow-up was still pending, untouched
    assert [(a.rule, a.customer_id) for a in out.actions] == [
        ("case_follow_up", "kept"),
        ("case_follow_up.when_overdue", "kept"),  # not done within 24 h (section 12.4)
        ("case_unresolved", "kept"),
    ]
    assert {d.customer_id for d in out.decisions} == {"kept"}


def test_an_emptied_timer_bucket_leaves_the_index_and_forgetting_twice_is_harmless() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    run(engine, store, *case_opened("gone", T0, "CASE-1"))
    assert store.get(TIMER_INDEX_KEY)
    forget_customer(store, "gone")
    assert store.get(TIMER_INDEX_KEY) == []
    assert not [k for k in store.data if k.startswith(TIMER_CHUNK_PREFIX)]
    assert forget_customer(store, "gone") == 0
    assert forget_customer(DictStore(), "nobody") == 0


def test_a_forgotten_customer_who_comes_back_starts_afresh() -> None:
    engine = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    run(engine, store, *case_opened("back", T0, "CASE-1"))
    forget_customer(store, "back")
    again = run_settled(
        engine, store, ev("complaint_filed", T0 + 2 * H, customer="back", reference="R2")
    )
    assert [a.rule for a in again.actions] == ["case_follow_up"]
    out = engine.advance(store, T0 + 100 * H)
    # only the new case escalates: the forgotten CASE-1 timer is gone
    [escalation] = [a for a in out.actions if a.rule == "case_unresolved"]
    assert {a.customer_id for a in out.actions} == {"back"}
    assert "R2" in escalation.reason and "CASE-1" not in escalation.reason


def test_partition_level_state_registers_an_eraser() -> None:
    assert PARTITION_ERASERS, "timers are erased through the registry"
    store = DictStore()
    store.set("p:extra", [["gone", 1], ["kept", 2]])

    def erase_extra(store: StateStore, customer_id: str) -> int:
        entries = store.get("p:extra") or []
        kept = [e for e in entries if e[0] != customer_id]
        store.set("p:extra", kept)
        return len(entries) - len(kept)

    PARTITION_ERASERS.append(erase_extra)
    try:
        assert forget_customer(store, "gone") == 1
    finally:
        PARTITION_ERASERS.remove(erase_extra)
    assert store.get("p:extra") == [["kept", 2]]

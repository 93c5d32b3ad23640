"""Revision 2 of the engine semantics (DESIGN.md sections 3-5), one rule of the text per test:
the contact cap defers, deferred candidates fire by priority or expire, already_waiting and
blocked_by, control groups for engagement rules only, first keys, product holdings, warm-up."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from processors.engine import DictStore, Engine, EngineConfig, EngineOutput, load_rule_pack
from processors.engine.interfaces import CUSTOMER_PREFIX
from processors.engine.rules import check_rule_pack
from schemas.records import Decision
from tests.unit.test_engine import T0, D, H, ev, run
from tests.unit.test_engine_kinds import engine, rule

M = 60_000


def thanks(rule_id: str = "thanks", priority: int = 20, **extra: Any) -> dict[str, Any]:
    """An engagement rule on every meter reading."""
    return rule(
        rule_id,
        {"kind": "match", "type": extra.pop("type", "meter_reading_submitted")},
        class_="engagement",
        priority=priority,
        **extra,
    )


def traced(out: EngineOutput, rule_id: str | None = None) -> list[tuple[str, str, int]]:
    return [
        (d.outcome, d.reason, d.decided_at)
        for d in out.decisions
        if rule_id is None or d.rule == rule_id
    ]


def only(out: EngineOutput, outcome: str, rule_id: str | None = None) -> Decision:
    [decision] = [d for d in out.decisions if d.outcome == outcome and rule_id in (None, d.rule)]
    return decision


# -- the contact cap defers --------------------------------------------------------------


def test_a_capped_candidate_is_deferred_then_fires_when_the_cap_frees() -> None:
    eng = engine(thanks(due_by="3d"))
    store = DictStore()
    out = run(
        eng,
        store,
        ev("meter_reading_submitted", T0, event_id="m1"),
        ev("meter_reading_submitted", T0 + H, event_id="m2"),
    )
    first = out.actions[0]
    deferred = only(out, "deferred")
    assert (deferred.reason, deferred.blocked_by, deferred.decided_at) == (
        "contact_cap",
        first.action_id,
        T0 + H,
    )
    assert deferred.action_id is not None
    later = eng.advance_watermark(store, T0 + 24 * H)  # the slot is held until exactly F + 24 h
    [action] = later.actions
    assert action.action_id == deferred.action_id
    assert (action.triggered_at, action.evidence) == (T0 + 24 * H, ["m2"])
    assert action.due_by == T0 + H + 3 * D  # its original due_by
    assert traced(later) == [("fired", "fired", T0 + 24 * H)]
    assert later.decisions[0].action_id == deferred.action_id


def test_the_cap_counts_the_window_t_minus_24h_exclusive_to_t_inclusive() -> None:
    eng = engine(thanks())
    store = DictStore()
    [at_t0] = run(eng, store, ev("meter_reading_submitted", T0)).actions
    late = eng.process(store, ev("meter_reading_submitted", T0 - H))  # f = T0 is after t
    assert traced(late) == [("fired", "fired", T0 - H)]
    # at T0 + 23 h the window (T0 - 1 h, T0 + 23 h] holds T0 but no longer T0 - 1 h
    out = eng.process(store, ev("meter_reading_submitted", T0 + 23 * H))
    assert only(out, "deferred").blocked_by == at_t0.action_id
    assert eng.advance_watermark(store, T0 + 24 * H).actions[0].triggered_at == T0 + 24 * H


def test_a_deferred_candidate_expires_at_its_due_by() -> None:
    eng = engine(thanks(due_by="12h"))
    store = DictStore()
    out = run(
        eng,
        store,
        ev("meter_reading_submitted", T0),
        ev("meter_reading_submitted", T0 + H, event_id="m2"),
    )
    out.extend(eng.advance_watermark(store, T0 + 30 * D))
    assert traced(out)[1:] == [
        ("deferred", "contact_cap", T0 + H),
        ("suppressed", "expired", T0 + 13 * H),
    ]
    assert only(out, "suppressed").evidence == ["m2"]
    assert len(out.actions) == 1


def test_a_candidate_whose_expiry_equals_the_moment_the_cap_frees_fires() -> None:
    eng = engine(thanks(due_by="23h"))
    store = DictStore()
    run(eng, store, ev("meter_reading_submitted", T0), ev("meter_reading_submitted", T0 + H))
    out = eng.advance_watermark(store, T0 + 30 * D)
    assert traced(out) == [("fired", "fired", T0 + 24 * H)]


@pytest.mark.parametrize(("defer_for", "expires"), [(None, 7 * D), ("2d", 2 * D)])
def test_without_a_due_by_a_candidate_waits_defer_for(defer_for: str | None, expires: int) -> None:
    extra = {"defer_for": defer_for} if defer_for else {}
    eng = engine(thanks(**extra), contact_cap_window_ms=30 * D)
    store = DictStore()
    run(eng, store, ev("meter_reading_submitted", T0), ev("meter_reading_submitted", T0 + H))
    out = eng.advance_watermark(store, T0 + 60 * D)
    assert traced(out) == [("suppressed", "expired", T0 + H + expires)]


def test_while_a_candidate_waits_the_same_rule_and_key_is_already_waiting() -> None:
    eng = engine(thanks())
    store = DictStore()
    out = run(
        eng,
        store,
        ev("meter_reading_submitted", T0),
        ev("meter_reading_submitted", T0 + H),
        ev("meter_reading_submitted", T0 + 2 * H),
    )
    waiting = only(out, "deferred")
    suppressed = only(out, "suppressed")
    assert (suppressed.reason, suppressed.blocked_by) == ("already_waiting", waiting.action_id)
    out = eng.advance_watermark(store, T0 + 30 * D)
    assert [a.action_id for a in out.actions] == [waiting.action_id]


def test_the_waiting_candidate_with_the_highest_priority_fires_first() -> None:
    eng = engine(
        thanks("low", 10, type="inquiry"),
        thanks("high", 30, type="feedback_given"),
        thanks("first", 50, type="meter_reading_submitted"),
        thanks("tie_b", 10, type="payment_received"),
    )
    store = DictStore()
    run(
        eng,
        store,
        ev("meter_reading_submitted", T0),
        ev("inquiry", T0 + H),  # low, earlier
        ev("payment_received", T0 + H),  # same priority as low, same time: rule id decides
        ev("feedback_given", T0 + 2 * H),  # high, later
    )
    out = eng.advance_watermark(store, T0 + 30 * D)
    # one per freed slot, each in the same advance: timers set while timers fire fire too
    assert [(a.rule, a.triggered_at) for a in out.actions] == [
        ("high", T0 + 24 * H),
        ("low", T0 + 48 * H),
        ("tie_b", T0 + 72 * H),
    ]


def test_candidates_of_one_event_are_checked_in_priority_order() -> None:
    eng = engine(thanks("a_low", 10), thanks("b_high", 90))
    out = eng.process(DictStore(), ev("meter_reading_submitted", T0))
    assert [(d.rule, d.outcome) for d in out.decisions] == [
        ("b_high", "fired"),
        ("a_low", "deferred"),
    ]
    assert out.decisions[1].blocked_by == out.actions[0].action_id


def test_a_cool_down_names_the_action_that_started_it() -> None:
    eng = engine(rule("cancel", {"kind": "match", "type": "inquiry"}, cool_down="7d"))
    out = run(eng, DictStore(), ev("inquiry", T0), ev("inquiry", T0 + D))
    assert only(out, "suppressed").blocked_by == out.actions[0].action_id


# -- control groups: engagement rules only -----------------------------------------------


def test_a_service_rule_is_never_held_out_at_any_percent() -> None:
    eng = engine(rule("care", {"kind": "match", "type": "inquiry"}), holdout_percent=100.0)
    out = run(eng, DictStore(), *(ev("inquiry", T0, customer=f"c{i}") for i in range(30)))
    assert {d.outcome for d in out.decisions} == {"fired"}


def test_an_engagement_rules_own_holdout_wins_over_the_default() -> None:
    eng = engine(
        thanks("always", holdout="100%"),
        thanks("never", holdout=0, type="inquiry"),
        holdout_percent=100.0,
    )
    out = run(eng, DictStore(), ev("meter_reading_submitted", T0), ev("inquiry", T0 + 2 * D))
    assert traced(out) == [("held_out", "held_out", T0), ("fired", "fired", T0 + 2 * D)]


def test_holdout_is_decided_before_the_contact_cap() -> None:
    eng = engine(thanks("first", 90), thanks("held", 10, holdout="100%"))
    out = eng.process(DictStore(), ev("meter_reading_submitted", T0))
    assert traced(out, "held") == [("held_out", "held_out", T0)]  # not deferred


def test_rules_check_rejects_holdout_on_a_service_rule(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "rules:\n"
        "  - {id: care, when: {kind: match, type: inquiry}, action: care, destination: care,\n"
        "     priority: 50, class: service, holdout: 10%, reason: Call them.}\n"
    )
    [problem] = check_rule_pack(pack)
    assert problem.startswith(f"{pack}: rule care: holdout: ")
    assert "service" in problem


# -- first keys --------------------------------------------------------------------------


def first_bill() -> Engine:
    return engine(
        thanks("cap_holder", 90),
        rule(
            "first_bill",
            {"kind": "first", "type": "invoice_issued", "per": "product"},
            class_="engagement",
            priority=60,
            due_by="1d",
        ),
    )


def test_a_deferred_first_candidate_consumes_its_key() -> None:
    eng = first_bill()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("meter_reading_submitted", T0),
        ev("invoice_issued", T0 + H, product="gas"),
        ev("invoice_issued", T0 + 2 * H, product="gas"),
    )
    deferred = only(out, "deferred", "first_bill")
    raised = only(out, "suppressed", "first_bill")
    assert (raised.reason, raised.blocked_by) == ("already_raised", deferred.action_id)


def test_a_suppressed_first_candidate_does_not_consume_its_key() -> None:
    eng = engine(
        rule(
            "first_bill",
            {"kind": "first", "type": "invoice_issued", "per": "product"},
            class_="engagement",
        )
    )
    store = DictStore()
    out = run(eng, store, ev("invoice_issued", T0, product="gas", event_id="x"))
    out.extend(eng.process(store, ev("invoice_issued", T0, product="gas", event_id="x")))
    assert traced(out) == [("fired", "fired", T0), ("suppressed", "duplicate_event", T0)]
    rs = store.data[CUSTOMER_PREFIX + "c1"]["r"]["first_bill"]
    assert rs["k"] == ["gas"]


def test_a_held_out_first_candidate_consumes_its_key() -> None:
    eng = engine(
        rule(
            "first_bill",
            {"kind": "first", "type": "invoice_issued", "per": "product"},
            class_="engagement",
            holdout="100%",
        )
    )
    out = run(
        eng,
        DictStore(),
        ev("invoice_issued", T0, product="gas"),
        ev("invoice_issued", T0 + 30 * D, product="gas"),
    )
    assert [d.reason for d in out.decisions] == ["held_out", "already_raised"]


# -- product holdings --------------------------------------------------------------------


def test_products_are_held_from_any_event_naming_them_until_account_closed() -> None:
    eng = Engine(load_rule_pack(), EngineConfig())
    store = DictStore()
    run(
        eng,
        store,
        ev("invoice_issued", T0, product="gas"),
        ev("meter_reading_submitted", T0 + H, product="electricity"),
        ev("inquiry", T0 + 2 * H, product="broadband"),
        ev("account_closed", T0 + 3 * H, product="broadband"),
    )
    out = eng.process(store, ev("address_changed", T0 + 4 * H, attributes={"new_address": "X"}))
    [action] = [a for a in out.actions if a.rule == "propagate_address"]
    assert action.details["products"] == "electricity,gas"
    assert "(electricity, gas)" in action.reason
    late = eng.process(store, ev("invoice_issued", T0 + 2 * H, product="broadband"))  # before
    assert not [a for a in late.actions if a.rule == "propagate_address"]
    again = eng.process(store, ev("address_changed", T0 + 5 * H))
    [action] = [a for a in again.actions if a.rule == "propagate_address"]
    assert action.details["products"] == "electricity,gas"


# -- history warm-up ---------------------------------------------------------------------


def test_warm_up_builds_state_but_emits_nothing_before_emit_from() -> None:
    start = T0 + 100 * D
    eng = Engine(load_rule_pack(), EngineConfig(emit_from_ms=start))
    store = DictStore()
    since = date(2010, 1, 1)
    history = run(
        eng,
        store,
        ev("invoice_issued", T0, product="gas", customer_since=since),
        ev("meter_reading_submitted", start - H, product="gas"),
    )
    assert history.actions == []
    assert {(d.rule, d.outcome, d.reason) for d in history.decisions} >= {
        ("explain_first_bill", "suppressed", "warm_up"),
        ("recognize_tenure", "suppressed", "warm_up"),
        ("thank_meter_reading", "suppressed", "warm_up"),
    }
    out = run(
        eng,
        store,
        ev("invoice_issued", start, product="gas"),  # the old product: no "first bill"
        ev("meter_reading_submitted", start + H, product="gas"),  # the cap was not built
    )
    assert traced(out, "explain_first_bill") == [("suppressed", "already_raised", start)]
    assert only(out, "suppressed", "explain_first_bill").blocked_by is None  # nothing was sent
    assert traced(out, "recognize_tenure")[0][:2] == ("suppressed", "cool_down")
    assert [a.rule for a in out.actions] == ["thank_meter_reading"]


# -- durations and old state -------------------------------------------------------------


def test_reasons_use_human_durations() -> None:
    eng = Engine(load_rule_pack(), EngineConfig())
    out = run(
        eng,
        DictStore(),
        ev("meter_reading_submitted", T0),
        ev("payment_demand_issued", T0 + 476_919_000, reference="D1"),
    )
    [action] = [a for a in out.actions if a.rule == "review_payment_demand"]
    assert "was issued 5 days after the customer's meter reading" in action.reason


def test_state_written_before_revision_2_still_loads() -> None:
    eng = engine(thanks())
    store = DictStore()
    store.data[CUSTOMER_PREFIX + "c1"] = {  # today's main: bare times in the cap, no queue
        "seen": {"old": T0},
        "t": T0,
        "ch": "call",
        "so": T0,
        "cap": [T0],
        "r": {"thanks": {}},
    }
    store.data["p:clock"] = {"max": T0, "wm": T0 - 5 * M}
    out = eng.process(store, ev("meter_reading_submitted", T0 + H))
    deferred = only(out, "deferred")
    assert deferred.blocked_by is None  # the old slot has no action id
    out = eng.advance_watermark(store, T0 + 30 * D)
    assert [a.triggered_at for a in out.actions] == [T0 + 24 * H]

"""The contact cap (docs/design.md, sections 3-5): a capped candidate is deferred, deferred
candidates fire by priority when the cap frees or expire at their due-by, a second one of the
same rule and key is already_waiting, and a blocked candidate names what blocked it."""

from __future__ import annotations

import pytest

from processors.engine import DictStore
from processors.engine.interfaces import CUSTOMER_PREFIX
from tests.support.engine import (
    T0,
    D,
    H,
    M,
    engine,
    ev,
    only,
    rule,
    run,
    run_settled,
    settle,
    thanks,
    traced,
)

# -- the contact cap defers --------------------------------------------------------------


def test_a_capped_candidate_is_deferred_then_fires_when_the_cap_frees() -> None:
    eng = engine(thanks(due_by="3d"))
    store = DictStore()
    out = run_settled(
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
    [at_t0] = run_settled(eng, store, ev("meter_reading_submitted", T0)).actions
    late = eng.process(store, ev("meter_reading_submitted", T0 - H))  # f = T0 is after t
    late.extend(settle(eng, store, T0 + 1))  # the next advance decides it, at its own time
    assert traced(late) == [("fired", "fired", T0 - H)]
    # at T0 + 23 h the window (T0 - 1 h, T0 + 23 h] holds T0 but no longer T0 - 1 h
    out = run_settled(eng, store, ev("meter_reading_submitted", T0 + 23 * H))
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
    run_settled(
        eng, store, ev("meter_reading_submitted", T0), ev("meter_reading_submitted", T0 + H)
    )
    out = eng.advance_watermark(store, T0 + 30 * D)
    assert traced(out) == [("fired", "fired", T0 + 24 * H)]


@pytest.mark.parametrize(("defer_for", "expires"), [(None, 7 * D), ("2d", 2 * D)])
def test_without_a_due_by_a_candidate_waits_defer_for(defer_for: str | None, expires: int) -> None:
    extra = {"defer_for": defer_for} if defer_for else {}
    eng = engine(thanks(**extra), contact_cap_window_ms=30 * D)
    store = DictStore()
    run_settled(
        eng, store, ev("meter_reading_submitted", T0), ev("meter_reading_submitted", T0 + H)
    )
    out = eng.advance_watermark(store, T0 + 60 * D)
    assert traced(out) == [("suppressed", "expired", T0 + H + expires)]


def test_while_a_candidate_waits_the_same_rule_and_key_is_already_waiting() -> None:
    eng = engine(thanks())
    store = DictStore()
    out = run_settled(
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
    out = run_settled(eng, DictStore(), ev("meter_reading_submitted", T0))
    assert [(d.rule, d.outcome) for d in out.decisions] == [
        ("b_high", "fired"),
        ("a_low", "deferred"),
    ]
    assert out.decisions[1].blocked_by == out.actions[0].action_id


def test_a_cool_down_names_the_action_that_started_it() -> None:
    eng = engine(rule("cancel", {"kind": "match", "type": "inquiry"}, cool_down="7d"))
    out = run(eng, DictStore(), ev("inquiry", T0), ev("inquiry", T0 + D))
    assert only(out, "suppressed").blocked_by == out.actions[0].action_id


# -- older state ---------------------------------------------------------------------------


def test_an_older_cap_of_bare_times_still_loads() -> None:
    eng = engine(thanks())
    store = DictStore()
    store.data[CUSTOMER_PREFIX + "c1"] = {  # older state: bare times in the cap, no queue
        "seen": {"old": T0},
        "t": T0,
        "ch": "call",
        "so": T0,
        "cap": [T0],
        "r": {"thanks": {}},
    }
    store.data["p:clock"] = {"max": T0, "wm": T0 - 5 * M}
    out = run_settled(eng, store, ev("meter_reading_submitted", T0 + H))
    deferred = only(out, "deferred")
    assert deferred.blocked_by is None  # the old slot has no action id
    out = eng.advance_watermark(store, T0 + 30 * D)
    assert [a.triggered_at for a in out.actions] == [T0 + 24 * H]

"""Revision 3, order and lateness (docs/design.md 11.1): too-late events, timers set behind the
watermark, sequences paired both ways and count windows completed by late events."""

from __future__ import annotations

import copy
import itertools
from datetime import date

import pytest

from processors.engine import DictStore, Engine, EngineOutput
from schemas.records import InteractionEvent
from tests.support.engine import T0, D, H, M, ev
from tests.support.streams_rev3 import (
    LATENESS,
    actions_of,
    decisions_of,
    default_engine,
    feed,
    feed_settled,
    reasons_of,
)

# -- too late ----------------------------------------------------------------------------


def test_an_event_older_than_the_max_lateness_is_too_late_and_changes_nothing() -> None:
    engine = default_engine()
    store = DictStore()
    feed(engine, store, [ev("inquiry", T0 + 10 * D, customer="c1")])
    watermark = T0 + 10 * D - LATENESS
    before = copy.deepcopy(store.data)
    out = engine.process(
        store, ev("feedback_given", watermark - 7 * D - 1, customer="c2", channel="web")
    )
    assert out.too_late
    assert (out.actions, out.decisions) == ([], [])
    assert store.data == before


def test_an_event_exactly_max_lateness_behind_the_watermark_is_still_applied() -> None:
    engine = default_engine()
    store = DictStore()
    feed(engine, store, [ev("inquiry", T0 + 10 * D, customer="c1")])
    watermark = T0 + 10 * D - LATENESS
    out = engine.process(
        store, ev("feedback_given", watermark - 7 * D, customer="c2", channel="web")
    )
    assert not out.too_late
    assert [a.triggered_at for a in actions_of(out, "route_feedback")] == [watermark - 7 * D]


def test_the_max_lateness_is_never_longer_than_the_dedupe_horizon() -> None:
    engine = default_engine(max_lateness_ms=30 * D, dedupe_horizon_ms=3 * D)
    assert engine.max_lateness_ms == 3 * D
    store = DictStore()
    feed(engine, store, [ev("inquiry", T0 + 10 * D)])
    out = engine.process(store, ev("feedback_given", T0 + 10 * D - LATENESS - 3 * D - 1))
    assert out.too_late


def test_a_redelivery_within_the_max_lateness_is_a_duplicate_and_beyond_it_is_too_late() -> None:
    """Dedupe ids are kept the horizon plus the allowed lateness, so a redelivery that is not
    too late is found a duplicate: a redelivery ten days on cannot act twice."""
    engine = default_engine()
    store = DictStore()
    feedback = ev("feedback_given", T0, event_id="fb", channel="web", text="more tariffs")
    out = feed(engine, store, [feedback, ev("inquiry", T0 + 7 * D + LATENESS)])
    assert len(actions_of(out, "route_feedback")) == 1
    again = engine.process(store, feedback)  # exactly max lateness behind the watermark
    assert not again.too_late
    assert again.actions == []
    assert reasons_of(again, "route_feedback") == ["duplicate_event"]
    feed(engine, store, [ev("inquiry", T0 + 10 * D)])
    late = engine.process(store, feedback)
    assert late.too_late and late.actions == [] and late.decisions == []


# -- timers set behind the watermark --------------------------------------------------------


def _late_case(engine: Engine, store: DictStore) -> EngineOutput:
    """Another customer's event at T0 + 3 d, then a complaint at T0 (late, within the max
    lateness): its 48 h deadline is already behind the watermark."""
    feed(engine, store, [ev("inquiry", T0 + 3 * D, customer="other")])
    return engine.process(store, ev("complaint_filed", T0, reference="C-1", event_id="late"))


def test_a_late_cases_escalation_is_not_due_in_the_call_that_set_it() -> None:
    engine = default_engine()
    store = DictStore()
    out = _late_case(engine, store)
    assert not out.too_late
    # its follow-up too is decided once the watermark passes it: at the next advance
    assert (out.actions, out.decisions) == ([], [])
    # another late event does not move the watermark: still nothing
    out = engine.process(store, ev("inquiry", T0 + 2 * D, customer="other"))
    assert (out.actions, out.decisions) == ([], [])


@pytest.mark.parametrize("how", ["event", "advance", "advance_watermark"])
def test_a_late_cases_escalation_fires_at_the_next_watermark_advance(how: str) -> None:
    engine = default_engine()
    store = DictStore()
    _late_case(engine, store)
    if how == "event":
        out = engine.process(store, ev("inquiry", T0 + 3 * D + 1, customer="other"))
    elif how == "advance":
        out = engine.advance(store, T0 + 3 * D + 1)
    else:
        out = engine.advance_watermark(store, T0 + 3 * D - LATENESS + 1)
    [action] = actions_of(out, "case_unresolved")
    assert (action.triggered_at, action.evidence) == (T0 + 48 * H, ["late"])


def test_a_late_case_and_its_late_resolution_arriving_together_escalate_nothing() -> None:
    engine = default_engine()
    store = DictStore()
    _late_case(engine, store)
    feed(engine, store, [ev("complaint_resolved", T0 + D, reference="C-1")])
    out = engine.advance_watermark(store, T0 + 30 * D)
    # as in time order; nobody said the follow-up was done: it goes overdue (section 12.4)
    assert [a.rule for a in out.actions] == ["case_follow_up", "case_follow_up.when_overdue"]
    assert decisions_of(out, "case_unresolved") == []


def test_a_late_cancellations_gathered_check_in_fires_at_the_next_advance() -> None:
    engine = default_engine()
    store = DictStore()
    feed(engine, store, [ev("inquiry", T0 + D, customer="other")])
    out = engine.process(store, ev("cancellation_requested", T0, product="gas", event_id="x"))
    assert out.actions == [] and out.decisions == []
    out = engine.process(store, ev("inquiry", T0 + D + M, customer="other"))
    [action] = actions_of(out, "life_event_check_in")
    assert (action.triggered_at, action.evidence) == (T0 + H, ["x"])


def test_timers_set_while_timers_fire_fire_in_the_same_advance() -> None:
    """A first bill takes the contact slot; tenure and thanks wait. One advance far ahead
    fires the queue timer at T0 + 24 h (tenure) and the one that sets for T0 + 48 h
    (thanks)."""
    engine = default_engine()
    store = DictStore()
    since = date(2015, 5, 5)
    out = feed(
        engine,
        store,
        [
            ev("invoice_issued", T0, channel="billing", product="gas", customer_since=since,
               attributes={"first_invoice": "true"}),
            ev("meter_reading_submitted", T0 + H, channel="web", customer_since=since),
        ],
    )  # fmt: skip
    assert [a.rule for a in out.actions] == ["explain_first_bill"]
    out = engine.advance_watermark(store, T0 + 5 * D)
    assert [(a.rule, a.triggered_at) for a in out.actions] == [
        ("recognize_tenure", T0 + 24 * H),
        ("thank_meter_reading", T0 + 48 * H),
    ]


def test_a_late_deferred_candidate_whose_expiry_passed_expires_at_the_next_advance() -> None:
    """A first bill two days late while a case is open: nothing in its own call; at the next
    advance it is deferred (open_case) with its due_by (a day after it) already behind the
    watermark, so it expires in that advance, at its due_by."""
    engine = default_engine()
    store = DictStore()
    feed(
        engine,
        store,
        [
            ev("complaint_filed", T0, reference="C-1"),
            ev("inquiry", T0 + 3 * D, customer="other"),
        ],
    )
    bill = ev("invoice_issued", T0 + D, channel="billing", product="gas", event_id="bill",
              attributes={"first_invoice": "true"})  # fmt: skip
    out = engine.process(store, bill)
    assert (out.actions, out.decisions) == ([], [])
    out = engine.process(store, ev("inquiry", T0 + 3 * D + 1, customer="other"))
    assert out.actions == []
    assert [
        (d.outcome, d.reason, d.decided_at, d.evidence)
        for d in decisions_of(out, "explain_first_bill")
    ] == [
        ("deferred", "open_case", T0 + D, ["bill"]),
        ("suppressed", "expired", T0 + 2 * D, ["bill"]),
    ]


def test_the_cap_holds_for_a_candidate_within_the_lateness_after_the_cap_frees() -> None:
    """In time order: a first bill at T0 takes the slot, a reading waits, a second first bill
    at T0 + 24 h + 1 min. At most one engagement action per 24 h."""
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("invoice_issued", T0, channel="billing", product="gas",
               attributes={"first_invoice": "true"}),
            ev("meter_reading_submitted", T0 + H, channel="web"),
            ev("invoice_issued", T0 + D + M, channel="billing", product="power",
               attributes={"first_invoice": "true"}),
        ],
    )  # fmt: skip
    out.extend(engine.advance_watermark(store, T0 + 10 * D))
    engagement = sorted(
        a.triggered_at
        for a in out.actions
        if a.rule in ("explain_first_bill", "thank_meter_reading", "recognize_tenure")
    )
    assert len(engagement) == 3
    assert all(later - earlier >= D for earlier, later in itertools.pairwise(engagement))


# -- sequences pair both ways ----------------------------------------------------------------


def _reading(at: int, event_id: str) -> InteractionEvent:
    return ev("meter_reading_submitted", at, event_id=event_id, channel="web", product="gas")


def _demand(at: int, event_id: str) -> InteractionEvent:
    return ev(
        "payment_demand_issued", at, event_id=event_id, channel="billing", reference="PD-1",
        amount=120.0, currency="EUR",
    )  # fmt: skip


@pytest.mark.parametrize("gap", [2 * M, 2 * D], ids=["within-lateness", "days-late"])
def test_a_reading_arriving_after_its_demand_fires_the_pair_as_in_order(gap: int) -> None:
    in_order = feed(default_engine(), DictStore(), [_reading(T0, "r"), _demand(T0 + gap, "p")])
    reversed_ = feed(default_engine(), DictStore(), [_demand(T0 + gap, "p"), _reading(T0, "r")])
    [expected] = actions_of(in_order, "review_payment_demand")
    assert (expected.triggered_at, expected.evidence) == (T0 + gap, ["r", "p"])
    assert actions_of(reversed_, "review_payment_demand") == [expected]
    assert decisions_of(reversed_, "review_payment_demand") == decisions_of(
        in_order, "review_payment_demand"
    )


def test_a_late_reading_after_the_demand_or_too_long_before_it_pairs_with_nothing() -> None:
    engine = default_engine()
    out = feed(
        engine,
        DictStore(),
        [
            _demand(T0 + 8 * D, "p"),
            _reading(T0 + 8 * D + M, "after"),  # after the demand
            _reading(T0 + 8 * D - 7 * D - 1, "too-early"),  # 1 ms more than 7 d before
        ],
    )
    assert decisions_of(out, "review_payment_demand") == []


def test_a_demand_pairs_once_even_when_more_readings_arrive_late() -> None:
    engine = default_engine()
    out = feed(
        engine, DictStore(), [_demand(T0 + D, "p"), _reading(T0 + 2 * H, "r2"), _reading(T0, "r1")]
    )
    assert [a.evidence for a in actions_of(out, "review_payment_demand")] == [["r2", "p"]]


@pytest.mark.xfail(
    reason="engine: the first late reading to arrive takes the unpaired demand; in time order "
    "the demand pairs with the latest reading before it (other evidence and action_id)",
    strict=True,
)
def test_a_demand_pairs_with_its_latest_reading_whatever_order_late_readings_arrive_in() -> None:
    """All three within the allowed lateness of one another: arrival order must not matter."""
    r1, r2, p = _reading(T0, "r1"), _reading(T0 + 2 * M, "r2"), _demand(T0 + 4 * M, "p")
    in_order = feed(default_engine(), DictStore(), [r1, r2, p])
    late = feed(default_engine(), DictStore(), [p, r1, r2])

    def pairs(out: EngineOutput) -> list[tuple[str, list[str], int]]:
        return [
            (a.action_id, a.evidence, a.triggered_at)
            for a in actions_of(out, "review_payment_demand")
        ]

    assert [evidence for _, evidence, _ in pairs(in_order)] == [["r2", "p"]]
    assert pairs(late) == pairs(in_order)


# -- count windows reached by late events -----------------------------------------------------


def _contacts() -> list[InteractionEvent]:
    return [
        ev("inquiry", T0, channel="call", event_id="a"),
        ev("inquiry", T0 + 2 * M, channel="email", event_id="b"),
        ev("inquiry", T0 + 4 * M, channel="call", event_id="c"),
    ]


def test_a_late_contact_completing_a_later_window_escalates_as_in_order() -> None:
    a, b, c = _contacts()
    in_order = feed_settled(default_engine(), DictStore(), [a, b, c])
    late = feed_settled(default_engine(), DictStore(), [a, c, b])
    [expected] = actions_of(in_order, "omnichannel_escalation")
    assert (expected.triggered_at, expected.evidence) == (T0 + 4 * M, ["a", "b", "c"])
    assert actions_of(late, "omnichannel_escalation") == [expected]
    [decision] = decisions_of(late, "omnichannel_escalation")
    assert (decision.outcome, decision.decided_at) == ("fired", T0 + 4 * M)


def test_a_late_contact_days_behind_completes_the_window_of_a_later_contact() -> None:
    engine = default_engine()
    out = feed_settled(
        engine,
        DictStore(),
        [
            ev("inquiry", T0 + 10 * H, channel="web", event_id="b"),
            ev("inquiry", T0 + 20 * H, channel="web", event_id="c"),
            ev("inquiry", T0 + 3 * D, channel="web", event_id="far"),  # moves the watermark
            ev("inquiry", T0, channel="call", event_id="late"),
        ],
    )
    [action] = actions_of(out, "omnichannel_escalation")
    assert (action.triggered_at, action.evidence) == (T0 + 20 * H, ["late", "b", "c"])


def test_each_window_reaching_the_count_raises_one_candidate_whatever_the_arrival() -> None:
    """A fourth contact at T0 + 1 min arriving last completes the window ending at b (a, it,
    b): the same candidates as in time order, at the same times, one fired."""
    a, b, c = _contacts()
    extra = ev("inquiry", T0 + M, channel="web", event_id="late")
    late = feed_settled(default_engine(), DictStore(), [a, b, c, extra])
    in_order = feed_settled(default_engine(), DictStore(), [a, extra, b, c])

    def seen(out: EngineOutput) -> tuple[list[int], list[str]]:
        decisions = decisions_of(out, "omnichannel_escalation")
        return sorted(d.decided_at for d in decisions), sorted(d.reason for d in decisions)

    assert seen(late) == seen(in_order) == ([T0 + 2 * M, T0 + 4 * M], ["cool_down", "fired"])


def test_sorted_contacts_escalate_at_the_event_that_reaches_the_count() -> None:
    a, b, c = _contacts()
    out = feed_settled(
        default_engine(), DictStore(), [a, b, c, ev("inquiry", T0 + 6 * M, channel="web")]
    )
    assert [(d.reason, d.decided_at) for d in decisions_of(out, "omnichannel_escalation")] == [
        ("fired", T0 + 4 * M),
        ("cool_down", T0 + 6 * M),
    ]

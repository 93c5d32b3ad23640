"""Revision 3, etiquette and consent (docs/design.md 11.4): no engagement on negative moments,
engagement waits while a case is open, one owner, opting out, where to reach the customer
and whom to thank."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from processors.engine import DictStore
from processors.engine.core import NO_ENGAGEMENT
from schemas.records import InteractionEvent
from tests.support.engine import T0, D, H, M, engine, ev, rule, run_settled, settle
from tests.support.streams_rev3 import (
    actions_of,
    decisions_of,
    default_engine,
    feed,
    feed_settled,
    reasons_of,
)

OLD = date(2015, 5, 5)  # five years and more before T0: recognize_tenure applies
FAR = T0 + 60 * D


def opt(
    at: int, engagement: str | None = None, preferred: str | None = None, **kw: Any
) -> InteractionEvent:
    """A contact_preferences_changed event on the web."""
    attributes = {}
    if engagement:
        attributes["engagement"] = engagement
    if preferred:
        attributes["preferred_channel"] = preferred
    return ev("contact_preferences_changed", at, channel="web", attributes=attributes, **kw)


# -- no engagement on negative moments ---------------------------------------------------------

NEGATIVE_AND_OPERATIONAL = [
    "complaint_filed",
    "dispute_opened",
    "cancellation_requested",
    "account_closed",
    "payment_failed",
    "payment_demand_issued",
    "action_acknowledged",
    "action_reassigned",
    "action_done",
]


def test_the_types_that_raise_no_engagement_are_the_negative_and_operational_ones() -> None:
    assert set(NO_ENGAGEMENT) == set(NEGATIVE_AND_OPERATIONAL)


@pytest.mark.parametrize("type_", NEGATIVE_AND_OPERATIONAL)
def test_a_negative_moment_raises_no_engagement_candidate_not_even_a_decision(type_: str) -> None:
    pack_engine = engine(
        rule("any_event", {"kind": "match"}, class_="engagement"),
        rule("tenure", {"kind": "profile", "min_tenure_years": 5}, class_="engagement"),
    )
    out = run_settled(
        pack_engine,
        DictStore(),
        ev(type_, T0, customer_since=OLD, product="gas", reference="R-1"),
    )
    assert out.actions == [] and out.decisions == []
    default = run_settled(default_engine(), DictStore(), ev(type_, T0, customer_since=OLD))
    assert decisions_of(default, "recognize_tenure") == []


def test_the_same_customer_is_recognised_on_a_neutral_event() -> None:
    out = run_settled(default_engine(), DictStore(), ev("inquiry", T0, customer_since=OLD))
    assert reasons_of(out, "recognize_tenure") == ["fired"]


# -- open cases defer engagement -----------------------------------------------------------------


def test_engagement_waits_while_a_case_is_open_and_goes_at_the_closing_events_time() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed_settled(
        eng,
        store,
        [
            ev("complaint_filed", T0, reference="C-1"),
            ev("meter_reading_submitted", T0 + H, channel="web", event_id="reading"),
        ],
    )
    [follow_up] = actions_of(out, "case_follow_up")
    [deferred] = decisions_of(out, "thank_meter_reading")
    assert (deferred.outcome, deferred.reason, deferred.blocked_by) == (
        "deferred",
        "open_case",
        follow_up.action_id,
    )
    out = run_settled(eng, store, ev("complaint_resolved", T0 + 5 * H, reference="C-1"))
    [thanks] = actions_of(out, "thank_meter_reading")
    assert (thanks.triggered_at, thanks.evidence, thanks.action_id) == (
        T0 + 5 * H,
        ["reading"],
        deferred.action_id,
    )
    assert [(d.outcome, d.decided_at) for d in decisions_of(out, "thank_meter_reading")] == [
        ("fired", T0 + 5 * H)
    ]


def test_candidates_released_by_a_closing_go_in_priority_order_subject_to_the_cap() -> None:
    eng = default_engine()
    store = DictStore()
    feed(
        eng,
        store,
        [
            ev("dispute_opened", T0, reference="D-1", customer_since=OLD),
            ev("meter_reading_submitted", T0 + H, channel="web", customer_since=OLD),
        ],
    )
    out = eng.process(store, ev("dispute_resolved", T0 + 2 * H, reference="D-1"))
    assert [(a.rule, a.triggered_at) for a in out.actions] == [("recognize_tenure", T0 + 2 * H)]
    out = eng.advance_watermark(store, FAR)
    assert [
        (a.rule, a.triggered_at) for a in out.actions if a.rule != "case_follow_up.when_overdue"
    ] == [("thank_meter_reading", T0 + 26 * H)]


def test_a_deferral_for_open_cases_names_the_oldest_cases_follow_up_or_none() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed_settled(
        eng,
        store,
        [
            ev("dispute_opened", T0, reference="D-1"),
            ev("complaint_filed", T0 + M, reference="C-1"),
            ev("meter_reading_submitted", T0 + H, channel="web"),
        ],
    )
    oldest = actions_of(out, "case_follow_up")[0]
    assert oldest.details["case_id"] == "D-1"
    assert [(d.reason, d.blocked_by) for d in decisions_of(out, "thank_meter_reading")] == [
        ("open_case", oldest.action_id)
    ]
    # a case whose follow-up an escalation owns has none: the deferral names no action
    owned = DictStore()
    out = feed_settled(
        eng,
        owned,
        [*_escalated(), ev("complaint_filed", T0 + 3 * H, reference="C-2"),
         ev("meter_reading_submitted", T0 + 4 * H, channel="web")],
    )  # fmt: skip
    assert reasons_of(out, "case_follow_up") == ["owned"]
    assert [(d.reason, d.blocked_by) for d in decisions_of(out, "thank_meter_reading")] == [
        ("open_case", None)
    ]


def test_closing_one_of_two_open_cases_releases_nothing() -> None:
    eng = default_engine()
    store = DictStore()
    feed(
        eng,
        store,
        [
            ev("dispute_opened", T0, reference="D-1"),
            ev("complaint_filed", T0 + M, reference="C-1"),
            ev("meter_reading_submitted", T0 + H, channel="web"),
        ],
    )
    out = eng.process(store, ev("dispute_resolved", T0 + 2 * H, reference="D-1"))
    assert actions_of(out, "thank_meter_reading") == []
    out = eng.process(store, ev("complaint_resolved", T0 + 3 * H, reference="C-1"))
    assert [a.triggered_at for a in actions_of(out, "thank_meter_reading")] == [T0 + 3 * H]


def test_a_candidate_waiting_for_a_case_that_never_closes_expires_at_its_due_by() -> None:
    eng = default_engine()
    store = DictStore()
    feed_settled(
        eng,
        store,
        [
            ev("complaint_filed", T0, reference="C-1", product="gas"),
            ev("invoice_issued", T0 + H, channel="billing", product="gas",
               attributes={"first_invoice": "true"}),
        ],
    )  # fmt: skip
    out = eng.advance_watermark(store, FAR)
    assert [(d.reason, d.decided_at) for d in decisions_of(out, "explain_first_bill")] == [
        ("expired", T0 + H + D)
    ]


def test_a_candidate_deferred_for_a_case_already_closed_later_goes_at_the_closing_time() -> None:
    """Opening at T0, reading at T0 + 1 min, resolution at T0 + 2 min, arriving resolution
    first: in time order the thanks goes at T0 + 2 min (the closing), so it must here too."""
    eng = default_engine()
    store = DictStore()
    out = feed(
        eng,
        store,
        [
            ev("complaint_resolved", T0 + 2 * M, reference="C-1"),
            ev("complaint_filed", T0, reference="C-1"),
            ev("meter_reading_submitted", T0 + M, channel="web"),
        ],
    )
    out.extend(eng.advance_watermark(store, FAR))
    assert [a.triggered_at for a in actions_of(out, "thank_meter_reading")] == [T0 + 2 * M]


# -- one owner -------------------------------------------------------------------------------------


def _escalated() -> list[InteractionEvent]:
    """Three contacts over two channels: omnichannel_escalation fires at T0 + 2 h."""
    return [
        ev("inquiry", T0, channel="call"),
        ev("inquiry", T0 + H, channel="email"),
        ev("inquiry", T0 + 2 * H, channel="call"),
    ]


def test_an_escalation_owns_lower_priority_care_candidates_for_its_cool_down() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed_settled(eng, store, _escalated())
    [owner] = actions_of(out, "omnichannel_escalation")
    out = feed_settled(eng, store, [ev("complaint_filed", T0 + D, reference="C-1", event_id="c")])
    [decision] = decisions_of(out, "case_follow_up")
    assert (decision.outcome, decision.reason, decision.blocked_by) == (
        "suppressed",
        "owned",
        owner.action_id,
    )
    out = feed_settled(
        eng,
        store,
        [ev("complaint_filed", T0 + 2 * H + 7 * D, reference="C-2", channel="web")],
    )
    assert reasons_of(out, "case_follow_up") == ["fired"]  # the ownership ended


def test_higher_priority_and_other_destinations_are_not_owned() -> None:
    eng = default_engine()
    store = DictStore()
    feed(eng, store, _escalated())
    out = feed(
        eng,
        store,
        [
            ev("complaint_filed", T0 + D, reference="C-1"),
            ev("cancellation_requested", T0 + D + H, product="gas"),
            ev("feedback_given", T0 + D + 2 * H, channel="web"),
        ],
    )
    out.extend(eng.advance_watermark(store, T0 + 6 * D))
    assert reasons_of(out, "case_unresolved") == ["fired"]  # 90 > 75
    assert reasons_of(out, "life_event_check_in") == ["fired"]  # 80 > 75
    assert reasons_of(out, "route_feedback") == ["fired"]  # destination feedback


def test_a_care_candidate_before_the_escalation_is_not_owned() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed_settled(eng, store, _escalated())
    assert reasons_of(out, "omnichannel_escalation") == ["fired"]  # at T0 + 2 h
    out.extend(eng.process(store, ev("complaint_filed", T0 + H + M, reference="C-1")))  # late
    out.extend(settle(eng, store, T0 + 3 * H))
    assert reasons_of(out, "case_follow_up") == ["fired"]


# -- consent ------------------------------------------------------------------------------------


def test_an_opted_out_customer_gets_no_engagement_but_every_service_action() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed_settled(
        eng,
        store,
        [
            opt(T0, "opt_out"),
            ev("meter_reading_submitted", T0 + H, channel="web", customer_since=OLD),
            ev("feedback_given", T0 + 2 * H, channel="web"),
        ],
    )
    assert [(d.rule, d.outcome, d.reason) for d in out.decisions if d.rule != "route_feedback"] == [
        ("recognize_tenure", "suppressed", "opted_out"),
        ("thank_meter_reading", "suppressed", "opted_out"),
        ("recognize_tenure", "suppressed", "opted_out"),  # the feedback's
    ]
    assert reasons_of(out, "route_feedback") == ["fired"]


def test_opted_out_is_checked_before_the_holdout() -> None:
    eng = default_engine(holdout_percent=100.0)
    out = feed_settled(
        eng,
        DictStore(),
        [opt(T0, "opt_out"), ev("meter_reading_submitted", T0 + H, channel="web")],
    )
    assert reasons_of(out, "thank_meter_reading") == ["opted_out"]
    held = feed_settled(eng, DictStore(), [ev("meter_reading_submitted", T0 + H, channel="web")])
    assert reasons_of(held, "thank_meter_reading") == ["held_out"]


def test_the_preference_event_itself_already_sees_the_opt_out() -> None:
    out = run_settled(default_engine(), DictStore(), opt(T0, "opt_out", customer_since=OLD))
    assert reasons_of(out, "recognize_tenure") == ["opted_out"]


def test_opting_out_holds_from_its_time_and_opting_in_again_ends_it() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed_settled(
        eng,
        store,
        [
            opt(T0 + D, "opt_out"),
            ev("meter_reading_submitted", T0, channel="web"),  # late, before the opt-out
            opt(T0 + 40 * D, "opt_in"),
            ev("meter_reading_submitted", T0 + 35 * D, channel="web"),  # late, opted out
            ev("meter_reading_submitted", T0 + 41 * D, channel="web"),
        ],
    )
    assert [(d.reason, d.decided_at) for d in decisions_of(out, "thank_meter_reading")] == [
        ("fired", T0),
        ("opted_out", T0 + 35 * D),
        ("fired", T0 + 41 * D),
    ]


def test_a_deferred_candidate_of_a_customer_who_opted_out_meanwhile_is_suppressed() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed(
        eng,
        store,
        [
            ev("invoice_issued", T0, channel="billing", product="gas",
               attributes={"first_invoice": "true"}),
            ev("meter_reading_submitted", T0 + H, channel="web", event_id="reading"),
            opt(T0 + 2 * H, "opt_out"),
        ],
    )  # fmt: skip
    assert reasons_of(out, "thank_meter_reading") == ["contact_cap"]
    out = eng.advance_watermark(store, FAR)
    assert out.actions == []
    [decision] = decisions_of(out, "thank_meter_reading")
    assert (decision.outcome, decision.reason, decision.evidence) == (
        "suppressed",
        "opted_out",
        ["reading"],
    )


# -- channel_hint ----------------------------------------------------------------------------------


def test_channel_hint_is_the_preferred_channel_from_its_time() -> None:
    eng = default_engine()
    store = DictStore()
    out = feed(
        eng,
        store,
        [
            ev("feedback_given", T0, channel="call"),
            opt(T0 + H, preferred="email"),
            ev("feedback_given", T0 + 2 * H, channel="call"),
            ev("feedback_given", T0 + 30 * M, channel="call"),  # late: before the preference
        ],
    )
    assert [a.channel_hint for a in actions_of(out, "route_feedback")] == ["call", "email", "call"]


def test_channel_hint_is_the_last_channel_the_customer_used_themselves_else_none() -> None:
    eng = default_engine()
    store = DictStore()
    bill = ev("invoice_issued", T0, channel="billing", product="gas",
              attributes={"first_invoice": "true"})  # fmt: skip
    out = feed_settled(eng, store, [bill])
    assert [a.channel_hint for a in out.actions] == [None]
    out = feed_settled(
        eng,
        store,
        [
            ev("inquiry", T0 + H, channel="web"),
            ev("meter_reading_submitted", T0 + 2 * H, channel="call",
               attributes={"submitted_by": "meter"}),
            ev("feedback_given", T0 + 3 * H, channel="other"),
        ],
    )  # fmt: skip
    assert [a.channel_hint for a in actions_of(out, "route_feedback")] == ["web"]


# -- whom to thank ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "submitted_by", "thanked"),
    [
        ("web", None, True),
        ("call", None, True),
        ("email", None, True),
        ("billing", None, False),
        ("other", None, False),
        ("web", "meter", False),
        ("other", "customer", True),
        ("call", "agent", False),
    ],
)
def test_only_a_reading_a_person_made_is_thanked(
    channel: str, submitted_by: str | None, thanked: bool
) -> None:
    attributes = {"submitted_by": submitted_by} if submitted_by else {}
    out = run_settled(
        default_engine(),
        DictStore(),
        ev("meter_reading_submitted", T0, channel=channel, attributes=attributes),
    )
    assert reasons_of(out, "thank_meter_reading") == (["fired"] if thanked else [])


def test_readings_are_thanked_at_most_once_per_30_days() -> None:
    out = feed_settled(
        default_engine(),
        DictStore(),
        [
            ev("meter_reading_submitted", T0 + i, channel="web")
            for i in (0, 10 * D, 30 * D - 1, 30 * D)
        ],
    )
    assert reasons_of(out, "thank_meter_reading") == ["fired", "cool_down", "cool_down", "fired"]

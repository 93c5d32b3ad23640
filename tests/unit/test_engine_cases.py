"""Revision 3, cases as entities (docs/design.md 11.2): a case's id, which case a resolution
closes, reopened cases, one follow-up per case and one escalation per case left open."""

from __future__ import annotations

from processors.engine import DictStore
from tests.support.engine import T0, D, H, M, ev
from tests.support.streams_rev3 import (
    actions_of,
    decisions_of,
    default_engine,
    feed,
    feed_settled,
    reasons_of,
)

FAR = T0 + 60 * D  # an advance far enough for every 48 h escalation


# -- case ids --------------------------------------------------------------------------------


def test_a_case_is_keyed_by_its_reference() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed(engine, store, [ev("dispute_opened", T0, reference="D-7", event_id="o")])
    out.extend(engine.advance_watermark(store, FAR))
    [follow_up] = actions_of(out, "case_follow_up")
    [escalation] = actions_of(out, "case_unresolved")
    assert follow_up.details["case_id"] == escalation.details["case_id"] == "D-7"
    assert (escalation.triggered_at, escalation.evidence) == (T0 + 48 * H, ["o"])
    assert "D-7" in escalation.reason


def test_an_opening_without_a_reference_is_a_case_of_its_own() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("complaint_filed", T0, event_id="x1", channel="call"),
            ev("complaint_filed", T0 + H, event_id="x2", channel="email"),
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert [a.evidence for a in actions_of(out, "case_follow_up")] == [["x1"], ["x2"]]
    escalations = actions_of(out, "case_unresolved")
    assert [(a.evidence, a.details["case_id"]) for a in escalations] == [
        (["x1"], "x1"),
        (["x2"], "x2"),
    ]


# -- resolutions without a reference -----------------------------------------------------------


def test_a_resolution_without_reference_closes_the_oldest_open_case_of_its_kind_and_product() -> (
    None
):
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("complaint_filed", T0, reference="C-gas", product="gas"),
            ev("complaint_filed", T0 + H, reference="C-power-1", product="power"),
            ev("complaint_filed", T0 + 2 * H, reference="C-power-2", product="power"),
            ev("complaint_resolved", T0 + 3 * H, product="power"),
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert sorted(a.details["case_id"] for a in actions_of(out, "case_unresolved")) == [
        "C-gas",
        "C-power-2",
    ]
    assert engine.unmatched_resolutions == 0


def test_a_resolution_without_reference_falls_back_to_the_oldest_case_of_its_kind() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("dispute_opened", T0, reference="D-1", product="gas"),
            ev("complaint_filed", T0 + H, reference="C-1", product="water"),
            ev("complaint_filed", T0 + 2 * H, reference="C-2", product="gas"),
            ev("complaint_resolved", T0 + 3 * H, product="water"),  # closes C-1
            ev("complaint_resolved", T0 + 4 * H, product="power"),  # no power case: C-2
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert [a.details["case_id"] for a in actions_of(out, "case_unresolved")] == ["D-1"]


def test_a_resolution_matching_no_open_case_changes_no_case_and_is_counted() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("complaint_filed", T0, reference="C-1"),
            ev("dispute_resolved", T0 + H),  # no open dispute
            ev("complaint_resolved", T0 + 2 * H, reference="C-1"),
            ev("complaint_resolved", T0 + 3 * H),  # C-1 closed already
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert engine.unmatched_resolutions == 2
    assert actions_of(out, "case_unresolved") == []


# -- reopening ---------------------------------------------------------------------------------


def test_an_opening_naming_a_closed_case_reopens_it_with_its_own_follow_up_and_escalation() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("complaint_filed", T0, reference="C-1", event_id="first"),
            ev("complaint_resolved", T0 + H, reference="C-1"),
            ev("complaint_filed", T0 + 2 * D, reference="C-1", event_id="again"),
            ev("complaint_filed", T0 + 2 * D + H, reference="C-1", event_id="repeat"),
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert reasons_of(out, "case_follow_up") == ["fired", "fired", "already_raised"]
    first, again = actions_of(out, "case_follow_up")
    assert (first.evidence, again.evidence) == (["first"], ["again"])
    assert first.action_id != again.action_id
    [escalation] = actions_of(out, "case_unresolved")
    assert (escalation.evidence, escalation.triggered_at) == (["again"], T0 + 4 * D)


def test_each_reopening_is_a_new_cycle() -> None:
    engine = default_engine()
    store = DictStore()
    events = []
    for cycle in range(3):
        start = T0 + cycle * 5 * D
        events += [
            ev("dispute_opened", start, reference="D-1", event_id=f"open{cycle}"),
            ev("dispute_resolved", start + H, reference="D-1"),
        ]
    out = feed(engine, store, events)
    out.extend(engine.advance_watermark(store, FAR))
    assert [a.evidence for a in actions_of(out, "case_follow_up")] == [
        ["open0"],
        ["open1"],
        ["open2"],
    ]
    assert actions_of(out, "case_unresolved") == []


# -- one follow-up per case ----------------------------------------------------------------


def test_repeats_of_an_open_case_are_already_raised_blocked_by_its_follow_up() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed_settled(
        engine,
        store,
        [
            ev("dispute_opened", T0, reference="D-1", channel="call", event_id="o1"),
            ev("dispute_opened", T0 + H, reference="D-1", channel="email", event_id="o2"),
            ev("dispute_opened", T0 + 2 * H, reference="D-1", channel="web", event_id="o3"),
        ],
    )
    [follow_up] = actions_of(out, "case_follow_up")
    decisions = decisions_of(out, "case_follow_up")
    assert [(d.outcome, d.reason, d.evidence, d.blocked_by) for d in decisions] == [
        ("fired", "fired", ["o1"], None),
        ("suppressed", "already_raised", ["o2"], follow_up.action_id),
        ("suppressed", "already_raised", ["o3"], follow_up.action_id),
    ]


def test_two_cases_get_two_follow_ups() -> None:
    out = feed_settled(
        default_engine(),
        DictStore(),
        [
            ev("dispute_opened", T0, reference="D-1"),
            ev("complaint_filed", T0 + M, reference="C-1"),
        ],
    )
    assert [a.details["case_id"] for a in actions_of(out, "case_follow_up")] == ["D-1", "C-1"]


# -- case_unresolved per case --------------------------------------------------------------


def test_each_case_still_open_48h_after_it_opened_is_escalated_once() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("complaint_filed", T0, reference="C-1", event_id="c1"),
            ev("complaint_filed", T0 + H, reference="C-2", event_id="c2"),
            ev("complaint_filed", T0 + 2 * H, reference="C-3", event_id="c3"),
            ev("complaint_filed", T0 + 3 * H, reference="C-1", event_id="c1-again"),
            ev("complaint_resolved", T0 + 47 * H, reference="C-2"),
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert [(a.evidence, a.triggered_at) for a in actions_of(out, "case_unresolved")] == [
        (["c1"], T0 + 48 * H),  # the case's first opening keeps its deadline
        (["c3"], T0 + 50 * H),
    ]


# -- a resolution arriving before its opening -----------------------------------------------


def test_a_resolution_arriving_before_its_opening_closes_the_case_the_opening_finds() -> None:
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("complaint_resolved", T0 + 3 * M, reference="C-1"),
            ev("complaint_filed", T0, reference="C-1", event_id="late"),
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert [a.evidence for a in actions_of(out, "case_follow_up")] == [["late"]]
    assert decisions_of(out, "case_unresolved") == []
    assert engine.unmatched_resolutions == 0


def test_a_case_resolved_before_its_opening_arrived_is_not_reopened_by_it() -> None:
    """The late opening is the case's own (it precedes the resolution), not a new cycle: a
    later repeat of the closed case reopens it as the first cycle would."""
    engine = default_engine()
    store = DictStore()
    out = feed(
        engine,
        store,
        [
            ev("dispute_resolved", T0 + D, reference="D-1"),
            ev("dispute_opened", T0, reference="D-1", event_id="late"),
            ev("dispute_opened", T0 + 3 * D, reference="D-1", event_id="reopen"),
        ],
    )
    out.extend(engine.advance_watermark(store, FAR))
    assert [a.evidence for a in actions_of(out, "case_follow_up")] == [["late"], ["reopen"]]
    assert [a.evidence for a in actions_of(out, "case_unresolved")] == [["reopen"]]

"""Each pattern kind, event-time timers and arbitration, with small packs built in the test."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from processors.engine import DictStore, Engine, EngineConfig, EngineOutput
from processors.engine.actions import ACTION_TIMER
from processors.engine.interfaces import CLOCK_KEY, TIMER_INDEX_KEY
from processors.engine.rules import CustomerProfile
from processors.engine.timers import all_timers
from schemas.records import InteractionEvent
from tests.support.engine import T0, D, H, M, engine, ev, fired, rule, run, run_settled


def decisions(out: EngineOutput, rule_id: str | None = None) -> list[tuple[str, str]]:
    return [(d.outcome, d.reason) for d in out.decisions if rule_id is None or d.rule == rule_id]


# -- match -------------------------------------------------------------------------------


def test_match_conditions_type_channel_product_fields_attributes() -> None:
    eng = engine(
        rule(
            "vip_web_gas",
            {
                "kind": "match",
                "type": ["inquiry", "complaint_filed"],
                "channel": "web",
                "product": ["gas"],
                "fields": {"source": "portal", "reference": None},
                "attributes": {"tier": ["gold", "platinum"]},
            },
        )
    )
    good = {"channel": "web", "product": "gas", "attributes": {"tier": "gold"}}

    def hit(**changes: Any) -> bool:
        fields = {**good, **changes}
        event = InteractionEvent(
            event_id=f"m{len(str(changes))}{sorted(changes)}",
            customer_id="c",
            channel=fields.pop("channel"),
            type=fields.pop("type", "inquiry"),
            occurred_at=T0,
            source=fields.pop("source", "portal"),
            **fields,
        )
        return bool(eng.process(DictStore(), event).actions)

    assert hit()
    assert hit(type="complaint_filed")
    assert not hit(type="payment_received")
    assert not hit(channel="call")
    assert not hit(product="power")
    assert not hit(source="ivr")
    assert not hit(reference="R1")  # fields.reference: null means "absent"
    assert not hit(attributes={"tier": "silver"})
    assert not hit(attributes={})


def is_big_payment(event: InteractionEvent, customer: CustomerProfile) -> bool:
    """A predicate for the escape hatch test (module:function)."""
    return (event.amount or 0) >= 1000 and "gas" in customer.products


def test_python_predicate_escape_hatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_PREDICATE_MODULES", "tests.unit.test_engine_kinds")
    eng = engine(
        rule(
            "big_payment",
            {
                "kind": "match",
                "type": "payment_received",
                "predicate": "tests.unit.test_engine_kinds:is_big_payment",
            },
        )
    )
    store = DictStore()
    out = run(
        eng,
        store,
        ev("payment_received", T0, amount=5000.0),  # no gas product yet
        ev("account_opened", T0 + 1, product="gas"),
        ev("payment_received", T0 + 2, amount=10.0),
        ev("payment_received", T0 + 3, amount=1000.0, event_id="big"),
    )
    assert [a.evidence for a in out.actions] == [["big"]]


def test_any_type_with_no_type_condition_sees_unknown_types() -> None:
    eng = engine(rule("anything_on_web", {"kind": "match", "channel": "web"}))
    out = eng.process(DictStore(), ev("brand_new_type", T0, channel="web"))
    assert fired(out) == ["anything_on_web"]


# -- first occurrence --------------------------------------------------------------------


def test_first_per_key_fires_once_per_key_ever_and_traces_repeats() -> None:
    eng = engine(rule("first_bill", {"kind": "first", "type": "invoice_issued", "per": "product"}))
    store = DictStore()
    out = run(
        eng,
        store,
        ev("invoice_issued", T0, product="gas"),
        ev("invoice_issued", T0 + 400 * D, product="gas"),
        ev("invoice_issued", T0 + 401 * D, product="power"),
        ev("invoice_issued", T0 + 402 * D),  # no product: its own key
    )
    assert [a.details for a in out.actions] and len(out.actions) == 3
    assert decisions(out) == [
        ("fired", "fired"),
        ("suppressed", "already_raised"),
        ("fired", "fired"),
        ("fired", "fired"),
    ]


def test_first_per_customer() -> None:
    eng = engine(rule("first_contact", {"kind": "first", "type": "inquiry"}))
    store = DictStore()
    out = run(
        eng,
        store,
        ev("inquiry", T0, product="gas"),
        ev("inquiry", T0 + D, product="power"),
        ev("inquiry", T0, customer="c2"),
    )
    assert [a.customer_id for a in out.actions] == ["c1", "c2"]


# -- count in a sliding window -----------------------------------------------------------


def counting(min_channels: int = 2) -> Engine:
    return engine(
        rule(
            "bouncing",
            {
                "kind": "count",
                "type": ["inquiry", "complaint_filed"],
                "window": "72h",
                "min_count": 3,
                "min_channels": min_channels,
            },
            reason="{count} contacts over {channel_count} channels ({channels}) in {window}.",
        )
    )


def test_count_window_includes_both_edges() -> None:
    eng = counting()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("inquiry", T0, channel="call", event_id="a"),
        ev("inquiry", T0 + 36 * H, channel="web", event_id="b"),
        ev("complaint_filed", T0 + 72 * H, channel="call", event_id="c"),
    )
    [action] = out.actions
    assert action.evidence == ["a", "b", "c"]
    assert action.triggered_at == T0 + 72 * H
    assert action.reason == "3 contacts over 2 channels (call, web) in 72 hours."


def test_count_window_excludes_an_event_one_ms_too_old() -> None:
    eng = counting()
    out = run(
        eng,
        DictStore(),
        ev("inquiry", T0 - 1, channel="call"),
        ev("inquiry", T0 + 36 * H, channel="web"),
        ev("inquiry", T0 + 72 * H, channel="call"),
    )
    assert out.actions == []


def test_count_needs_the_minimum_of_distinct_channels() -> None:
    out = run(counting(), DictStore(), *(ev("inquiry", T0 + i * H) for i in range(4)))
    assert out.actions == []
    out = run(counting(1), DictStore(), *(ev("inquiry", T0 + i * H) for i in range(3)))
    assert len(out.actions) == 1


def test_count_with_a_late_event_counts_it_at_its_own_time() -> None:
    eng = counting()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("inquiry", T0 + 10 * H, channel="web", event_id="b"),
        ev("inquiry", T0 + 20 * H, channel="web", event_id="c"),
        ev("inquiry", T0, channel="call", event_id="late"),  # late: window [T0 - 72h, T0]
    )
    # its own window holds it alone; the window ending at c, as in order, now reaches three
    assert [(a.triggered_at, a.evidence) for a in out.actions] == [
        (T0 + 20 * H, ["late", "b", "c"])
    ]
    out = run(eng, store, ev("inquiry", T0 + 30 * H, channel="web", event_id="d"))
    assert out.actions[0].evidence == ["late", "b", "c", "d"]


# -- sequence ----------------------------------------------------------------------------


def sequence(correlate: str | None = None) -> Engine:
    when: dict[str, Any] = {
        "kind": "sequence",
        "first": {"type": "meter_reading_submitted"},
        "then": {"type": "payment_demand_issued"},
        "within": "7d",
    }
    if correlate:
        when["correlate"] = correlate
    return engine(
        rule("demand_after_reading", when, reason="Demand {gap} after the reading of {first_date}.")
    )


@pytest.mark.parametrize(("gap", "fires"), [(0, True), (7 * D, True), (7 * D + 1, False)])
def test_sequence_within_is_inclusive(gap: int, fires: bool) -> None:
    out = run(
        sequence(),
        DictStore(),
        ev("meter_reading_submitted", T0, event_id="r"),
        ev("payment_demand_issued", T0 + gap, event_id="p"),
    )
    assert [a.evidence for a in out.actions] == ([["r", "p"]] if fires else [])


def test_sequence_needs_a_before_b() -> None:
    out = run(
        sequence(),
        DictStore(),
        ev("payment_demand_issued", T0),
        ev("meter_reading_submitted", T0 + H),
    )
    assert out.actions == []


def test_sequence_uses_the_latest_reading_and_renders_the_gap() -> None:
    out = run(
        sequence(),
        DictStore(),
        ev("meter_reading_submitted", T0, event_id="r1"),
        ev("meter_reading_submitted", T0 + 2 * D, event_id="r2"),
        ev("payment_demand_issued", T0 + 5 * D, event_id="p"),
    )
    [action] = out.actions
    assert action.evidence == ["r2", "p"]
    assert action.reason == "Demand 72 hours after the reading of 2026-01-03."


def test_sequence_correlated_on_a_field() -> None:
    eng = sequence("product")
    out = run(
        eng,
        DictStore(),
        ev("meter_reading_submitted", T0, product="gas"),
        ev("payment_demand_issued", T0 + D, product="power"),
        ev("payment_demand_issued", T0 + D, product="gas", event_id="p-gas"),
    )
    assert [a.evidence[1] for a in out.actions] == ["p-gas"]


# -- absence and timers ------------------------------------------------------------------


def absence(**config: Any) -> Engine:
    return engine(
        rule(
            "unresolved",
            {
                "kind": "absence",
                "first": {"type": "dispute_opened"},
                "missing": {"type": "dispute_resolved"},
                "within": "48h",
                "correlate": "reference",
            },
            reason="Case {reference} ({first_what}, {first_date}) open for {within}.",
        ),
        **config,
    )


def test_absence_fires_at_the_deadline_when_the_watermark_passes_it() -> None:
    eng = absence()
    store = DictStore()
    out = run(eng, store, ev("dispute_opened", T0, reference="R1", event_id="d1"))
    assert out.actions == []
    # watermark = max occurred_at - 5 min: an event at deadline + 5 min - 1 ms is not enough
    out = run(eng, store, ev("inquiry", T0 + 48 * H + 5 * M - 1, customer="other"))
    assert out.actions == []
    out = run(eng, store, ev("inquiry", T0 + 48 * H + 5 * M, customer="other"))
    [action] = out.actions
    assert (action.customer_id, action.triggered_at, action.evidence) == (
        "c1",
        T0 + 48 * H,
        ["d1"],
    )
    assert action.reason == "Case R1 (a dispute, 2026-01-01) open for 48 hours."
    # the absence timer is gone; the fired action's lapse is pending (docs/design.md 12.2)
    left = list(all_timers(store))
    lapse = T0 + 48 * H + EngineConfig().action_horizon_ms
    assert left == [[lapse, "c1", ACTION_TIMER, action.action_id]]


def test_absence_resolution_exactly_at_the_deadline_is_in_time() -> None:
    eng = absence()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("dispute_opened", T0, reference="R1"),
        ev("dispute_resolved", T0 + 48 * H, reference="R1"),
    )
    out.extend(eng.advance_watermark(store, T0 + 100 * D))
    assert out.actions == []
    assert store.get(TIMER_INDEX_KEY) == []


def test_absence_resolution_one_ms_late_does_not_stop_the_escalation() -> None:
    eng = absence()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("dispute_opened", T0, reference="R1"),
        ev("dispute_resolved", T0 + 48 * H + 1, reference="R1"),
    )
    assert out.actions == []  # the watermark has not passed the deadline yet
    out = eng.advance_watermark(store, T0 + 48 * H)
    assert [a.triggered_at for a in out.actions] == [T0 + 48 * H]


def test_absence_is_correlated_on_reference() -> None:
    eng = absence()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("dispute_opened", T0, reference="R1", event_id="d1"),
        ev("dispute_opened", T0 + H, reference="R2", event_id="d2"),
        ev("dispute_resolved", T0 + 2 * H, reference="R2"),
    )
    out.extend(eng.advance_watermark(store, T0 + 10 * D))
    assert [a.evidence for a in out.actions] == [["d1"]]


def test_timers_fire_for_quiet_customers_in_deadline_then_customer_order() -> None:
    eng = absence()
    store = DictStore()
    run(
        eng,
        store,
        ev("dispute_opened", T0 + H, customer="b", reference="R", event_id="b1"),
        ev("dispute_opened", T0 + H, customer="a", reference="R", event_id="a1"),
        ev("dispute_opened", T0, customer="z", reference="R", event_id="z1"),
    )
    out = eng.process(store, ev("inquiry", T0 + 60 * H, customer="someone-else", event_id="x"))
    assert [(a.customer_id, a.triggered_at) for a in out.actions] == [
        ("z", T0 + 48 * H),
        ("a", T0 + 49 * H),
        ("b", T0 + 49 * H),
    ]


def test_timers_fire_before_the_event_that_advances_the_watermark_is_applied() -> None:
    eng = engine(
        rule(
            "unresolved",
            {
                "kind": "absence",
                "first": {"type": "dispute_opened"},
                "missing": {"type": "dispute_resolved"},
                "within": "48h",
            },
        ),
        rule("cancel", {"kind": "match", "type": "cancellation_requested"}),
    )
    store = DictStore()
    run(eng, store, ev("dispute_opened", T0))
    out = eng.process(store, ev("cancellation_requested", T0 + 3 * D))
    assert fired(out) == ["unresolved", "cancel"]


def test_late_start_event_whose_deadline_passed_fires_at_the_next_advance() -> None:
    eng = absence()
    store = DictStore()
    run(eng, store, ev("inquiry", T0 + 6 * D))
    out = eng.process(store, ev("dispute_opened", T0, reference="R9", event_id="late"))
    assert out.actions == []  # never due at the moment it is set
    out = eng.process(store, ev("inquiry", T0 + 6 * D + H))
    assert [(a.triggered_at, a.evidence) for a in out.actions] == [(T0 + 48 * H, ["late"])]


def test_late_start_and_its_late_resolution_arriving_together_escalate_nothing() -> None:
    eng = absence()
    store = DictStore()
    run(eng, store, ev("inquiry", T0 + 6 * D))
    run(eng, store, ev("dispute_opened", T0, reference="R9", event_id="late"))
    run(eng, store, ev("dispute_resolved", T0 + D, reference="R9"))
    out = eng.process(store, ev("inquiry", T0 + 6 * D + H))
    assert out.actions == []


def test_an_event_beyond_the_maximum_lateness_is_too_late_and_not_applied() -> None:
    eng = absence()
    store = DictStore()
    run(eng, store, ev("inquiry", T0 + 10 * D))
    before = repr(store.data)
    out = eng.process(store, ev("dispute_opened", T0, reference="R9", event_id="late"))
    assert out.too_late and out.actions == [] and out.decisions == []
    assert repr(store.data) == before


def test_late_start_event_already_resolved_by_an_earlier_arrival() -> None:
    eng = absence()
    store = DictStore()
    run(eng, store, ev("dispute_resolved", T0 + H, reference="R9"))
    out = eng.process(store, ev("dispute_opened", T0, reference="R9"))
    out.extend(eng.advance_watermark(store, T0 + 10 * D))
    assert out.actions == []


def test_late_resolution_cannot_undo_a_fired_timer() -> None:
    eng = absence()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("dispute_opened", T0, reference="R1"),
        ev("inquiry", T0 + 3 * D),
        ev("dispute_resolved", T0 + H, reference="R1"),  # late, after the escalation fired
    )
    assert fired(out) == ["unresolved"]


def test_advance_is_an_idle_tick_with_lateness_and_never_moves_back() -> None:
    eng = absence()
    store = DictStore()
    run(eng, store, ev("dispute_opened", T0, reference="R1"))
    assert eng.advance(store, T0 + 48 * H).actions == []  # watermark = now - 5 min
    assert eng.watermark(store) == T0 + 48 * H - 5 * M
    assert len(eng.advance(store, T0 + 48 * H + 5 * M).actions) == 1
    assert eng.advance_watermark(store, T0).actions == []
    assert eng.watermark(store) == T0 + 48 * H
    assert store.data[CLOCK_KEY]["max"] == T0


# -- profile -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "at", "fires"),
    [
        (date(2021, 1, 1), T0, True),  # exactly 5 years on 2026-01-01
        (date(2021, 1, 2), T0, False),
        (date(2021, 1, 2), T0 + D, True),
        (date(2020, 2, 29), T0 - 307 * D, True),  # 2025-02-28 counts for a Feb 29 start
        (date(2020, 2, 29), T0 - 308 * D, False),
    ],
)
def test_profile_tenure_boundaries(since: date, at: int, fires: bool) -> None:
    eng = engine(
        rule(
            "loyal",
            {"kind": "profile", "min_tenure_years": 5},
            reason="With us {tenure_years} years since {since}.",
        )
    )
    out = eng.process(DictStore(), ev("inquiry", at, customer_since=since))
    assert len(out.actions) == (1 if fires else 0)
    if fires:
        assert out.actions[0].reason.startswith("With us 5 years since ")


def test_profile_remembers_customer_since_from_earlier_events() -> None:
    eng = engine(rule("loyal", {"kind": "profile", "min_tenure_years": 5}))
    store = DictStore()
    out = run(
        eng,
        store,
        ev("inquiry", T0, customer_since=date(2019, 6, 1)),
        ev("payment_received", T0 + 40 * D),
    )
    assert len(out.actions) == 2


# -- arbitration -------------------------------------------------------------------------


def engagement_pair() -> Engine:
    return engine(
        rule(
            "thanks",
            {"kind": "match", "type": "meter_reading_submitted"},
            class_="engagement",
            priority=20,
        ),
        rule("loyal", {"kind": "profile", "min_tenure_years": 5}, class_="engagement", priority=30),
        rule("care", {"kind": "match", "type": "meter_reading_submitted"}, priority=10),
    )


def test_contact_cap_keeps_the_highest_priority_engagement_and_never_caps_service() -> None:
    out = run_settled(
        engagement_pair(),
        DictStore(),
        ev("meter_reading_submitted", T0, customer_since=date(2000, 1, 1)),
    )
    # the service rule decides as the event arrives, the engagement ones once the watermark
    # passes it, highest priority first
    assert fired(out) == ["care", "loyal"]
    assert [(d.rule, d.outcome, d.reason) for d in out.decisions] == [
        ("care", "fired", "fired"),
        ("loyal", "fired", "fired"),
        ("thanks", "deferred", "contact_cap"),
    ]


@pytest.mark.parametrize(("gap", "capped"), [(24 * H - 1, True), (24 * H, False)])
def test_contact_cap_window_is_24h(gap: int, capped: bool) -> None:
    eng = engagement_pair()
    store = DictStore()
    run_settled(eng, store, ev("meter_reading_submitted", T0))
    out = run_settled(eng, store, ev("meter_reading_submitted", T0 + gap))
    assert decisions(out, "thanks") == [
        ("deferred", "contact_cap") if capped else ("fired", "fired")
    ]


def test_capped_candidate_is_deferred_and_fires_when_the_cap_frees() -> None:
    eng = engagement_pair()
    store = DictStore()
    out = run(
        eng,
        store,
        ev("meter_reading_submitted", T0, customer_since=date(2000, 1, 1)),
        ev("inquiry", T0 + 2 * D),
    )
    [thanks] = [a for a in out.actions if a.rule == "thanks"]
    assert thanks.triggered_at == T0 + 24 * H


def test_contact_cap_is_configurable() -> None:
    eng = engine(
        rule("thanks", {"kind": "match", "type": "meter_reading_submitted"}, class_="engagement"),
        contact_cap=2,
    )
    out = run_settled(
        eng, DictStore(), *(ev("meter_reading_submitted", T0 + i * H) for i in range(3))
    )
    assert decisions(out) == [("fired", "fired"), ("fired", "fired"), ("deferred", "contact_cap")]


def test_cool_down_per_key_and_suppressed_candidates_do_not_restart_it() -> None:
    eng = engine(
        rule(
            "per_product",
            {
                "kind": "sequence",
                "first": {"type": "inquiry"},
                "then": {"type": "complaint_filed"},
                "within": "30d",
                "correlate": "product",
            },
            cool_down="10d",
        )
    )
    store = DictStore()
    out = run(
        eng,
        store,
        ev("inquiry", T0, product="gas"),
        ev("inquiry", T0, product="power"),
        ev("complaint_filed", T0 + D, product="gas"),
        ev("complaint_filed", T0 + D, product="power"),  # other key: fires
        ev("complaint_filed", T0 + 9 * D, product="gas"),  # suppressed
        ev("complaint_filed", T0 + 11 * D, product="gas"),  # 10 d after the fired one
    )
    assert decisions(out) == [
        ("fired", "fired"),
        ("fired", "fired"),
        ("suppressed", "cool_down"),
        ("fired", "fired"),
    ]


def test_holdout_is_deterministic_and_recorded_as_held_out() -> None:
    eng = engine(
        rule("ask", {"kind": "match", "type": "inquiry"}, class_="engagement"),
        holdout_percent=50.0,
    )
    outcomes = {}
    for i in range(200):
        out = run_settled(eng, DictStore(), ev("inquiry", T0, customer=f"c{i}"))
        [decision] = out.decisions
        outcomes[f"c{i}"] = decision.outcome
        assert (decision.outcome == "held_out") == (not out.actions)
        if decision.outcome == "held_out":
            assert (decision.reason, decision.action_id) == ("held_out", None)
    held = sum(1 for o in outcomes.values() if o == "held_out")
    assert 60 < held < 140
    again = run_settled(eng, DictStore(), ev("inquiry", T0 + D, customer="c7"))
    assert again.decisions[0].outcome == outcomes["c7"]
    none_held = engine(rule("ask", {"kind": "match", "type": "inquiry"}))
    assert all(
        none_held.process(DictStore(), ev("inquiry", T0, customer=f"c{i}")).actions
        for i in range(50)
    )


# -- dedupe ------------------------------------------------------------------------------


def test_dedupe_remembers_ids_for_the_horizon_then_forgets_them() -> None:
    eng = engine(
        rule("cancel", {"kind": "match", "type": "cancellation_requested"}), dedupe_horizon_ms=D
    )
    store = DictStore()
    out = run(
        eng,
        store,
        ev("cancellation_requested", T0, event_id="same"),
        ev("cancellation_requested", T0, event_id="same"),
    )
    assert decisions(out) == [("fired", "fired"), ("suppressed", "duplicate_event")]
    run(eng, store, *(ev("inquiry", T0 + i * H) for i in range(1, 40)))
    assert "same" not in store.data["c:c1"]["seen"]
    assert len(store.data["c:c1"]["seen"]) <= 31  # at most 1.25 horizon of ids


# -- relationship ledger -----------------------------------------------------------------


def test_relationship_rule_fires_on_a_deficit_of_three_within_the_window() -> None:
    eng = engine(
        rule(
            "repair",
            {"kind": "relationship", "min_deficit": 3},
            cool_down="30d",
            reason="{negatives} negative, {positives} positive, balance {balance}.",
        ),
        relationship={
            "window": "90d",
            "positive": ["payment_received"],
            "negative": ["complaint_filed", "payment_failed"],
        },
    )
    store = DictStore()
    out = run(
        eng,
        store,
        ev("complaint_filed", T0, event_id="n1"),
        ev("payment_received", T0 + D),
        ev("payment_failed", T0 + 2 * D, event_id="n2"),
        ev("complaint_filed", T0 + 3 * D, event_id="n3"),
    )
    assert out.actions == []  # 3 negatives - 1 positive = 2
    out = run(eng, store, ev("payment_failed", T0 + 4 * D, event_id="n4"))
    [action] = out.actions
    assert action.evidence == ["n1", "n2", "n3", "n4"]
    assert action.reason == "4 negative, 1 positive, balance -3."
    assert action.details["relationship_balance"] == "-3"
    # 91 days later the old moments have left the window
    out = run(eng, store, ev("payment_failed", T0 + 95 * D))
    assert out.actions == []

"""The default rule pack, rule by rule, exactly as docs/design.md, section 5.2 states it."""

from __future__ import annotations

from datetime import date

import pytest

from processors.engine import DictStore, Engine, EngineConfig, load_rule_pack
from schemas.records import DESTINATIONS
from tests.support.engine import T0, D, H, ev, fired, run_settled

M = 60_000

TABLE = {
    # rule: (destination, priority, class)
    "life_event_check_in": ("care", 80, "service"),
    "explain_first_bill": ("billing", 60, "engagement"),
    "case_follow_up": ("care", 70, "service"),
    "case_unresolved": ("care", 90, "service"),
    "thank_meter_reading": ("recognition", 20, "engagement"),
    "review_payment_demand": ("billing", 85, "service"),
    "recognize_tenure": ("recognition", 30, "engagement"),
    "route_feedback": ("feedback", 40, "service"),
    "propagate_address": ("crm", 60, "service"),
    "omnichannel_escalation": ("care", 75, "service"),
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_rule_pack(), EngineConfig())


def test_pack_has_the_ten_rules_of_the_table_plus_repair_relationship() -> None:
    pack = load_rule_pack()
    assert [r.id for r in pack.rules] == [*TABLE, "repair_relationship"]
    for r in pack.rules:
        assert r.action == r.id
        assert r.destination in DESTINATIONS
        if r.id in TABLE:
            assert (r.destination, r.priority, r.rule_class) == TABLE[r.id], r.id
    cool = {r.id: r.cool_down_ms for r in pack.rules if r.cool_down_ms}
    assert cool == {
        "life_event_check_in": 30 * D,
        "thank_meter_reading": 30 * D,
        "recognize_tenure": 365 * D,
        "omnichannel_escalation": 7 * D,
        "repair_relationship": 30 * D,
    }
    repair = pack.rule("repair_relationship")
    assert (repair.destination, repair.rule_class, repair.min_deficit) == ("care", "service", 3)


def test_explain_first_bill_once_per_product_due_a_day_later(engine: Engine) -> None:
    store = DictStore()
    out = run_settled(
        engine,
        store,
        ev("account_opened", T0 - 10 * D, product="gas"),  # a new product (within 90 d)
        ev("invoice_issued", T0, product="gas", reference="INV-1", amount=84.5, currency="EUR"),
        ev("invoice_issued", T0 + 30 * D, product="gas", reference="INV-2"),
        ev(
            "invoice_issued",
            T0 + 31 * D,
            product="power",
            reference="INV-3",
            attributes={"first_invoice": "true"},  # the invoice says it is the first
        ),
    )
    first, power = [a for a in out.actions if a.rule == "explain_first_bill"]
    assert (first.destination, first.priority, first.due_by) == ("billing", 60, T0 + D)
    assert first.details["invoice_id"] == "INV-1"
    assert first.details["product"] == "gas"
    assert "INV-1" in first.reason and "84.50 EUR" in first.reason
    assert power.details["invoice_id"] == "INV-3"
    reasons = [d.reason for d in out.decisions if d.rule == "explain_first_bill"]
    assert reasons == ["fired", "already_raised", "fired"]


@pytest.mark.parametrize("case_type", ["dispute_opened", "complaint_filed"])
def test_case_follow_up_for_disputes_and_complaints(engine: Engine, case_type: str) -> None:
    out = run_settled(engine, DictStore(), ev(case_type, T0, reference="CASE-7", channel="email"))
    [action] = [a for a in out.actions if a.rule == "case_follow_up"]
    assert (action.destination, action.priority, action.channel_hint) == ("care", 70, "email")
    assert action.details["case_id"] == "CASE-7"
    assert "CASE-7" in action.reason


@pytest.mark.parametrize(
    ("resolved_after", "escalated"), [(48 * H, False), (48 * H + 1, True), (None, True)]
)
def test_case_unresolved_48h_boundary(
    engine: Engine, resolved_after: int | None, escalated: bool
) -> None:
    store = DictStore()
    events = [ev("dispute_opened", T0, reference="D-1", event_id="open")]
    if resolved_after is not None:
        events.append(ev("dispute_resolved", T0 + resolved_after, reference="D-1"))
    out = run_settled(engine, store, *events)
    out.extend(engine.advance_watermark(store, T0 + 30 * D))
    unresolved = [a for a in out.actions if a.rule == "case_unresolved"]
    assert [(a.triggered_at, a.evidence) for a in unresolved] == (
        [(T0 + 48 * H, ["open"])] if escalated else []
    )
    if escalated:
        assert unresolved[0].details["case_id"] == "D-1"
        assert unresolved[0].reason.startswith("The case D-1 (a dispute opened on 2026-01-01)")


def test_case_unresolved_needs_the_same_reference(engine: Engine) -> None:
    store = DictStore()
    out = run_settled(
        engine,
        store,
        ev("complaint_filed", T0, reference="C-1"),
        ev("complaint_resolved", T0 + H, reference="C-2"),
    )
    out.extend(engine.advance_watermark(store, T0 + 3 * D))
    assert fired(out, "case_unresolved") == ["case_unresolved"]


def test_thank_meter_reading_is_engagement_and_capped_by_a_first_bill(engine: Engine) -> None:
    store = DictStore()
    out = run_settled(engine, store, ev("meter_reading_submitted", T0, product="gas"))
    [action] = out.actions
    assert (action.rule, action.destination, action.priority) == (
        "thank_meter_reading",
        "recognition",
        20,
    )
    # after the thanks' 30-day cool-down, a first bill takes the day's one contact
    out = run_settled(
        engine,
        store,
        ev("invoice_issued", T0 + 30 * D, product="gas", attributes={"first_invoice": "true"}),
        ev("meter_reading_submitted", T0 + 30 * D + H),
    )
    assert fired(out) == ["explain_first_bill"]
    assert [d.reason for d in out.decisions if d.rule == "thank_meter_reading"] == ["contact_cap"]


@pytest.mark.parametrize(("gap", "fires"), [(7 * D, True), (7 * D + 1, False), (0, True)])
def test_review_payment_demand_within_7d_after_a_meter_reading(
    engine: Engine, gap: int, fires: bool
) -> None:
    out = run_settled(
        engine,
        DictStore(),
        ev("meter_reading_submitted", T0, event_id="read"),
        ev("payment_demand_issued", T0 + gap, event_id="demand", reference="PD-1", amount=120.0),
    )
    review = [a for a in out.actions if a.rule == "review_payment_demand"]
    assert [a.evidence for a in review] == ([["read", "demand"]] if fires else [])
    if fires:
        assert (review[0].destination, review[0].priority) == ("billing", 85)
        assert review[0].details["demand_id"] == "PD-1"


def test_recognize_tenure_at_most_once_per_365_days(engine: Engine) -> None:
    store = DictStore()
    since = date(2020, 6, 1)
    out = run_settled(engine, store, ev("inquiry", T0, customer_since=since, channel="web"))
    [action] = [a for a in out.actions if a.rule == "recognize_tenure"]
    assert (action.destination, action.priority) == ("recognition", 30)
    assert action.details["customer_since"] == "2020-06-01"
    assert "5 years (since 2020-06-01)" in action.reason
    out = run_settled(engine, store, ev("payment_received", T0 + 365 * D - 1))
    assert [d.reason for d in out.decisions if d.rule == "recognize_tenure"] == ["cool_down"]
    out = run_settled(engine, store, ev("payment_received", T0 + 365 * D))
    assert fired(out, "recognize_tenure") == ["recognize_tenure"]


def test_recognize_tenure_not_before_five_years(engine: Engine) -> None:
    out = run_settled(engine, DictStore(), ev("inquiry", T0, customer_since=date(2021, 1, 2)))
    assert fired(out, "recognize_tenure") == []


def test_route_feedback_keeps_the_text(engine: Engine) -> None:
    out = engine.process(
        DictStore(),
        ev("feedback_given", T0, channel="web", text="The app logs me out", product="gas"),
    )
    [action] = out.actions
    assert (action.rule, action.destination, action.priority) == ("route_feedback", "feedback", 40)
    assert action.details["feedback"] == "The app logs me out"


def test_propagate_address_lists_sorted_products_and_the_new_address(engine: Engine) -> None:
    store = DictStore()
    out = run_settled(
        engine,
        store,
        ev("account_opened", T0, product="gas"),
        ev("account_opened", T0 + H, product="credit_card"),
        ev("account_opened", T0 + 2 * H, product="auto_insurance"),
        ev(
            "address_changed",
            T0 + D,
            channel="web",
            attributes={"new_address": "12 Quay Street, Galway"},
        ),
    )
    [action] = out.actions
    assert (action.rule, action.destination, action.priority) == ("propagate_address", "crm", 60)
    assert action.details["products"] == "auto_insurance,credit_card,gas"
    assert action.details["new_address"] == "12 Quay Street, Galway"
    assert "12 Quay Street, Galway" in action.reason


def test_omnichannel_escalation_three_contacts_two_channels_72h(engine: Engine) -> None:
    store = DictStore()
    out = run_settled(
        engine,
        store,
        ev("inquiry", T0, channel="call", event_id="a"),
        ev("inquiry", T0 + 24 * H, channel="call", event_id="b"),
        ev("inquiry", T0 + 72 * H, channel="web", event_id="c"),
    )
    [action] = out.actions
    assert (action.rule, action.destination, action.priority) == (
        "omnichannel_escalation",
        "care",
        75,
    )
    assert action.evidence == ["a", "b", "c"]
    assert "3 times over 2 channels (call, web) within 72 hours" in action.reason
    # cool-down 7 d: more contacts inside it are suppressed, exactly 7 d later they fire again
    out = run_settled(
        engine,
        store,
        ev("inquiry", T0 + 72 * H + 1, channel="email"),
        ev("inquiry", T0 + 72 * H + 7 * D - 2, channel="email"),
        ev("inquiry", T0 + 72 * H + 7 * D - 1, channel="call"),
        ev("inquiry", T0 + 72 * H + 7 * D, channel="web"),
    )
    reasons = [d.reason for d in out.decisions if d.rule == "omnichannel_escalation"]
    assert reasons == ["cool_down", "fired"]


def test_omnichannel_escalation_counts_only_contacts(engine: Engine) -> None:
    out = run_settled(
        engine,
        DictStore(),
        ev("inquiry", T0, channel="call"),
        ev("payment_received", T0 + H, channel="billing"),
        ev("meter_reading_submitted", T0 + 2 * H, channel="web"),
        ev("inquiry", T0 + 3 * H, channel="email"),
    )
    assert fired(out, "omnichannel_escalation") == []


def test_repair_relationship_when_negatives_outnumber_positives_by_three(engine: Engine) -> None:
    store = DictStore()
    out = run_settled(
        engine,
        store,
        ev("payment_failed", T0, event_id="n1"),
        ev("payment_failed", T0 + D, event_id="n2"),
    )
    assert out.actions == []
    out = run_settled(engine, store, ev("payment_failed", T0 + 2 * D, event_id="n3"))
    [action] = out.actions
    assert (action.rule, action.destination, action.priority) == ("repair_relationship", "care", 85)
    assert action.evidence == ["n1", "n2", "n3"]
    assert action.details["relationship_balance"] == "-3"
    out = run_settled(engine, store, ev("payment_failed", T0 + 3 * D))
    assert [d.reason for d in out.decisions] == ["cool_down"]


def test_positive_moments_offset_negative_ones(engine: Engine) -> None:
    out = run_settled(
        engine,
        DictStore(),
        ev("payment_failed", T0),
        ev("payment_received", T0 + H),
        ev("payment_failed", T0 + 2 * H),
        ev("payment_failed", T0 + 3 * H),
    )
    assert fired(out, "repair_relationship") == []


def test_our_own_actions_are_not_moments_of_the_ledger(engine: Engine) -> None:
    store = DictStore()
    out = run_settled(
        engine,
        store,
        ev("dispute_opened", T0, reference="D-1"),
        ev("dispute_opened", T0 + H, reference="D-2"),
    )
    out.extend(engine.advance_watermark(store, T0 + 3 * D))
    # two disputes (-2); the escalations are moments' actions, not the customer's: no -3
    # (the follow-ups, never done, go overdue after 24 h: section 12.4)
    assert [(a.rule, a.triggered_at, a.details["relationship_balance"]) for a in out.actions] == [
        ("case_follow_up", T0, "-1"),
        ("case_follow_up", T0 + H, "-2"),
        ("case_follow_up.when_overdue", T0 + 24 * H, "-2"),
        ("case_follow_up.when_overdue", T0 + 25 * H, "-2"),
        ("case_unresolved", T0 + 48 * H, "-2"),
        ("case_unresolved", T0 + 49 * H, "-2"),
    ]
    assert [d for d in out.decisions if d.rule == "repair_relationship"] == []


def test_reasons_use_human_durations() -> None:
    eng = Engine(load_rule_pack(), EngineConfig())
    out = run_settled(
        eng,
        DictStore(),
        ev("meter_reading_submitted", T0),
        ev("payment_demand_issued", T0 + 476_919_000, reference="D1"),
    )
    [action] = [a for a in out.actions if a.rule == "review_payment_demand"]
    assert "was issued 5 days after the customer's meter reading" in action.reason

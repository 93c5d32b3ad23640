"""Actions that get done (docs/design.md 12): every fired action followed until done, its
status changes as records, overdue and lapsed by event-time timers, `when_overdue`
escalations, working hours, the one owner's name, and status events that change nothing
counted by reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processors.engine import DictStore, Engine, EngineConfig, RulePackError, parse_rule_pack
from processors.engine.hours import business_deadline, parse_hours
from processors.engine.state import ACTIONS, CUSTOMER_PREFIX, LEDGER, MAX_OPEN_ACTIONS
from schemas.records import ActionStatus
from tests.support.engine import T0, D, H, M, ev, rule, run, run_settled, settle, status
from tests.support.streams_rev3 import DEFAULT_PACK, default_engine

HORIZON = EngineConfig().action_horizon_ms


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _follow_up(engine: Engine, store: DictStore, at: int = T0) -> str:
    """A complaint whose follow-up (case_follow_up, due_by 24 h) has fired: its action id."""
    out = run_settled(engine, store, ev("complaint_filed", at, reference="R1", event_id="cf"))
    [action] = [a for a in out.actions if a.rule == "case_follow_up"]
    assert action.due_by == at + 24 * H
    assert [(s.action_id, s.status, s.at) for s in out.statuses] == [(action.action_id, "open", at)]
    return action.action_id


def _statuses(statuses: list[ActionStatus]) -> list[tuple[str, str | None, str | None, int]]:
    return [(s.status, s.owner, s.resolution, s.at) for s in statuses]


def test_an_action_is_opened_acknowledged_reassigned_and_done_in_event_time() -> None:
    engine, store = default_engine(), DictStore()
    action_id = _follow_up(engine, store)
    out = run_settled(
        engine,
        store,
        status("action_acknowledged", T0 + H, action_id, owner="ann"),
        status("action_acknowledged", T0 + 2 * H, action_id, owner="bob"),  # another owner
        status("action_reassigned", T0 + 3 * H, action_id, owner="bob"),  # the same: no change
        status("action_reassigned", T0 + 4 * H, action_id, owner="cy"),
        status("action_done", T0 + 5 * H, action_id, resolution="completed"),
        status("action_done", T0 + 6 * H, action_id, resolution="completed"),  # done already
    )
    assert _statuses(out.statuses) == [
        ("acknowledged", "ann", None, T0 + H),
        ("reassigned", "bob", None, T0 + 2 * H),
        ("reassigned", "cy", None, T0 + 4 * H),
        ("done", "cy", "completed", T0 + 5 * H),
    ]
    assert {s.event_id is not None for s in out.statuses} == {True}
    assert {(s.customer_id, s.rule, s.destination) for s in out.statuses} == {
        ("c1", "case_follow_up", "care")
    }
    assert out.ignored == {"unchanged": 1, "done": 1}
    assert out.actions == []
    later = settle(engine, store, T0 + 60 * D)  # done: never overdue, never lapses
    assert [s for s in later.statuses if s.action_id == action_id] == []


def test_overdue_fires_when_the_watermark_passes_the_due_by_never_before() -> None:
    engine, store = default_engine(), DictStore()
    action_id = _follow_up(engine, store)
    due_by = T0 + 24 * H
    early = settle(engine, store, due_by - 1)
    assert early.statuses == [] and early.actions == []
    out = settle(engine, store, due_by)
    assert _statuses(out.statuses)[0] == ("overdue", None, None, due_by)
    [escalation] = out.actions
    assert (escalation.rule, escalation.action, escalation.destination, escalation.priority) == (
        "case_follow_up.when_overdue",
        "escalate_to_team_lead",
        "care",
        95,
    )
    assert escalation.evidence == [action_id] and action_id in escalation.reason
    assert escalation.triggered_at == due_by and escalation.details["overdue_action"] == action_id
    assert [(d.rule, d.outcome, d.action_id) for d in out.decisions] == [
        ("case_follow_up.when_overdue", "fired", escalation.action_id)
    ]
    # the escalation is followed too (no due_by: it lapses at the horizon)
    assert [(s.action_id, s.status) for s in out.statuses[1:]] == [(escalation.action_id, "open")]
    ours = {action_id, escalation.action_id}
    again = settle(engine, store, due_by + D)
    assert [s for s in again.statuses if s.action_id in ours] == []  # overdue once
    lapsed = settle(engine, store, due_by + HORIZON)
    assert {(s.action_id, s.status, s.at) for s in lapsed.statuses if s.action_id in ours} == {
        (action_id, "lapsed", due_by + HORIZON),
        (escalation.action_id, "lapsed", due_by + HORIZON),
    }
    late = run_settled(engine, store, status("action_done", due_by + HORIZON + H, action_id))
    assert late.statuses == [] and late.ignored == {"lapsed": 1}


@pytest.mark.parametrize("done_at", [T0 + 23 * H, T0 + 24 * H])
def test_an_action_done_by_its_due_by_is_never_overdue(done_at: int) -> None:
    """A done event at the due_by itself is applied before the overdue timer (both wait for
    the watermark; at one time the held event comes first)."""
    engine, store = default_engine(), DictStore()
    action_id = _follow_up(engine, store)
    out = run(engine, store, status("action_done", done_at, action_id, resolution="unreachable"))
    out.extend(settle(engine, store, T0 + 3 * D))
    assert [s.status for s in out.statuses if s.action_id == action_id] == ["done"]
    assert [a.action for a in out.actions] == ["case_unresolved"]


def test_a_done_event_arriving_after_the_overdue_changes_what_is_left() -> None:
    engine, store = default_engine(), DictStore()
    action_id = _follow_up(engine, store)
    settle(engine, store, T0 + 25 * H)
    out = run_settled(engine, store, status("action_done", T0 + 26 * H, action_id))
    assert _statuses(out.statuses) == [("done", None, None, T0 + 26 * H)]


def test_an_action_without_due_by_lapses_at_the_horizon_after_it_fired() -> None:
    engine, store = default_engine(), DictStore()
    out = run_settled(engine, store, ev("cancellation_requested", T0, product="gas"))
    out.extend(settle(engine, store, T0 + H))  # life_event_check_in gathers 1 h
    [action] = [a for a in out.actions if a.rule == "life_event_check_in"]
    assert action.due_by is None
    assert settle(engine, store, action.triggered_at + HORIZON - 1).statuses == []
    lapsed = settle(engine, store, action.triggered_at + HORIZON)
    assert _statuses(lapsed.statuses) == [("lapsed", None, None, action.triggered_at + HORIZON)]


def test_the_horizon_is_a_setting() -> None:
    engine, store = default_engine(action_horizon_ms=2 * D), DictStore()
    action_id = _follow_up(engine, store)
    out = settle(engine, store, T0 + 24 * H + 2 * D)
    assert ("lapsed", T0 + 24 * H + 2 * D) in [
        (s.status, s.at) for s in out.statuses if s.action_id == action_id
    ]


def test_a_status_of_an_unknown_or_another_customers_action_changes_nothing() -> None:
    engine, store = default_engine(), DictStore()
    action_id = _follow_up(engine, store)
    before = dict(store.data[CUSTOMER_PREFIX + "c1"][ACTIONS])
    out = run_settled(
        engine,
        store,
        status("action_done", T0 + H, "no-such-action"),
        status("action_acknowledged", T0 + H, action_id, customer="c2", owner="ann"),
        status("action_done", T0 + H, None),
    )
    assert out.statuses == [] and out.actions == []
    assert out.ignored == {"unknown": 3}
    assert store.data[CUSTOMER_PREFIX + "c1"][ACTIONS] == before


def test_status_events_are_operational_no_contact_no_ledger_no_any_match() -> None:
    pack = parse_rule_pack(
        {
            "relationship": {"positive": ["action_done"], "negative": []},
            "rules": [
                rule("anything", {"kind": "match"}),
                rule("care_follow", {"kind": "match", "type": "complaint_filed"}, due_by="1h"),
                rule("thanks", {"kind": "match"}, class_="engagement", priority=10),
            ],
        }
    )
    engine, store = Engine(pack), DictStore()
    first = run_settled(engine, store, ev("complaint_filed", T0, event_id="c1e"))
    [action_id] = [a.action_id for a in first.actions if a.rule == "care_follow"]
    out = run_settled(engine, store, status("action_done", T0 + M, action_id))
    assert out.actions == [] and out.decisions == []
    assert [s.status for s in out.statuses] == ["done"]
    assert LEDGER not in store.data[CUSTOMER_PREFIX + "c1"]
    assert store.data[CUSTOMER_PREFIX + "c1"]["ch"] == "call"  # the customer's channel stays


def test_decisions_off_still_follows_the_actions() -> None:
    engine = Engine(DEFAULT_PACK, decisions=False)
    store = DictStore()
    out = run_settled(engine, store, ev("complaint_filed", T0, reference="R1"))
    assert [s.status for s in out.statuses] == ["open"] and out.decisions == []


def test_at_most_so_many_actions_are_open_the_first_to_lapse_goes_first() -> None:
    engine, store = default_engine(), DictStore()
    out = run_settled(
        engine,
        store,
        *(ev("feedback_given", T0 + i * M, text=f"idea {i}") for i in range(MAX_OPEN_ACTIONS + 1)),
    )
    opened = [s for s in out.statuses if s.status == "open"]
    lapsed = [s for s in out.statuses if s.status == "lapsed"]
    assert len(opened) == MAX_OPEN_ACTIONS + 1
    assert [(s.action_id, s.at) for s in lapsed] == [(opened[0].action_id, opened[-1].at)]
    actions = store.data[CUSTOMER_PREFIX + "c1"][ACTIONS]
    assert sum(1 for entry in actions.values() if entry[5] != "lapsed") == MAX_OPEN_ACTIONS


# -- the one owner (docs/design.md 11.2) -----------------------------------------------------


def _owner(engine: Engine, store: DictStore) -> str:
    contacts = [
        ev("inquiry", T0, channel="call"),
        ev("inquiry", T0 + M, channel="email"),
        ev("inquiry", T0 + 2 * M, channel="web"),
    ]
    out = run_settled(engine, store, *contacts)
    [owner] = [a for a in out.actions if a.rule == "omnichannel_escalation"]
    return owner.action_id


def test_the_one_owner_is_named_on_later_actions_and_released_when_done() -> None:
    engine, store = default_engine(), DictStore()
    owner_id = _owner(engine, store)
    run_settled(engine, store, status("action_acknowledged", T0 + H, owner_id, owner="lee"))
    higher = run_settled(engine, store, ev("cancellation_requested", T0 + 2 * H, product="gas"))
    higher.extend(settle(engine, store, T0 + 4 * H))  # life_event_check_in (80) gathers 1 h
    [check_in] = [a for a in higher.actions if a.rule == "life_event_check_in"]
    assert check_in.details["owner"] == "lee"
    owned = run_settled(engine, store, ev("complaint_filed", T0 + 5 * H, reference="R7"))
    assert [(d.rule, d.reason) for d in owned.decisions if d.rule == "case_follow_up"] == [
        ("case_follow_up", "owned")
    ]
    run_settled(engine, store, status("action_done", T0 + 6 * H, owner_id, resolution="completed"))
    released = run_settled(engine, store, ev("complaint_filed", T0 + 7 * H, reference="R8"))
    [follow_up] = [a for a in released.actions if a.rule == "case_follow_up"]
    assert "owner" not in follow_up.details


# -- working hours -----------------------------------------------------------------------------

CARE_HOURS = {"care": {"hours": "Mon-Fri 08:00-18:00", "holidays": ["2026-12-25"]}}


@pytest.mark.parametrize(
    ("raised", "hours", "due"),
    [
        ("2026-12-04T17:00:00+00:00", 24, "2026-12-09T11:00:00+00:00"),  # Fri -> Wed
        ("2026-12-24T17:00:00+00:00", 24, "2026-12-30T11:00:00+00:00"),  # over a holiday
        ("2026-12-05T10:00:00+00:00", 1, "2026-12-07T09:00:00+00:00"),  # raised on a Saturday
        ("2026-12-07T07:00:00+00:00", 10, "2026-12-07T18:00:00+00:00"),  # a whole day
    ],
)
def test_working_hours_count_only_those_hours(raised: str, hours: int, due: str) -> None:
    care = parse_hours(CARE_HOURS["care"]["hours"], CARE_HOURS["care"]["holidays"])
    assert business_deadline(_ms(raised), hours * H, care, "UTC") == _ms(due)


def test_working_hours_are_in_the_business_time_zone() -> None:
    care = parse_hours("Mon-Fri 08:00-18:00")
    # 07:30 UTC on a Monday is 08:30 in Berlin (winter): one hour later, 09:30 Berlin
    deadline = business_deadline(_ms("2026-12-07T07:30:00+00:00"), H, care, "Europe/Berlin")
    assert deadline == _ms("2026-12-07T08:30:00+00:00")


def _hours_pack(**care: Any) -> Engine:
    document = {
        "destinations": {"care": care or CARE_HOURS["care"]},
        "rules": [
            rule(
                "follow",
                {"kind": "match", "type": "complaint_filed"},
                due_by="24h",
                when_overdue={"action": "escalate", "destination": "care", "priority": 95},
            )
        ],
    }
    return Engine(parse_rule_pack(document))


def test_a_destinations_actions_are_due_and_overdue_in_its_working_hours() -> None:
    engine, store = _hours_pack(), DictStore()
    raised = _ms("2026-12-04T17:00:00+00:00")
    out = run_settled(engine, store, ev("complaint_filed", raised))
    due = _ms("2026-12-09T11:00:00+00:00")
    assert [a.due_by for a in out.actions] == [due]
    assert settle(engine, store, due - 1).statuses == []
    overdue = settle(engine, store, due)
    assert [s.status for s in overdue.statuses][:1] == ["overdue"]
    assert [a.action for a in overdue.actions] == ["escalate"]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            {"rules": [rule("r", {"kind": "match", "type": "inquiry"}, when_overdue={
                "action": "x", "destination": "care", "priority": 9})]},
            "rule r: when_overdue: needs a due_by",
        ),
        (
            {"rules": [rule("r", {"kind": "match", "type": "inquiry"}, due_by="1d", when_overdue={
                "action": "x", "destination": "moon", "priority": 9})]},
            "rule r: when_overdue.destination",
        ),
        (
            {"destinations": {"care": {"hours": "Mon-Fri 8-18"}},
             "rules": [rule("r", {"kind": "match", "type": "inquiry"})]},
            "destinations.care.hours",
        ),
        (
            {"destinations": {"care": {"hours": "Mon-Fri 18:00-08:00"}},
             "rules": [rule("r", {"kind": "match", "type": "inquiry"})]},
            "destinations.care.hours",
        ),
        (
            {"destinations": {"care": {"hours": "Mon-Fri 08:00-18:00", "holidays": ["xmas"]}},
             "rules": [rule("r", {"kind": "match", "type": "inquiry"})]},
            "destinations.care.holidays",
        ),
    ],
)  # fmt: skip
def test_rules_check_refuses_what_it_cannot_follow_naming_the_field(
    document: dict[str, Any], field: str
) -> None:
    with pytest.raises(RulePackError) as info:
        parse_rule_pack(document, source="pack.yaml")
    assert any(p.startswith("pack.yaml: ") and field in p for p in info.value.problems), (
        info.value.problems
    )


def test_the_default_pack_follows_up_cases_and_feedback_with_escalations() -> None:
    rules = {r.id: r for r in DEFAULT_PACK.rules}
    assert rules["case_follow_up"].due_by_ms == 24 * H
    assert rules["route_feedback"].due_by_ms == 5 * D
    assert rules["explain_first_bill"].due_by_ms == D
    for rule_id in ("case_follow_up", "route_feedback"):
        escalation = rules[rule_id].when_overdue
        assert escalation is not None
        assert (escalation.action, escalation.destination) == ("escalate_to_team_lead", "care")
    assert DEFAULT_PACK.destinations == ()
    assert datetime.fromtimestamp(T0 / 1000, UTC).year == 2026


@pytest.mark.parametrize(("value", "ms"), [("2d", 2 * D), ("36h", 36 * H), (86400, D)])
def test_the_horizon_comes_from_moments_action_horizon(value: object, ms: int) -> None:
    from common.settings import Settings
    from processors.config import engine_config

    assert engine_config(Settings(action_horizon=value)).action_horizon_ms == ms
    assert engine_config(Settings()).action_horizon_ms == 30 * D


def test_an_event_dated_in_year_9999_gets_a_due_by_a_record_can_carry() -> None:
    """route_feedback's 5 days past 9999-12-31 lie beyond what the schema can write: the
    due_by is the last writable time, so the action encodes instead of going to a DLQ."""
    from schemas.codec import codec_for
    from schemas.validation import TS_MAX

    far = _ms("9999-12-31T00:00:00+00:00")
    out = run(default_engine(), DictStore(), ev("feedback_given", far))
    [action] = [a for a in out.actions if a.rule == "route_feedback"]
    assert action.due_by == TS_MAX
    assert codec_for(type(action)).decode(codec_for(type(action)).encode(action)) == action

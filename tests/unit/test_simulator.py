"""The journey simulator: determinism, distribution, adapters in the loop, seed stories.

How records arrive (late, twice) and the phenomena of docs/design.md section 11 have their
own modules (test_simulator_arrival, test_simulator_realism)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from producers.adapters.email import EmailAdapter
from producers.simulator import (
    DAY,
    EMAIL_TEMPLATES,
    STORIES,
    STORY_CUSTOMERS,
    json_line,
    seed_stories,
    simulate,
    write_simulation,
)
from schemas.codec import event_from_json, to_json_line, validate
from schemas.records import EVENT_TYPES, InteractionEvent
from tests.support.simulated import START, START_MS, population
from tests.support.simulated import events as _population

#: What customers and their systems say; the operational `action_*` types are moments' own.
CUSTOMER_TYPES = frozenset(t for t in EVENT_TYPES if not t.startswith("action_"))


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = list(simulate(150, 45, seed=3, start=START))
    second = list(simulate(150, 45, seed=3, start=START))
    other = list(simulate(150, 45, seed=4, start=START))

    assert first == second
    assert len(first) > 500
    assert [json_line(e) for e in first] != [json_line(e) for e in other]


def test_events_lie_inside_the_simulated_days() -> None:
    times = [e.occurred_at for e in population()]

    assert min(times) >= START_MS and max(times) < START_MS + 120 * DAY


def test_every_event_is_valid_and_ids_come_from_channel_records() -> None:
    events = _population()

    for event in events:
        validate(event)
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    prefixes = {
        "call": ("call-CL11-", "pref-11-"),
        "email": ("email-",),
        "billing": ("billing-B11-",),
        "web": ("web-11-", "pref-11-"),
        "other": ("meter-11-",),
    }
    assert all(e.event_id.startswith(prefixes[e.channel]) for e in events)


def test_fast_json_line_is_byte_for_byte_the_codec_json_form() -> None:
    events = _population()

    for event in population():
        assert json_line(event) == to_json_line(event)
    for event in events[:2000]:
        assert event_from_json(json.loads(json_line(event))) == event


def test_every_channel_and_every_vocabulary_type_at_plausible_rates() -> None:
    events = _population()
    channels = Counter(e.channel for e in events)
    types = Counter(e.type for e in events)
    total = len(events)

    assert set(channels) == {"call", "email", "billing", "web", "other"}
    assert set(types) == CUSTOMER_TYPES
    # Billing is the bulk (monthly invoices and payments); people contact us far less.
    assert 0.55 < channels["billing"] / total < 0.9
    for channel in ("call", "email", "web"):
        assert channels[channel] / total > 0.03, channel
    # Invoices are mostly paid; a few percent of debits fail; demands are rarer still.
    assert 0.03 < types["payment_failed"] / types["invoice_issued"] < 0.12
    assert types["payment_demand_issued"] < types["payment_failed"]
    assert types["payment_received"] > 0.7 * types["invoice_issued"]
    # Inquiries are the commonest contact; some cases are never resolved.
    contacts = ("complaint_filed", "dispute_opened", "feedback_given", "cancellation_requested")
    assert all(types["inquiry"] > types[t] for t in contacts)
    assert 0.5 * types["complaint_filed"] < types["complaint_resolved"] < types["complaint_filed"]
    assert 0.5 * types["dispute_opened"] < types["dispute_resolved"] < types["dispute_opened"]
    assert types["address_changed"] > 0 and types["cancellation_requested"] > 0


def test_channels_follow_a_daily_rhythm() -> None:
    events = _population()
    call_hours = Counter(
        datetime.fromtimestamp(e.occurred_at / 1000, UTC).hour
        for e in events
        if e.channel == "call"
    )
    web_hours = Counter(
        datetime.fromtimestamp(e.occurred_at / 1000, UTC).hour for e in events if e.channel == "web"
    )

    assert set(call_hours) <= set(range(8, 20))  # the call centre is open 08-20
    assert call_hours[10] > 3 * call_hours[19]
    assert web_hours[20] > 3 * web_hours[3]  # evenings online, nights quiet


def test_cases_mostly_carry_references_and_some_are_never_resolved() -> None:
    events = _population()
    openings = [e for e in events if e.type == "dispute_opened"]
    opened = {e.reference for e in openings if e.reference}
    resolved = {e.reference for e in events if e.type == "dispute_resolved" and e.reference}

    assert len(opened) > 0.8 * len({e.reference for e in openings})
    assert resolved <= opened
    never = len(opened - resolved) / len(opened)
    assert 0.05 < never < 0.45  # unresolved ones plus those still open at the end


def test_tenured_customers_and_new_customers_both_exist() -> None:
    events = _population()
    since = {e.customer_id: e.customer_since for e in events if e.customer_since is not None}
    five_years_before = date(START.year - 5, START.month, START.day)

    old = sum(1 for d in since.values() if d <= five_years_before)
    new = sum(1 for d in since.values() if d >= START.date())
    assert old > 0.15 * len(since)
    assert new > 0.15 * len(since)
    opened_customers = {e.customer_id for e in events if e.type == "account_opened"}
    assert len(opened_customers) > 0.2 * 1500


def test_omnichannel_bursts_happen() -> None:
    by_customer: dict[str, list[InteractionEvent]] = {}
    contacts = {"inquiry", "complaint_filed", "dispute_opened", "cancellation_requested"}
    for event in _population():
        if event.type in contacts:
            by_customer.setdefault(event.customer_id, []).append(event)

    bursts = 0
    for history in by_customer.values():
        for i, event in enumerate(history):
            window = [e for e in history[i:] if e.occurred_at - event.occurred_at <= 3 * DAY]
            if len(window) >= 3 and len({e.channel for e in window}) >= 2:
                bursts += 1
                break
    assert bursts >= 15


def test_story_rate_embeds_stories() -> None:
    none = list(simulate(300, 60, seed=5, start=START, story_rate=0.0))
    all_ = list(simulate(300, 60, seed=5, start=START, story_rate=1.0))
    feedback = Counter(e.type for e in all_)["feedback_given"]

    assert feedback > Counter(e.type for e in none)["feedback_given"]
    with pytest.raises(ValueError, match="story_rate"):
        simulate(1, 1, seed=1, story_rate=2.0)


@pytest.mark.parametrize("intent", sorted(EMAIL_TEMPLATES))
def test_every_email_template_maps_to_its_intent(intent: str) -> None:
    adapter = EmailAdapter(customers={})
    expected = {
        "inquiry": "inquiry",
        "complaint": "complaint_filed",
        "dispute": "dispute_opened",
        "feedback": "feedback_given",
        "move": "address_changed",
        "cancel": "cancellation_requested",
        "meter": "meter_reading_submitted",
    }[intent]
    values = {"product": "gas", "reference": "DSP-1-2", "address": "1 Elm Street", "reason": "r",
              "reading": "123"}  # fmt: skip

    for subject, body in EMAIL_TEMPLATES[intent]:
        assert adapter.event_type(subject.format(**values), body.format(**values)) == expected


def test_write_simulation_writes_json_lines_and_parallel_writes_the_same_bytes(
    tmp_path: Path,
) -> None:
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"

    summary = write_simulation(one, 400, 40, 9, start=START, workers=1)
    parallel = write_simulation(two, 400, 40, 9, start=START, workers=2)

    lines = one.read_text(encoding="utf-8").splitlines()
    assert summary.events == len(lines) == sum(summary.by_channel.values())
    assert lines == [to_json_line(e) for e in simulate(400, 40, 9, start=START)]
    assert one.read_bytes() == two.read_bytes()
    assert parallel.by_type == summary.by_type
    assert summary.events_per_second > 0


def test_seed_stories_make_every_rule_fire_for_its_customer(tmp_path: Path) -> None:
    from processors.replay import replay_file

    events = seed_stories(START_MS)
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json_line(e) + "\n" for e in events), encoding="utf-8")
    actions_out = tmp_path / "actions.jsonl"

    replay_file(path, actions_out=actions_out, until_ms=START_MS + 30 * DAY)

    fired = {
        (a["customer_id"], a["rule"])
        for a in map(json.loads, actions_out.read_text(encoding="utf-8").splitlines())
    }
    for rule in STORIES:
        assert (STORY_CUSTOMERS[rule], rule) in fired, rule
    assert {e.channel for e in events} == {"call", "email", "billing", "web"}
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
    assert seed_stories(START_MS) == events


def test_seed_story_cases_carry_their_reference_across_channels() -> None:
    case_types = {"dispute_opened", "complaint_filed", "complaint_resolved", "dispute_resolved"}
    cases = [event for event in seed_stories(0) if event.type in case_types]
    assert cases, "the seed stories include cases"
    assert all(event.reference for event in cases), [e.event_id for e in cases if not e.reference]

"""Properties of the engine over random event streams (hypothesis)."""

from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.engine import DictStore, Engine, EngineConfig, EngineOutput, load_rule_pack
from processors.engine.decisions import (
    CONTACT_CAP,
    EXPIRED,
    FIRED,
    HELD_OUT,
    OPEN_CASE,
    OPTED_OUT,
    REASONS,
)
from processors.engine.interfaces import CUSTOMER_PREFIX, TIMER_CHUNK_PREFIX
from processors.engine.state import MAX_OPEN_ACTIONS
from processors.replay import replay_file
from schemas.codec import to_json_line
from schemas.records import CHANNELS, InteractionEvent
from tests.support.engine import T0, D, H
from tests.support.streams import REPEATS_WITHIN_HORIZON, TYPES, streams

#: The default pack, parsed once: a pack is immutable, and parsing it is most of a small
#: example's time.
PACK = load_rule_pack()
ENGINE = Engine(PACK, EngineConfig())


def run_lines(
    events: list[InteractionEvent], until: int | None = None
) -> tuple[list[str], list[str]]:
    """Actions and decisions as JSON lines, from one process() call per event."""
    store = DictStore()
    out = EngineOutput()
    for event in events:
        out.extend(ENGINE.process(store, event))
    if until is not None:
        out.extend(ENGINE.advance_watermark(store, until))
    return [to_json_line(a) for a in out.actions], [to_json_line(d) for d in out.decisions]


@settings(max_examples=60, deadline=None)
@given(streams())
def test_same_events_same_bytes(events: list[InteractionEvent]) -> None:
    assert run_lines(events, T0 + 400 * D) == run_lines(events, T0 + 400 * D)


@settings(max_examples=60, deadline=None)
@given(streams())
def test_no_duplicate_action_ids_and_one_decision_per_candidate(
    events: list[InteractionEvent],
) -> None:
    engine = Engine(PACK, REPEATS_WITHIN_HORIZON)
    store = DictStore()
    out = EngineOutput()
    for event in events:
        out.extend(engine.process(store, event))
    out.extend(engine.advance_watermark(store, T0 + 400 * D))
    ids = [a.action_id for a in out.actions]
    assert len(ids) == len(set(ids))
    fired = [d.action_id for d in out.decisions if d.outcome == "fired"]
    assert fired == ids  # every action has its fired decision, in the same order
    assert all(d.action_id is None for d in out.decisions if d.outcome not in ("fired", "deferred"))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=streams(max_size=40))
def test_replay_file_equals_process_calls(events: list[InteractionEvent], tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("".join(to_json_line(e) + "\n" for e in events), encoding="utf-8")
    actions, decisions = tmp_path / "a.jsonl", tmp_path / "d.jsonl"
    replay_file(source, actions_out=actions, decisions_out=decisions, until_ms=T0 + 90 * D)
    replayed = (actions.read_text().splitlines(), decisions.read_text().splitlines())
    assert replayed == run_lines(events, T0 + 90 * D)


def state_sizes(store: DictStore) -> dict[str, int]:
    return {
        key: len(json.dumps(value))
        for key, value in store.data.items()
        if key.startswith(CUSTOMER_PREFIX)
    }


@settings(max_examples=3, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_state_stays_bounded_over_a_long_random_stream(seed: int) -> None:
    """A year of one event per customer every ~4 h: state after a year ~ state after 5 months."""
    rnd = random.Random(seed)
    store = DictStore()
    peaks: list[int] = []
    clock = T0
    for month in range(12):
        for i in range(1000):
            clock += rnd.randint(0, 2 * H)
            type_ = rnd.choice(TYPES)
            fields: dict[str, Any] = {}
            if type_ == "address_changed":
                fields["attributes"] = {"new_address": "x"}
            ENGINE.process(
                store,
                InteractionEvent(
                    event_id=f"m{month}-{i}",
                    customer_id=rnd.choice(["ann", "bob", "cy", "dee"]),
                    channel=rnd.choice(CHANNELS),
                    type=type_,
                    occurred_at=clock - rnd.choice([0, 0, 0, 60_000]),
                    product=rnd.choice([None, "gas", "power", "credit_card"]),
                    reference=f"R{rnd.randrange(1_000_000)}",
                    customer_since=date(2010, 1, 1),
                    **fields,
                ),
            )
        peaks.append(max(state_sizes(store).values()))
    assert max(peaks[5:]) < 1.5 * max(peaks[3:5])
    timers = sum(len(v) for k, v in store.data.items() if k.startswith(TIMER_CHUNK_PREFIX))
    # only cases opened in the last 48 h are pending, and the followed actions of each
    # customer (at most MAX_OPEN_ACTIONS open each: docs/design.md 12.2)
    assert timers < 200 + 4 * MAX_OPEN_ACTIONS


# -- revision 2: deferral, control groups, warm-up ---------------------------------------

#: Why a candidate waits (outcome deferred); every other reason but fired and held_out is
#: a suppression's.
DEFERRAL_REASONS = {CONTACT_CAP, OPEN_CASE}
SUPPRESSION_REASONS = set(REASONS) - DEFERRAL_REASONS - {FIRED, HELD_OUT}
#: How a deferred candidate that does not fire ends: its second decision, suppressed.
DEFERRED_ENDS = {EXPIRED, OPTED_OUT}


def run_all(
    engine: Engine, events: list[InteractionEvent], until: int
) -> tuple[EngineOutput, DictStore]:
    store = DictStore()
    out = EngineOutput()
    for event in events:
        out.extend(engine.process(store, event))
    out.extend(engine.advance_watermark(store, until))
    return out, store


@settings(max_examples=60, deadline=None)
@given(
    events=streams(),
    percent=st.sampled_from([0.0, 30.0]),
    until=st.sampled_from([T0, T0 + 20 * D, T0 + 400 * D]),
)
def test_no_candidate_is_both_lost_and_untraced(
    events: list[InteractionEvent], percent: float, until: int
) -> None:
    engine = Engine(PACK, EngineConfig(holdout_percent=percent))
    out, store = run_all(engine, events, until)
    waiting = {
        entry[4]
        for key, value in store.data.items()
        if key.startswith(CUSTOMER_PREFIX)
        for entry in value.get("dq", ())
    }
    fired = {d.action_id for d in out.decisions if d.outcome == "fired"}
    ended = [
        (d.rule, tuple(d.evidence))
        for d in out.decisions
        if d.outcome == "suppressed" and d.reason in DEFERRED_ENDS
    ]
    for d in out.decisions:
        if d.outcome == "suppressed":
            assert d.reason in SUPPRESSION_REASONS
        elif d.outcome == "deferred":
            assert d.reason in DEFERRAL_REASONS
            ends = [
                d.action_id in fired,
                (d.rule, tuple(d.evidence)) in ended,
                d.action_id in waiting,
            ]
            # fired, expired (or opted out meanwhile) or still waiting: exactly one
            assert sum(ends) == 1, (d, ends)
        else:
            assert (d.outcome, d.reason) in (("fired", "fired"), ("held_out", "held_out"))
    assert {a.action_id for a in out.actions} == fired


SERVICE_RULES = {r.id for r in PACK.rules if r.rule_class == "service"}


@settings(max_examples=40, deadline=None)
@given(events=streams(), percent=st.floats(min_value=0, max_value=100))
def test_service_rules_are_never_held_out_at_any_percent(
    events: list[InteractionEvent], percent: float
) -> None:
    engine = Engine(PACK, EngineConfig(holdout_percent=percent))
    out, _ = run_all(engine, events, T0 + 400 * D)
    assert not [d for d in out.decisions if d.rule in SERVICE_RULES and d.outcome == "held_out"]


@settings(max_examples=40, deadline=None)
@given(events=streams(), emit_from=st.sampled_from([None, T0 + 5 * D]))
def test_revision_2_replay_is_byte_identical_twice(
    events: list[InteractionEvent], emit_from: int | None
) -> None:
    def lines() -> tuple[list[str], list[str]]:
        config = EngineConfig(holdout_percent=25.0, emit_from_ms=emit_from)
        out, _ = run_all(Engine(PACK, config), events, T0 + 400 * D)
        return [to_json_line(a) for a in out.actions], [to_json_line(d) for d in out.decisions]

    assert lines() == lines()

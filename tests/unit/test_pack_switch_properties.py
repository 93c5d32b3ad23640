"""Properties of a pack switch over random packs and random event streams (docs/design.md,
section 8): in `replay --rules-change` a switch is deterministic, changes nothing before it and
loses nothing; and the worker's own switch path, batch by batch and across restarts and
rollbacks, gives exactly what replay gives at the time the switch was recorded."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.engine import parse_rule_pack
from processors.engine.rules import RulePack
from processors.replay import replay_events
from schemas.records import InteractionEvent
from tests.support.engine import T0, D
from tests.support.packs import DEFAULT_DOC, new_pack_docs
from tests.support.streams import REPEATS_WITHIN_HORIZON, streams
from tests.support.switching import A_TEXT, Partition, switch_time

A = parse_rule_pack(DEFAULT_DOC)


def new_packs() -> st.SearchStrategy[RulePack]:
    """`new_pack_docs`, parsed."""
    return new_pack_docs().map(parse_rule_pack)


def run(events: list[InteractionEvent], changes: list[tuple[int, RulePack]], until: int) -> Any:
    actions, decisions = replay_events(
        events, pack=A, changes=changes, until_ms=until, config=REPEATS_WITHIN_HORIZON
    )
    return actions, decisions


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), new_packs(), st.integers(min_value=0, max_value=40 * D))
def test_a_switch_is_deterministic_changes_nothing_before_it_and_loses_nothing(
    events: list[InteractionEvent], pack: RulePack, offset: int
) -> None:
    at = T0 + offset
    until = T0 + 60 * D
    actions, decisions = run(events, [(at, pack)], until)
    assert run(events, [(at, pack)], until) == (actions, decisions)
    # before the first event at or after the switch, exactly what the old pack alone does
    k = next((i for i, e in enumerate(events) if e.occurred_at >= at), len(events))
    before_actions, before_decisions = replay_events(
        events[:k], pack=A, config=REPEATS_WITHIN_HORIZON
    )
    assert actions[: len(before_actions)] == before_actions
    assert decisions[: len(before_decisions)] == before_decisions
    # no action twice; every action has a decision that names it fired
    ids = [a.action_id for a in actions]
    assert len(ids) == len(set(ids))
    fired = {d.action_id for d in decisions if d.outcome == "fired"}
    assert set(ids) <= fired
    # a dropped promise names the right reason: removed rules rule_removed, kept rules
    # rule_changed (pending: cancel)
    remaining = {rule.id for rule in pack.rules}
    for d in decisions:
        if d.reason == "rule_removed":
            assert d.rule not in remaining
        if d.reason == "rule_changed":
            assert pack.rule(d.rule).pending == "cancel"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(min_value=0, max_value=40 * D))
def test_switching_to_the_same_pack_changes_nothing(
    events: list[InteractionEvent], offset: int
) -> None:
    until = T0 + 60 * D
    assert run(events, [(T0 + offset, A)], until) == run(events, [], until)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), new_packs())
def test_a_switch_before_every_event_is_the_new_pack_alone(
    events: list[InteractionEvent], pack: RulePack
) -> None:
    until = T0 + 60 * D
    first = min((e.occurred_at for e in events), default=T0)
    switched = run(events, [(first - D, pack)], until)
    alone = replay_events(events, pack=pack, until_ms=until, config=REPEATS_WITHIN_HORIZON)
    assert switched == alone


# -- the worker's switch path against replay -----------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), new_pack_docs(), st.data(), st.booleans())
def test_switching_at_any_point_gives_what_replay_gives_at_the_recorded_time(
    events: list[InteractionEvent], doc: dict[str, Any], data: st.DataObject, restart: bool
) -> None:
    k = data.draw(st.integers(min_value=0, max_value=len(events)), label="batch boundary")
    worker = Partition()
    worker.feed(events[:k])
    at = worker.publish(yaml.safe_dump(doc, sort_keys=False))
    if restart:
        worker.restart()
    worker.feed(events[k:])
    changes = [(switch_time(at), parse_rule_pack(doc))]
    actions, decisions = replay_events(events, pack=A, changes=changes)
    assert (worker.out.actions, worker.out.decisions) == (actions, decisions)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), new_pack_docs(), st.data())
def test_a_rollback_is_a_second_switch_back_and_survives_a_restart(
    events: list[InteractionEvent], doc: dict[str, Any], data: st.DataObject
) -> None:
    k1 = data.draw(st.integers(min_value=0, max_value=len(events)), label="publish")
    k2 = data.draw(st.integers(min_value=k1, max_value=len(events)), label="rollback")
    worker = Partition()
    worker.feed(events[:k1])
    first = worker.publish(yaml.safe_dump(doc, sort_keys=False))
    worker.feed(events[k1:k2])
    worker.restart()
    cancelled = worker.line.pending is not None  # rolled back before the switch happened
    second = worker.publish(A_TEXT)
    worker.feed(events[k2:])
    a, b = A, parse_rule_pack(doc)
    changes: list[tuple[int, Any]] = []
    if not cancelled:
        changes = [(switch_time(first), b), (switch_time(second), a)]
    actions, decisions = replay_events(events, pack=a, changes=changes)
    assert (worker.out.actions, worker.out.decisions) == (actions, decisions)

"""Property tests of a pack switch (DESIGN.md 8) over random packs and random event streams."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.engine import DEFAULT_PACK_PATH, parse_rule_pack
from processors.engine.rules import RulePack
from processors.replay import replay_events
from schemas.records import InteractionEvent
from tests.unit.test_engine import T0, D
from tests.unit.test_engine_properties import REPEATS_WITHIN_HORIZON, streams

DEFAULT_DOC: dict[str, Any] = yaml.safe_load(DEFAULT_PACK_PATH.read_text(encoding="utf-8"))
A = parse_rule_pack(DEFAULT_DOC)


@st.composite
def new_pack_docs(draw: st.DrawFn) -> dict[str, Any]:
    """The default pack's document with rules removed, re-prioritised, re-timed or cancelling."""
    doc = copy.deepcopy(DEFAULT_DOC)
    kept = []
    for raw in doc["rules"]:
        change = draw(st.sampled_from(["same", "same", "remove", "priority", "timing"]))
        if change == "remove" and raw["id"] not in doc["relationship"]["negative_rules"]:
            continue
        if change == "priority":
            raw["priority"] = (raw["priority"] + 7) % 100
            raw["version"] = raw.get("version", 1) + 1
        if change == "timing" and raw["when"]["kind"] == "absence":
            raw["when"]["within"] = draw(st.sampled_from(["1h", "24h", "96h"]))
            raw["version"] = raw.get("version", 1) + 1
            raw["pending"] = draw(st.sampled_from(["keep", "cancel"]))
        kept.append(raw)
    doc["rules"] = kept
    for name in ("positive_rules", "negative_rules"):
        ids = {r["id"] for r in kept}
        doc["relationship"][name] = [r for r in doc["relationship"][name] if r in ids]
    return doc


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

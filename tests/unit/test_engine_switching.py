"""The worker's switch path (`processors.engine.switching`) against `replay --rules-change`."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.engine import DictStore, EngineConfig, EngineOutput, parse_rule_pack
from processors.engine.core import PACK_KEY
from processors.engine.switching import (
    PackLibrary,
    feed,
    pack_id,
    refusal,
    request_switch,
    start,
    tick,
)
from processors.replay import replay_events
from schemas.records import InteractionEvent
from tests.unit.test_engine import T0, D, H, ev
from tests.unit.test_engine_properties import streams
from tests.unit.test_engine_switch_properties import DEFAULT_DOC, new_pack_docs

A_TEXT = yaml.safe_dump(DEFAULT_DOC, sort_keys=False)


def restarted(store: DictStore) -> tuple[PackLibrary, DictStore]:
    """What a restarted host has: the state as its changelog holds it, and no packs in memory."""
    again = DictStore()
    again.data = orjson.loads(orjson.dumps(store.data))
    return PackLibrary(EngineConfig()), again


class Partition:
    """The worker's path for one partition: a lineage, requests between batches, restarts."""

    def __init__(self) -> None:
        self.library = PackLibrary(EngineConfig())
        self.store = DictStore()
        self.line = start(self.library, self.store, self.library.add(A_TEXT, "A"))
        self.out = EngineOutput()

    def feed(self, events: list[InteractionEvent]) -> None:
        for event in events:
            self.line, out = feed(self.library, self.store, self.line, event)
            self.out.extend(out)

    def publish(self, text: str) -> int | None:
        """A pack arrives between two batches; the time the partition will switch at."""
        pid = self.library.add(text, "published")
        self.line = request_switch(self.library, self.store, self.line, pid)
        return None if self.line.pending is None else self.line.pending[1]

    def restart(self) -> None:
        self.library, self.store = restarted(self.store)
        line = self.library.load(self.store)
        assert line is not None
        self.line = line


def switch_time(at: int | None) -> int:
    """The TS of `replay --rules-change` for a switch requested at `at` (None: at once,
    before any event)."""
    return at if at is not None else T0 - 365 * D


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
    actions, decisions = replay_events(events, pack=parse_rule_pack(DEFAULT_DOC), changes=changes)
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
    a, b = parse_rule_pack(DEFAULT_DOC), parse_rule_pack(doc)
    changes: list[tuple[int, Any]] = []
    if not cancelled:
        changes = [(switch_time(first), b), (switch_time(second), a)]
    actions, decisions = replay_events(events, pack=a, changes=changes)
    assert (worker.out.actions, worker.out.decisions) == (actions, decisions)


def case_pack(within: str, version: int, pending: str = "keep") -> str:
    doc = copy.deepcopy(DEFAULT_DOC)
    for raw in doc["rules"]:
        if raw["id"] == "case_unresolved":
            raw["when"]["within"] = within
            raw["version"] = version
            raw["pending"] = pending
    return yaml.safe_dump(doc, sort_keys=False)


def test_a_timer_set_under_the_old_version_fires_under_it_after_a_restart() -> None:
    worker = Partition()
    worker.feed([ev("dispute_opened", T0, reference="R1")])
    at = worker.publish(case_pack("24h", 2))
    assert at == T0 + 1
    worker.feed([ev("inquiry", T0 + H, event_id="later")])  # switches
    worker.restart()
    assert len(worker.line.chain) == 2 and worker.line.pending is None
    assert worker.store.data[PACK_KEY]["versions"]["case_unresolved"] == 2
    worker.feed([ev("inquiry", T0 + 3 * D, event_id="much-later")])
    fired = [a for a in worker.out.actions if a.rule == "case_unresolved"]
    assert [(a.rule_version, a.triggered_at) for a in fired] == [(1, T0 + 2 * D)]


def test_an_idle_tick_switches_after_the_timers_due_by_then_fired_under_the_old_pack() -> None:
    worker = Partition()
    worker.feed([ev("dispute_opened", T0, reference="R1")])
    doc = copy.deepcopy(DEFAULT_DOC)
    doc["rules"] = [r for r in doc["rules"] if r["id"] != "case_unresolved"]
    for name in ("positive_rules", "negative_rules"):
        doc["relationship"][name] = [r for r in doc["relationship"][name] if r != "case_unresolved"]
    worker.publish(yaml.safe_dump(doc, sort_keys=False))
    worker.line, out = tick(worker.library, worker.store, worker.line, T0 + 3 * D)
    assert worker.line.pending is None and len(worker.line.chain) == 2
    assert [a.rule for a in out.actions] == ["case_unresolved"]  # due before the switch
    assert not [d for d in out.decisions if d.reason == "rule_removed"]


def test_a_pack_that_changes_a_rule_without_a_new_version_is_refused_unless_it_ran_before() -> None:
    a = parse_rule_pack(DEFAULT_DOC)
    same_version = parse_rule_pack(yaml.safe_load(case_pack("24h", 1)))
    problems = refusal(a, same_version, "new", set())
    assert problems and "case_unresolved" in problems[0]
    assert refusal(a, parse_rule_pack(yaml.safe_load(case_pack("24h", 2))), "new", set()) == []
    assert refusal(same_version, a, pack_id(A_TEXT), {pack_id(A_TEXT)}) == []  # a rollback


def test_a_partition_without_events_switches_at_once_and_back_calls_a_switch_off() -> None:
    worker = Partition()
    assert worker.publish(case_pack("24h", 2)) is None
    assert worker.line.chain == (pack_id(case_pack("24h", 2)),)
    worker = Partition()
    worker.feed([ev("inquiry", T0)])
    assert worker.publish(case_pack("24h", 2)) == T0 + 1
    assert worker.publish(A_TEXT) is None and worker.line.chain == (pack_id(A_TEXT),)

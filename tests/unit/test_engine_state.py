"""The engine's state layout (processors/engine/state.py): documented, versioned, and state
written by an older version carries on as if it had never stopped.

tests/data/engine_state_v0/ holds real state written by the engine before layout versions
existed (main at 5ffa277): `events.jsonl` is a simulated stream (40 customers, 40 days,
seed 2, every customer living a story), `state.json` the partition's DictStore after the
first `cut` events with `holdout_percent` 20 (so it holds pending timers, a deferred
candidate, held-out rules, cool-downs and first keys).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from processors.engine import DictStore, Engine, EngineConfig, EngineOutput, load_rule_pack
from processors.engine.kinds import RULE_KEYS
from processors.engine.state import (
    CLOCK_KEY,
    CUSTOMER_KEYS,
    CUSTOMER_PREFIX,
    CUSTOMER_STEPS,
    PARTITION_KEYS,
    PARTITION_STEPS,
    STATE_VERSION,
    TIMER_BUCKET_PREFIX,
    StateVersionError,
    upgrade_customer,
    upgrade_partition,
)
from schemas.codec import read_events_jsonl
from schemas.records import InteractionEvent
from tests.support.engine import T0, H, ev

FIXTURE = Path(__file__).parents[1] / "data" / "engine_state_v0"
#: Past the last event: every timer still pending fires (like `replay --until`).
UNTIL_DAYS = 30


class JsonStore:
    """A StateStore that keeps only JSON text, like the worker's changelog: nothing the
    engine changes counts unless it is written back with `set`."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.text = {key: json.dumps(value) for key, value in data.items()}

    def get(self, key: str) -> Any | None:
        text = self.text.get(key)
        return None if text is None else json.loads(text)

    def set(self, key: str, value: Any) -> None:
        self.text[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.text.pop(key, None)


def _fixture() -> tuple[list[InteractionEvent], int, EngineConfig, dict[str, Any]]:
    events = list(read_events_jsonl(FIXTURE / "events.jsonl"))
    written = json.loads((FIXTURE / "state.json").read_text())
    config = EngineConfig(holdout_percent=written["holdout_percent"])
    return events, written["cut"], config, written["data"]


def _continue(
    engine: Engine, store: Any, events: list[InteractionEvent], until: int
) -> EngineOutput:
    out = EngineOutput()
    for event in events:
        out.extend(engine.process(store, event))
    out.extend(engine.advance_watermark(store, until))
    return out


def _uninterrupted() -> tuple[EngineOutput, dict[str, Any], list[InteractionEvent], int]:
    """What the engine of today gives over the whole stream: the outputs after the cut, and
    its state at the cut."""
    events, cut, config, _ = _fixture()
    engine, store = Engine(load_rule_pack(), config), DictStore()
    for event in events[:cut]:
        engine.process(store, event)
    at_cut = copy.deepcopy(store.data)
    until = events[-1].occurred_at + UNTIL_DAYS * 86_400_000
    return _continue(engine, store, events[cut:], until), at_cut, events[cut:], until


def test_the_fixture_holds_state_worth_migrating() -> None:
    _, _, _, data = _fixture()
    customers = [v for k, v in data.items() if k.startswith(CUSTOMER_PREFIX)]
    assert all("v" not in value for value in customers)  # written before versions
    assert "v" not in data[CLOCK_KEY]
    assert any("dq" in value for value in customers)
    assert any(k.startswith(TIMER_BUCKET_PREFIX) for k in data)
    assert any("cd" in rs for value in customers for rs in value.get("r", {}).values())


@pytest.mark.parametrize("store_kind", ["dict", "json"])
def test_state_written_before_versions_carries_on_like_an_uninterrupted_run(
    store_kind: str,
) -> None:
    expected, _, rest, until = _uninterrupted()
    _, _, config, data = _fixture()
    store: Any = DictStore() if store_kind == "dict" else JsonStore(data)
    if isinstance(store, DictStore):
        store.data.update(data)
    restored = _continue(Engine(load_rule_pack(), config), store, rest, until)
    assert restored.actions == expected.actions
    assert restored.decisions == expected.decisions
    assert len(expected.actions) > 20 and len(expected.decisions) > len(expected.actions)
    assert store.get(CLOCK_KEY)["v"] == STATE_VERSION


def test_the_migration_gives_the_state_this_engine_writes() -> None:
    _, at_cut, _, _ = _uninterrupted()
    _, _, _, data = _fixture()
    store = DictStore()
    store.data.update(data)
    upgrade_partition(store, store.data[CLOCK_KEY])
    for key, value in store.data.items():
        if key.startswith(CUSTOMER_PREFIX):
            upgrade_customer(value)
    assert store.data == at_cut


def test_every_key_the_engine_writes_is_documented() -> None:
    events, _, config, _ = _fixture()
    engine, store = Engine(load_rule_pack(), config), DictStore()
    _continue(engine, store, events, events[-1].occurred_at)
    customers = {k: v for k, v in store.data.items() if k.startswith(CUSTOMER_PREFIX)}
    partition = {
        TIMER_BUCKET_PREFIX if k.startswith(TIMER_BUCKET_PREFIX) else k
        for k in store.data
        if k not in customers
    }
    assert partition <= set(PARTITION_KEYS)
    assert {k for value in customers.values() for k in value} <= set(CUSTOMER_KEYS)
    rule_keys = {k for v in customers.values() for rs in v.get("r", {}).values() for k in rs}
    assert rule_keys <= set(RULE_KEYS)
    assert {value["v"] for value in customers.values()} == {STATE_VERSION}
    assert len(CUSTOMER_STEPS) == len(PARTITION_STEPS) == STATE_VERSION


def test_a_contact_cap_of_bare_times_becomes_pairs_of_unknown_actions() -> None:
    engine, store = Engine(load_rule_pack()), DictStore()
    engine.process(store, ev("meter_reading_submitted", T0, event_id="m1"))
    state = store.data[f"{CUSTOMER_PREFIX}c1"]
    state["cap"] = [at for at, _ in state["cap"]]  # how the oldest layout kept it
    del state["v"]
    out = engine.process(store, ev("meter_reading_submitted", T0 + H, event_id="m2"))
    assert state["cap"] == [[T0, ""]] and state["v"] == STATE_VERSION
    deferred = [d for d in out.decisions if d.outcome == "deferred"]
    assert [(d.reason, d.blocked_by) for d in deferred] == [("contact_cap", None)]


def test_state_of_a_newer_engine_is_refused_not_guessed_at() -> None:
    engine, store = Engine(load_rule_pack()), DictStore()
    engine.process(store, ev("inquiry", T0, event_id="e1"))
    store.data[f"{CUSTOMER_PREFIX}c1"]["v"] = STATE_VERSION + 1
    with pytest.raises(StateVersionError, match="newer than this engine"):
        engine.process(store, ev("inquiry", T0 + H, event_id="e2"))
    store.data[CLOCK_KEY]["v"] = STATE_VERSION + 1
    with pytest.raises(StateVersionError, match="partition clock"):
        engine.advance(store, T0 + 2 * H)

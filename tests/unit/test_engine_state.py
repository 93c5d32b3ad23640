"""The engine's state layout (processors/engine/state.py): documented, versioned, and state
written by an older layout carries on: what the layout steps keep goes on as if the engine
had never stopped, and what an older layout did not keep starts empty.

tests/data/engine_state_v0/ to engine_state_v3/ hold real state written by the engine of
each layout (see `_fixture`).
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
    TIMER_CHUNK_PREFIX,
    V3_TIMER_BUCKET_PREFIX,
    StateVersionError,
    upgrade_customer,
    upgrade_partition,
)
from processors.engine.timers import all_timers
from schemas.codec import read_events_jsonl
from schemas.records import InteractionEvent
from tests.support.engine import T0, H, JsonStore, ev

FIXTURES = Path(__file__).parents[1] / "data"
#: Real state of each older layout: the version it was written in -> its directory.
LAYOUTS = {
    0: FIXTURES / "engine_state_v0",
    1: FIXTURES / "engine_state_v1",
    2: FIXTURES / "engine_state_v2",
    3: FIXTURES / "engine_state_v3",
}
#: Past the last event: every timer still pending fires (like `replay --until`).
UNTIL_DAYS = 30
#: Rules whose state the layout steps carry over unchanged and that decide the same way as
#: before revision 3: from an older layout their actions go on exactly as in an uninterrupted
#: run (the absence timers set before the cut fire as promised). What the older layouts did
#: not keep starts empty (cases' histories, product openings, events held for the rules that
#: decide at the watermark, gathering windows, the customer's own channel, a ledger without
#: actions), so the other rules may differ around the cut.
CARRIED_RULES = frozenset({"case_unresolved", "review_payment_demand", "route_feedback"})


def _fixture(
    version: int = 0,
) -> tuple[list[InteractionEvent], int, EngineConfig, dict[str, Any]]:
    """tests/data/engine_state_v<version>/: a simulated stream (40 customers, 40 days, seed 2,
    every customer living a story) and the partition's DictStore after its first `cut`
    events with holdout 20%, as the engine of that layout wrote it (v0: main at 5ffa277,
    before layout versions; v1: main at 779bb07, before revision 3; v2: main at 7454677,
    before actions were followed until done; v3: main at f4df682, before timer chunks). It
    holds pending timers, held-out rules, cool-downs and first keys; v0 and v1 a deferred
    candidate, v2 and v3 events held for the watermark and cases, v3 followed actions."""
    directory = LAYOUTS[version]
    events = list(read_events_jsonl(directory / "events.jsonl"))
    written = json.loads((directory / "state.json").read_text())
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


def _uninterrupted(version: int) -> tuple[EngineOutput, list[InteractionEvent], int]:
    """What the engine of today gives over the whole stream after the cut."""
    events, cut, config, _ = _fixture(version)
    engine, store = Engine(load_rule_pack(), config), DictStore()
    for event in events[:cut]:
        engine.process(store, event)
    until = events[-1].occurred_at + UNTIL_DAYS * 86_400_000
    return _continue(engine, store, events[cut:], until), events[cut:], until


def _carried(out: EngineOutput) -> list[tuple[Any, ...]]:
    return sorted(
        (a.rule, a.customer_id, a.triggered_at, tuple(a.evidence), a.action_id, a.reason)
        for a in out.actions
        if a.rule in CARRIED_RULES
    )


@pytest.mark.parametrize("version", sorted(LAYOUTS))
def test_the_fixture_holds_state_worth_migrating(version: int) -> None:
    _, _, _, data = _fixture(version)
    customers = [v for k, v in data.items() if k.startswith(CUSTOMER_PREFIX)]
    if version == 0:
        assert all("v" not in value for value in customers)  # written before versions
        assert "v" not in data[CLOCK_KEY]
    else:
        assert {value["v"] for value in customers} == {version} == {data[CLOCK_KEY]["v"]}
    if version < 2:
        assert any(m[3] == 0 for value in customers for m in value.get("led", ()))
        assert any("dq" in value for value in customers)
    else:  # revision 3: engagement candidates wait for the watermark, not for the cap
        assert any("he" in value for value in customers)
        assert any("cs" in value for value in customers)
        assert any("ac" in value for value in customers) == (version >= 3)
    assert any(k.startswith(V3_TIMER_BUCKET_PREFIX) for k in data)
    assert any("cd" in rs for value in customers for rs in value.get("r", {}).values())


@pytest.mark.parametrize("store_kind", ["dict", "json"])
@pytest.mark.parametrize("version", sorted(LAYOUTS))
def test_state_of_an_older_layout_carries_on_like_an_uninterrupted_run(
    version: int, store_kind: str
) -> None:
    expected, rest, until = _uninterrupted(version)
    _, _, config, data = _fixture(version)
    store: Any = DictStore() if store_kind == "dict" else JsonStore(data)
    if isinstance(store, DictStore):
        store.data.update(copy.deepcopy(data))
    restored = _continue(Engine(load_rule_pack(), config), store, rest, until)
    assert _carried(restored) == _carried(expected)
    assert len(_carried(expected)) > 10
    assert len(restored.decisions) >= len(restored.actions) > len(_carried(expected))
    assert store.get(CLOCK_KEY)["v"] == STATE_VERSION


@pytest.mark.parametrize("version", sorted(LAYOUTS))
def test_the_migration_keeps_what_it_does_not_change(version: int) -> None:
    _, _, _, data = _fixture(version)
    store = DictStore()
    store.data.update(copy.deepcopy(data))
    upgrade_partition(store, store.data[CLOCK_KEY])
    assert store.data[CLOCK_KEY]["v"] == STATE_VERSION
    for key, value in store.data.items():
        if not key.startswith(CUSTOMER_PREFIX):
            continue
        upgrade_customer(value)
        before = data[key]
        assert value["v"] == STATE_VERSION
        assert set(value) <= set(CUSTOMER_KEYS)
        # revision 3: the ledger holds the customer's own moments only
        assert value.get("led", []) == [m for m in before.get("led", []) if m[3]]
        unchanged = {k for k in before if k not in ("v", "led", "cap")}
        assert {k: value[k] for k in unchanged} == {k: before[k] for k in unchanged}


@pytest.mark.parametrize("version", sorted(LAYOUTS))
def test_the_migration_moves_every_pending_timer_into_chunks(version: int) -> None:
    _, _, _, data = _fixture(version)
    before = sorted(
        entry
        for key, value in data.items()
        if key.startswith(V3_TIMER_BUCKET_PREFIX)
        for entry in value
    )
    store = DictStore()
    store.data.update(copy.deepcopy(data))
    upgrade_partition(store, store.data[CLOCK_KEY])
    assert not [key for key in store.data if key.startswith("p:timers")]
    assert before and list(all_timers(store)) == before


def test_every_key_the_engine_writes_is_documented() -> None:
    events, _, config, _ = _fixture(1)
    engine, store = Engine(load_rule_pack(), config), DictStore()
    _continue(engine, store, events, events[-1].occurred_at)
    customers = {k: v for k, v in store.data.items() if k.startswith(CUSTOMER_PREFIX)}
    partition = {
        TIMER_CHUNK_PREFIX if k.startswith(TIMER_CHUNK_PREFIX) else k
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
    engine.advance_watermark(store, T0)  # the thanks decides once the watermark passes it
    state = store.data[f"{CUSTOMER_PREFIX}c1"]
    state["cap"] = [at for at, _ in state["cap"]]  # how the oldest layout kept it
    del state["v"]
    bill = ev(
        "invoice_issued", T0 + H, event_id="i1", product="gas", attributes={"first_invoice": "true"}
    )
    out = engine.process(store, bill)
    out.extend(engine.advance_watermark(store, T0 + H))
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

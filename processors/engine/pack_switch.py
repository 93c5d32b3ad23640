"""Switching a partition's rule pack (DESIGN.md 8): what each rule keeps, what is dropped.

`switch_pack` builds the engine of the new pack and walks each partition's timers (the
only index of customers with pending timers or deferred candidates) to drop or keep
them; customers' rule state is brought up to date lazily by `Engine.migrate` when next
touched. Runs between two events, never on the per-event path. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from processors.engine.arbitration import QUEUE_TIMER, Step
from processors.engine.candidates import NO_CONTEXT
from processors.engine.core import Engine
from processors.engine.interfaces import EngineOutput, StateStore
from processors.engine.lifecycle import compare_packs
from processors.engine.rules import RulePack
from processors.engine.state import (
    CUSTOMER_PREFIX,
    PACK_KEY,
    STATE_VERSION,
    TIMER_BUCKET_PREFIX,
    TIMER_INDEX_KEY,
    TIMER_VERSION,
    upgrade_customer,
)


def switch_pack(
    previous: Engine, stores: Iterable[StateStore], pack: RulePack, at: int
) -> tuple[Engine, EngineOutput]:
    """Switch partitions from this engine's pack to `pack` at event time `at` (DESIGN.md 8).

    Returns the engine of the new pack and the decisions of the switch. Unchanged
    rules keep all their state. A changed rule keeps its cool-downs, first keys and
    deferred candidates; the timers it set fire under the version that set them unless
    the new version says `pending: cancel` (dropped now: suppressed, `rule_changed`).
    A removed rule's timers and deferred candidates are dropped (suppressed,
    `rule_removed`). A new rule starts empty. Each store records the switch under
    `PACK_KEY` (time, watermark, rule versions); a host adds its offset there.
    Call it between two events, after the watermark advanced and due timers fired.
    """
    changes = compare_packs(previous.pack, pack)
    engine = Engine(pack, previous.config, decisions=previous.decisions)
    engine.decided = previous.decided
    engine.retired = dict(previous.retired)
    dropped = frozenset(changes.removed) | frozenset(changes.added)
    engine.migrations = [*previous.migrations, (frozenset(changes.changed), dropped)]
    engine.epoch = len(engine.migrations)
    for rule_id in changes.changed:
        old_rt = previous.runtime[rule_id]
        engine.retired[(rule_id, old_rt.rule.version)] = old_rt
    out = EngineOutput([], [])
    removed = set(changes.removed)
    cancelled = {rid for rid in changes.changed if engine.rules[rid].pending == "cancel"}
    changed = set(changes.changed)
    versions = {rule.id: rule.version for rule in pack.rules}
    for store in stores:
        _switch_store(engine, store, previous, removed, cancelled, changed, at, out)
        store.set(
            PACK_KEY, {"at": at, "watermark": previous.watermark(store), "versions": versions}
        )
    previous.decided = engine.decided
    return engine, out


def _switch_store(
    engine: Engine,
    store: StateStore,
    previous: Engine,
    removed: set[str],
    cancelled: set[str],
    changed: set[str],
    at: int,
    out: EngineOutput,
) -> None:
    """One partition of `switch_pack`: walk its timers (the only index of customers with
    pending timers or deferred candidates) in (customer, rule, deadline) order."""
    index: list[int] = store.get(TIMER_INDEX_KEY) or []
    timers: list[list[Any]] = []
    for bucket in index:
        timers.extend(store.get(f"{TIMER_BUCKET_PREFIX}{bucket}") or [])
    timers.sort(key=lambda e: (e[1], e[2], e[0], e[3]))
    visited: set[str] = set()
    for deadline, cid, rule_id, key in timers:
        skey = CUSTOMER_PREFIX + cid
        state = store.get(skey)
        if state is None:
            continue
        visited.add(skey)
        if state.get("v") != STATE_VERSION:  # its layout first (state.py), then the switch
            upgrade_customer(state)
            store.set(skey, state)
        step = Step(engine, store, out, cid, state)
        if rule_id == QUEUE_TIMER:
            queue: list[list[Any]] = state.get("dq") or []
            gone = [e for e in queue if e[2] in removed]
            if not gone:
                continue
            for entry in gone:
                queue.remove(entry)
                evidence, version = entry[5], entry[8]
                step._trace(entry[2], version, "suppressed", "rule_removed", None, evidence, at)
            if queue:
                step.schedule_queue(at)
            else:
                state.pop("dq", None)
                state.pop("dqt", None)
                engine.cancel_timer(store, deadline, cid, QUEUE_TIMER, "")
        elif rule_id in removed or rule_id in cancelled or rule_id in changed:
            rs = state.get("r", NO_CONTEXT).get(rule_id)
            pending = None if rs is None else rs.get("p")
            timer = None if pending is None else pending.get(key)
            if timer is None or timer[0] != deadline:
                continue
            if rule_id in changed and rule_id not in cancelled:
                if len(timer) <= TIMER_VERSION:  # remember the version that set it
                    timer.append(previous.rules[rule_id].version)
            else:
                assert pending is not None
                del pending[key]
                engine.cancel_timer(store, deadline, cid, rule_id, key)
                version = (
                    timer[TIMER_VERSION]
                    if len(timer) > TIMER_VERSION
                    else previous.rules[rule_id].version
                )
                reason = "rule_removed" if rule_id in removed else "rule_changed"
                step._trace(rule_id, version, "suppressed", reason, None, [timer[2]], at)
        else:
            continue
        store.set(skey, state)
    for skey in sorted(visited):  # after their timers were handled under the old state
        state = store.get(skey)
        if state is not None and state.get("pe", 0) != engine.epoch:
            engine.migrate(state)
            store.set(skey, state)

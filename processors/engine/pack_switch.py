"""Carrying a partition's timers and deferred candidates over a switch of rule packs
(docs/design.md 8.3): what each rule keeps, what is dropped.

`Engine.switch_pack` builds the engine of the new pack; `carry_over` walks each
partition's timers (the only index of customers with pending timers or deferred
candidates) to drop or keep them; customers' rule state is brought up to date lazily by
`Engine.migrate` when next touched. Runs between two events, never on the per-event
path. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from processors.engine.arbitration import QUEUE_TIMER, Step
from processors.engine.candidates import NO_CONTEXT
from processors.engine.decisions import RULE_CHANGED, RULE_REMOVED, SUPPRESSED
from processors.engine.interfaces import EngineOutput, StateStore
from processors.engine.kinds import PENDING, PENDING_DEADLINE, PENDING_EVENT, PENDING_VERSION
from processors.engine.lifecycle import PackChanges
from processors.engine.rule_model import CANCEL
from processors.engine.state import (
    CUSTOMER_PREFIX,
    EPOCH,
    PACK_KEY,
    RULES,
    STATE_VERSION,
    TIMER_CUSTOMER,
    TIMER_DEADLINE,
    TIMER_KEY,
    TIMER_RULE,
    VERSION_FIELD,
    WAITING,
    WAITING_EVIDENCE,
    WAITING_RULE,
    WAITING_TIMER,
    WAITING_VERSION,
    upgrade_customer,
)
from processors.engine.timers import all_timers

if TYPE_CHECKING:
    from processors.engine.core import Engine


def carry_over(
    previous: Engine, engine: Engine, stores: Iterable[StateStore], changes: PackChanges, at: int
) -> EngineOutput:
    """The decisions of switching `stores` from `previous` to `engine` (the new pack's) at
    event time `at`: a changed rule's timers fire under the version that set them unless
    the new version says `pending: cancel` (dropped now: suppressed, `rule_changed`); a
    removed rule's timers and deferred candidates are dropped (suppressed, `rule_removed`).
    Each store records the switch under `PACK_KEY` (time, watermark, rule versions); a host
    adds its offset there."""
    out = EngineOutput([], [])
    removed = set(changes.removed)
    cancelled = {rid for rid in changes.changed if engine.rules[rid].pending == CANCEL}
    changed = set(changes.changed)
    versions = {rule.id: rule.version for rule in engine.pack.rules}
    for store in stores:
        _switch_store(engine, store, previous, removed, cancelled, changed, at, out)
        store.set(
            PACK_KEY, {"at": at, "watermark": previous.watermark(store), "versions": versions}
        )
    return out


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
    """One partition of `carry_over`: walk its timers (the only index of customers with
    pending timers or deferred candidates) in (customer, rule, deadline) order."""
    timers = list(all_timers(store))
    timers.sort(key=lambda e: (e[TIMER_CUSTOMER], e[TIMER_RULE], e[TIMER_DEADLINE], e[TIMER_KEY]))
    visited: set[str] = set()
    for deadline, cid, rule_id, key in timers:
        skey = CUSTOMER_PREFIX + cid
        state = store.get(skey)
        if state is None:
            continue
        visited.add(skey)
        if (
            state.get(VERSION_FIELD) != STATE_VERSION
        ):  # its layout first (state.py), then the switch
            upgrade_customer(state)
            store.set(skey, state)
        step = Step(engine, store, out, cid, state)
        if rule_id == QUEUE_TIMER:
            queue: list[list[Any]] = state.get(WAITING) or []
            gone = [e for e in queue if e[WAITING_RULE] in removed]
            if not gone:
                continue
            for entry in gone:
                queue.remove(entry)
                step.trace_pending(
                    entry[WAITING_RULE],
                    entry[WAITING_VERSION],
                    SUPPRESSED,
                    RULE_REMOVED,
                    None,
                    entry[WAITING_EVIDENCE],
                    at,
                )
            if queue:
                step.schedule_queue(at)
            else:
                state.pop(WAITING, None)
                state.pop(WAITING_TIMER, None)
                engine.cancel_timer(store, deadline, cid, QUEUE_TIMER, "")
        elif rule_id in removed or rule_id in cancelled or rule_id in changed:
            rs = state.get(RULES, NO_CONTEXT).get(rule_id)
            pending = None if rs is None else rs.get(PENDING)
            timer = None if pending is None else pending.get(key)
            if timer is None or timer[PENDING_DEADLINE] != deadline:
                continue
            if rule_id in changed and rule_id not in cancelled:
                if len(timer) <= PENDING_VERSION:  # remember the version that set it
                    timer.append(previous.rules[rule_id].version)
            else:
                assert pending is not None
                del pending[key]
                engine.cancel_timer(store, deadline, cid, rule_id, key)
                version = (
                    timer[PENDING_VERSION]
                    if len(timer) > PENDING_VERSION
                    else previous.rules[rule_id].version
                )
                reason = RULE_REMOVED if rule_id in removed else RULE_CHANGED
                step.trace_pending(
                    rule_id, version, SUPPRESSED, reason, None, [timer[PENDING_EVENT]], at
                )
        else:
            continue
        store.set(skey, state)
    for skey in sorted(visited):  # after their timers were handled under the old state
        state = store.get(skey)
        if state is not None and state.get(EPOCH, 0) != engine.epoch:
            engine.migrate(state)
            store.set(skey, state)

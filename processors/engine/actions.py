"""Actions that get done (docs/design.md 12): each fired action followed until a person has
done it, with a status record for every change.

An action that fires is *opened* in its customer's state (`ac`, state.py) with its rule,
destination, due_by and owner, and a timer: at its due_by (when it has one) it becomes
*overdue* unless done, and raises its rule's `when_overdue` escalation; at the action
horizon after its due_by (after it fired, without one) it *lapses*. Status events on
`interactions` (`action_acknowledged`, `action_reassigned`, `action_done`, with
`reference` = the action_id) are held like the events of the rules deciding at the
watermark and applied once the watermark passes them, so arrival order within the
allowed lateness changes nothing and a done event at the due_by itself comes first. A
status for an unknown, done or lapsed action, or one that changes nothing, is counted
by reason in `EngineOutput.ignored`. At most `MAX_OPEN_ACTIONS` are open per customer:
beyond, the one due to lapse first lapses at once. Pure: no clock, no Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from processors.engine.customer import channel_hint
from processors.engine.decisions import FIRED
from processors.engine.ids import sha256
from processors.engine.state import (
    ACTION_AT,
    ACTION_DESTINATION,
    ACTION_DUE_BY,
    ACTION_OVERDUE,
    ACTION_OWNER,
    ACTION_RULE,
    ACTION_STATUS,
    ACTION_UNTIL,
    ACTIONS,
    LEDGER,
    MAX_OPEN_ACTIONS,
    OWNER_ACTION,
    OWNER_AT,
    OWNER_DESTINATION,
    OWNER_UNTIL,
    OWNERS,
)
from schemas.records import (
    ACTION_ACKNOWLEDGED,
    ACTION_DONE,
    STATUS_ACKNOWLEDGED,
    STATUS_DONE,
    STATUS_LAPSED,
    STATUS_OPEN,
    STATUS_OVERDUE,
    STATUS_REASSIGNED,
    ActionEvent,
    ActionStatus,
    InteractionEvent,
)

if TYPE_CHECKING:
    from processors.engine.arbitration import Step

__all__ = [
    "ACTION_TIMER",
    "IGNORED_REASONS",
    "apply_status",
    "escalation_rule",
    "named_owner",
    "on_action_timer",
    "open_action",
]

#: The rule id of a followed action's timer in the partition's index (key: the action id):
#: it sorts after the queue and hold timers, so a status event held at the very due_by is
#: applied before the action is found overdue.
ACTION_TIMER: Final = "\x02action"
#: Why a status event changed nothing (the label of moments_action_status_ignored_total):
#: no such action of this customer (or another customer's), done already, lapsed already,
#: or the same owner again.
UNKNOWN: Final = "unknown"
UNCHANGED: Final = "unchanged"
IGNORED_REASONS: Final = (UNKNOWN, STATUS_DONE, STATUS_LAPSED, UNCHANGED)
_CLOSED: Final = frozenset({STATUS_DONE, STATUS_LAPSED})


def _emit(
    step: Step,
    action_id: str,
    entry: list[Any],
    status: str,
    at: int,
    resolution: str | None = None,
    event_id: str | None = None,
) -> None:
    step.out.statuses.append(
        ActionStatus(
            action_id,
            step.customer_id,
            entry[ACTION_RULE],
            entry[ACTION_DESTINATION],
            status,
            entry[ACTION_OWNER],
            resolution,
            at,
            event_id,
        )
    )


def _lapse_at(step: Step, entry: list[Any]) -> int:
    due_by = entry[ACTION_DUE_BY]
    start: int = entry[ACTION_AT] if due_by is None else due_by
    return start + step.engine.action_horizon_ms


def _close(step: Step, action_id: str, entry: list[Any], status: str, at: int) -> None:
    """The action is done or lapsed at `at`: its pending timer goes, it is remembered a
    horizon long (a late status for it is told apart from an unknown one)."""
    if entry[ACTION_STATUS] not in _CLOSED:
        step.engine.cancel_timer(
            step.store, entry[ACTION_UNTIL], step.customer_id, ACTION_TIMER, action_id
        )
    entry[ACTION_STATUS] = status
    entry[ACTION_UNTIL] = at + step.engine.action_horizon_ms


def _forget_closed(actions: dict[str, list[Any]], now: int) -> None:
    """Done and lapsed actions are remembered until their `until`, and at most
    MAX_OPEN_ACTIONS of them (the ones remembered longest stay)."""
    closed = [(e[ACTION_UNTIL], aid) for aid, e in actions.items() if e[ACTION_STATUS] in _CLOSED]
    if not closed:
        return
    closed.sort()
    surplus = len(closed) - MAX_OPEN_ACTIONS
    for index, (until, aid) in enumerate(closed):
        if until < now or index < surplus:
            del actions[aid]


def open_action(
    step: Step, action_id: str, rule_id: str, destination: str, at: int, due_by: int | None
) -> None:
    """An action fired at `at`: followed from now (status `open`), with a timer at its
    due_by (overdue) or, without one, at the horizon (lapse)."""
    state = step.state
    actions: dict[str, list[Any]] | None = state.get(ACTIONS)
    if actions is None:
        actions = state[ACTIONS] = {}
    elif action_id in actions:
        return  # followed already (the same action fired again: the same id)
    else:
        _forget_closed(actions, at)  # pruned as the customer's actions come and go
    horizon = step.engine.action_horizon_ms
    deadline = due_by if due_by is not None else at + horizon
    entry = [at, rule_id, destination, due_by, None, STATUS_OPEN, 0, deadline]
    actions[action_id] = entry
    _emit(step, action_id, entry, STATUS_OPEN, at)
    step.schedule(deadline, ACTION_TIMER, action_id)
    if len(actions) > MAX_OPEN_ACTIONS:
        open_ones = [
            (_lapse_at(step, e), aid)
            for aid, e in actions.items()
            if e[ACTION_STATUS] not in _CLOSED
        ]
        if len(open_ones) > MAX_OPEN_ACTIONS:
            open_ones.sort()
            for _, aid in open_ones[: len(open_ones) - MAX_OPEN_ACTIONS]:
                gone = actions[aid]
                _close(step, aid, gone, STATUS_LAPSED, at)
                _emit(step, aid, gone, STATUS_LAPSED, at)


def apply_status(step: Step, event: InteractionEvent) -> None:
    """A status event, once the watermark passed it: the change it makes (a status record),
    or a count of why it made none."""
    actions: dict[str, list[Any]] | None = step.state.get(ACTIONS)
    action_id = event.reference
    entry = None if actions is None or action_id is None else actions.get(action_id)
    ignored = step.out.ignored
    if entry is None or action_id is None:
        ignored[UNKNOWN] = ignored.get(UNKNOWN, 0) + 1
        return
    current = entry[ACTION_STATUS]
    if current in _CLOSED:
        ignored[current] = ignored.get(current, 0) + 1
        return
    at = event.occurred_at
    attributes = event.attributes
    if event.type == ACTION_DONE:
        _close(step, action_id, entry, STATUS_DONE, at)
        _emit(step, action_id, entry, STATUS_DONE, at, attributes.get("resolution"), event.event_id)
        owners: list[list[Any]] | None = step.state.get(OWNERS)
        if owners:  # one owner (docs/design.md 11.2) is released when its action is done
            for held_by in owners:
                if held_by[OWNER_ACTION] == action_id and held_by[OWNER_UNTIL] > at:
                    held_by[OWNER_UNTIL] = max(at, held_by[OWNER_AT])
        return
    owner = attributes.get("owner")
    held = entry[ACTION_OWNER]
    if owner is None or owner == held:
        ignored[UNCHANGED] = ignored.get(UNCHANGED, 0) + 1
        return
    # a first acknowledgement acknowledges; another owner's, or a reassignment, reassigns
    status = (
        STATUS_ACKNOWLEDGED
        if event.type == ACTION_ACKNOWLEDGED and held is None
        else STATUS_REASSIGNED
    )
    entry[ACTION_OWNER] = owner
    entry[ACTION_STATUS] = status
    _emit(step, action_id, entry, status, at, None, event.event_id)


def on_action_timer(step: Step, action_id: str, deadline: int) -> None:
    """A followed action's timer: overdue at its due_by (and its rule's `when_overdue`
    raised), lapsed at the horizon. A timer the action moved away from does nothing."""
    actions: dict[str, list[Any]] | None = step.state.get(ACTIONS)
    entry = None if actions is None else actions.get(action_id)
    if entry is None or entry[ACTION_STATUS] in _CLOSED or entry[ACTION_UNTIL] != deadline:
        return
    due_by = entry[ACTION_DUE_BY]
    if due_by is not None and not entry[ACTION_OVERDUE] and deadline == due_by:
        entry[ACTION_OVERDUE] = 1
        entry[ACTION_STATUS] = STATUS_OVERDUE
        _emit(step, action_id, entry, STATUS_OVERDUE, deadline)
        lapse = _lapse_at(step, entry)
        entry[ACTION_UNTIL] = lapse
        step.schedule(lapse, ACTION_TIMER, action_id)
        _escalate(step, action_id, entry, deadline)
        return
    entry[ACTION_STATUS] = STATUS_LAPSED
    entry[ACTION_UNTIL] = deadline + step.engine.action_horizon_ms
    _emit(step, action_id, entry, STATUS_LAPSED, deadline)


def escalation_rule(rule_id: str) -> str:
    """The rule id an escalation of `rule_id`'s overdue actions carries (actions, decisions,
    statuses): `<rule>.when_overdue`, never a rule id of a pack (those have no dot)."""
    return f"{rule_id}.when_overdue"


def _escalate(step: Step, overdue_id: str, entry: list[Any], at: int) -> None:
    """The overdue action's rule says `when_overdue`: that service action fires now, with
    the overdue action as evidence, under the rule id `escalation_rule(rule)` (never
    arbitrated: an obligation, like the first)."""
    engine = step.engine
    rule = engine.rules.get(entry[ACTION_RULE])
    escalation = None if rule is None else rule.when_overdue
    if rule is None or escalation is None:
        return
    cid = step.customer_id
    evidence = [overdue_id]
    tail = "\x1f" + overdue_id
    rule_id = escalation_rule(rule.id)
    action_id = sha256(f"{rule_id}\x1f{cid}{tail}".encode()).digest()[:16].hex()
    state = step.state
    positives, negatives = engine.tally(state, at) if LEDGER in state else (0, 0)
    details = {
        "overdue_action": overdue_id,
        "relationship_balance": str(positives - negatives),
        "relationship_positives": str(positives),
        "relationship_negatives": str(negatives),
    }
    if entry[ACTION_OWNER] is not None:
        details["overdue_owner"] = entry[ACTION_OWNER]
    owner = named_owner(state, escalation.destination, at)
    if owner is not None:
        details["owner"] = owner
    reason = (
        f"The {rule.action.replace('_', ' ')} raised on {step.day(entry[ACTION_AT])} "
        f"(action {overdue_id}) was due on {step.day(at)} and is not done: "
        f"{escalation.action.replace('_', ' ')}."
    )
    engine.decided += 1
    if engine.decisions:
        step.trace(
            rule_id,
            rule.version,
            f"decision\x1f{rule_id}\x1f",
            FIRED,
            FIRED,
            action_id,
            evidence,
            at,
            None,
            tail,
        )
    step.out.actions.append(
        ActionEvent(
            action_id,
            cid,
            rule_id,
            escalation.action,
            rule.version,
            escalation.destination,
            escalation.priority,
            reason,
            list(evidence),
            channel_hint(state, at),
            at,
            None,
            dict(sorted(details.items())),
        )
    )
    open_action(step, action_id, rule_id, escalation.destination, at, None)


def named_owner(state: dict[str, Any], destination: str, at: int) -> str | None:
    """The person holding the customer's one owner for `destination` at `at` (the
    acknowledged owner of an open owner rule's action), or None (docs/design.md 11.2)."""
    owners: list[list[Any]] | None = state.get(OWNERS)
    actions: dict[str, list[Any]] | None = state.get(ACTIONS)
    if not owners or not actions:
        return None
    for owner in owners:
        if owner[OWNER_DESTINATION] == destination and owner[OWNER_AT] <= at < owner[OWNER_UNTIL]:
            entry = actions.get(owner[OWNER_ACTION])
            if entry is not None and entry[ACTION_STATUS] not in _CLOSED:
                name: str | None = entry[ACTION_OWNER]
                if name is not None:
                    return name
    return None

"""Cases as entities (docs/design.md 11.2): which case an event opens, repeats or closes,
and whether the customer has an open case at a time.

A case opens with `dispute_opened` or `complaint_filed` and closes with `dispute_resolved`
or `complaint_resolved`. Its id is the event's `reference`; an opening without one is a
case of its own (its event id). A resolution without a reference closes the customer's
oldest case of the same kind and product open at its time, else of the same kind; one
that matches no open case changes nothing (the engine counts it) but is kept a while, so
an opening that happened before it and arrives after it is closed by it.

A case keeps its history: every opening and closing, sorted by time. What it was at any
time is read from that history, never from the order the events arrived in: an opening
while it is closed starts a new cycle (a reopening), a closing while it is open ends the
cycle, repeats change nothing. Rules keyed by `case` (`per: case`, `correlate: case`) see
the key of the cycle an event falls in: the case id, `#<cycle>` appended from the first
reopening on.

The customer's cases live in the state under `CASES` (state.py): case id -> [kind,
product, history [[t, 1 (opening) | 0 (closing)]], {cycle key: follow-up action id}].
Pure.
"""

from __future__ import annotations

from bisect import insort
from typing import Any, Final

from processors.engine.state import (
    CASE_FOLLOW_UPS,
    CASE_HISTORY,
    CASE_KIND,
    CASE_PRODUCT,
    CASES,
    UNMATCHED,
)
from schemas.records import InteractionEvent

#: The key source of rules keyed by case (`per: case`, `correlate: case`).
CASE: Final = "case"
#: Event type -> (case kind, opens: True / closes: False).
CASE_EVENTS: Final[dict[str, tuple[str, bool]]] = {
    "dispute_opened": ("dispute", True),
    "complaint_filed": ("complaint", True),
    "dispute_resolved": ("dispute", False),
    "complaint_resolved": ("complaint", False),
}
#: How long a case is remembered after its last opening or closing: a case no resolution
#: closed within that time no longer counts as open (it no longer holds engagement back,
#: and the state stays bounded when a system never reports resolutions).
KEPT_MS: Final = 90 * 86_400_000
#: The most openings and closings a case's history keeps (the newest).
HISTORY_KEPT: Final = 32

#: A cycle of a case: (number, start, end or None while open).
Cycle = tuple[int, int, int | None]


def cycles(history: list[list[int]]) -> list[Cycle]:
    """The open-to-closed cycles a case's sorted history describes."""
    out: list[Cycle] = []
    start: int | None = None
    number = -1
    for t, opening in history:
        if opening:
            if start is None:
                start = t
                number += 1
        elif start is not None:
            out.append((number, start, t))
            start = None
    if start is not None:
        out.append((number, start, None))
    return out


def cycle_key(case_id: str, number: int) -> str:
    return case_id if number == 0 else f"{case_id}#{number}"


def key_at(state: dict[str, Any], case_id: str, t: int) -> str:
    """The key of the cycle of `case_id` that an event at `t` falls in: the one open at `t`
    (a closing at its end belongs to it), else the last one before `t` ("" when none)."""
    cases: dict[str, list[Any]] | None = state.get(CASES)
    case = None if not cases or not case_id else cases.get(case_id)
    if case is None:
        return ""
    found = ""
    for number, start, end in cycles(case[CASE_HISTORY]):
        if start > t:
            break
        found = cycle_key(case_id, number)
        if end is None or t <= end:
            break
    return found


def apply_case_event(
    state: dict[str, Any], event: InteractionEvent, newest: int, keep_ms: int
) -> str:
    """Apply a case event to the customer's cases; the id of the case it belongs to ("" for
    a resolution that matched no case: it is kept `keep_ms`)."""
    kind, opens = CASE_EVENTS[event.type]
    cases: dict[str, list[Any]] | None = state.get(CASES)
    if cases is None:
        cases = state[CASES] = {}
    t = event.occurred_at
    case_id = event.reference or ("" if not opens else event.event_id)
    if not case_id:
        case_id = _oldest_open(cases, kind, event.product, t)
        if not case_id:
            unmatched: list[list[Any]] | None = state.get(UNMATCHED)
            entry = [t, kind, event.product]
            if unmatched is None:
                state[UNMATCHED] = [entry]
            else:
                unmatched.append(entry)
                unmatched[:] = [e for e in unmatched if e[0] >= newest - keep_ms]
            _prune(cases, newest)
            return ""
    case = cases.get(case_id)
    if case is None:
        case = cases[case_id] = [kind, event.product, [], {}]
    history: list[list[int]] = case[CASE_HISTORY]
    moment = [t, 1 if opens else 0]
    if moment not in history:
        insort(history, moment)
        if len(history) > HISTORY_KEPT:
            del history[0]
    if opens:
        _close_by_unmatched(state, case, kind)
    _prune(cases, newest)
    return case_id


def _open_at(case: list[Any], t: int) -> int | None:
    """The start of the case's cycle open at `t`, or None."""
    for _, start, end in cycles(case[CASE_HISTORY]):
        if start <= t and (end is None or t < end):
            return start
    return None


def _oldest_open(cases: dict[str, list[Any]], kind: str, product: str | None, t: int) -> str:
    """A resolution without a reference: the case of the kind (and product, if one matches)
    open at `t` whose cycle started first; "" when none is."""
    open_ones = []
    for case_id, case in cases.items():
        if case[CASE_KIND] != kind:
            continue
        start = _open_at(case, t)
        if start is not None:
            open_ones.append((case[CASE_PRODUCT] != product, start, case_id))
    return min(open_ones)[2] if open_ones else ""


def _close_by_unmatched(state: dict[str, Any], case: list[Any], kind: str) -> None:
    """A resolution without a reference that matched nothing when it arrived closes this
    case if the case was open at its time (the same product first), as it would have in
    order."""
    unmatched: list[list[Any]] | None = state.get(UNMATCHED)
    if not unmatched:
        return
    fitting = sorted(
        (e for e in unmatched if e[1] == kind and _open_at(case, e[0]) is not None),
        key=lambda e: (e[2] != case[CASE_PRODUCT], e[0]),
    )
    if fitting:
        unmatched.remove(fitting[0])
        if not unmatched:
            del state[UNMATCHED]
        insort(case[CASE_HISTORY], [fitting[0][0], 0])


def _prune(cases: dict[str, list[Any]], newest: int) -> None:
    horizon = newest - KEPT_MS
    for case_id in [c for c, case in cases.items() if case[CASE_HISTORY][-1][0] < horizon]:
        del cases[case_id]


def case_keys(state: dict[str, Any]) -> set[str]:
    """The keys of every cycle of the cases the customer's state remembers."""
    cases: dict[str, list[Any]] | None = state.get(CASES)
    if not cases:
        return set()
    return {
        cycle_key(case_id, number)
        for case_id, case in cases.items()
        for number, _, _ in cycles(case[CASE_HISTORY])
    }


def open_case_at(state: dict[str, Any], at: int) -> str | None:
    """The follow-up action of the customer's case open at `at` whose cycle started first
    ("" when it has none yet), or None when no case is open then."""
    cases: dict[str, list[Any]] | None = state.get(CASES)
    if not cases:
        return None
    oldest: tuple[int, str] | None = None
    for case_id, case in cases.items():
        for number, start, end in cycles(case[CASE_HISTORY]):
            if start <= at and (end is None or at < end):
                key = cycle_key(case_id, number)
                if oldest is None or (start, key) < oldest:
                    oldest = (start, key)
    if oldest is None:
        return None
    for case in cases.values():
        follow_up: str | None = case[CASE_FOLLOW_UPS].get(oldest[1])
        if follow_up is not None:
            return follow_up
    return ""


def closing_after(state: dict[str, Any], at: int) -> int | None:
    """When the last of the cases open at `at` is known to close (a resolution that arrived
    before a later-decided candidate), or None when one of them has no known closing."""
    cases: dict[str, list[Any]] | None = state.get(CASES)
    if not cases:
        return None
    last = None
    for case in cases.values():
        for _, start, end in cycles(case[CASE_HISTORY]):
            if start <= at and (end is None or at < end):
                if end is None:
                    return None
                if last is None or end > last:
                    last = end
    return last


def case_closed_at(state: dict[str, Any], key: str) -> int | None:
    """When the cycle with this key closed (None: open, or unknown)."""
    cases: dict[str, list[Any]] | None = state.get(CASES)
    if cases:
        for case_id, case in cases.items():
            if key != case_id and not key.startswith(case_id + "#"):
                continue
            for number, _, end in cycles(case[CASE_HISTORY]):
                if cycle_key(case_id, number) == key:
                    return end
    return None


def note_follow_up(state: dict[str, Any], key: str, action_id: str) -> None:
    """The first action fired for a case's cycle (by a rule keyed by case) is its follow-up."""
    cases: dict[str, list[Any]] | None = state.get(CASES)
    if not cases:
        return
    for case_id, case in cases.items():
        if key == case_id or key.startswith(case_id + "#"):
            case[CASE_FOLLOW_UPS].setdefault(key, action_id)
            return

"""The rule kinds, one class each, and `KINDS`, the registry everything else reads.

A kind owns everything about itself: its name (`when.kind`), the YAML fields of its
`when` (`fields`, read by the rule loader in rules.py, which names file, rule and field
in every problem; `check` adds what one field alone cannot say), whether `when` itself
holds the event conditions, the roles of its patterns (what the engine's listener
index hands to `on_event`), the keys of its own rule state (`state_keys`, with the ones
a changed rule keeps at a pack switch) and its semantics: `on_event` turns one event
into at most one candidate, `on_timer` (kinds with timers) a due deadline,
`on_ledger` (ledger kinds) a moment of the relationship ledger. Adding a kind is one
class here, registered in `KINDS`.

They share one evaluation path, `Step` in arbitration.py, which decides the
candidates. `rs` is the rule's own slice of the customer state, a plain dict.
Pure.
"""

from __future__ import annotations

from bisect import insort
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple

from processors.engine.candidates import NO_CONTEXT, Candidate, recall, remember
from processors.engine.cases import CASE, case_closed_at, case_keys
from processors.engine.customer import opened_within
from processors.engine.decisions import ALREADY_RAISED, NOT_NEW
from processors.engine.rendering import WHAT
from processors.engine.rule_model import Rule, format_duration
from processors.engine.state import (
    COOL_DOWN_KEYS,
    GATHER_DEADLINE,
    GATHER_EVENT,
    GATHER_EVIDENCE,
    GATHER_PRODUCTS,
    GATHERED,
    LATEST,
    LEDGER,
    MOMENT_AT,
    MOMENT_IS_EVENT,
    MOMENT_REF,
    MOMENT_SIGN,
    OPTION_KEYS,
    Key,
)
from schemas.records import InteractionEvent

if TYPE_CHECKING:
    from processors.engine.arbitration import Step

#: How the rule loader reads a field of `when` (rules.py): a mapping of event conditions, a
#: duration ('48h'), a positive integer, an event field (or attributes.<key>), or `customer`
#: or an event field.
PATTERN: Final = "pattern"
DURATION: Final = "duration"
COUNT: Final = "count"
EVENT_FIELD: Final = "event_field"
CUSTOMER_OR_FIELD: Final = "customer_or_field"

#: The roles a pattern plays, handed to `on_event`: the one pattern of a one-pattern kind, the
#: first event of a sequence or an absence, the event that completes a sequence, the event
#: whose absence an absence rule watches.
ON: Final = "on"
FIRST: Final = "first"
THEN: Final = "then"
MISSING: Final = "missing"


class WhenField(NamedTuple):
    """One field of a kind's `when`: its YAML name, the `Rule` attribute it fills, how it is
    read, and, for an optional field, the value it takes when absent (None: the Rule's)."""

    yaml: str
    attr: str
    read: str
    required: bool = True
    default: Any = None


class Kind:
    """Base of the rule kinds: what the loader, the listener index and pack switches read,
    and one evaluation path, `on_event` per kind."""

    #: `when.kind` in YAML.
    name: ClassVar[str]
    #: The fields of `when` besides `kind` (and, with `conditions`, the event conditions).
    fields: ClassVar[tuple[WhenField, ...]] = ()
    #: Whether `when` itself holds the event conditions (the rule's `pattern`).
    conditions: ClassVar[bool] = True
    #: The role of each of the rule's patterns, in order (`pattern`, then `follow`); a kind
    #: without roles listens to no event.
    roles: ClassVar[tuple[str, ...]] = (ON,)
    #: The keys of the kind's own rule state (each rule's dict in the customer's `r`).
    state_keys: ClassVar[dict[str, Key]] = {}
    #: Of `state_keys`, those a changed rule keeps at a pack switch (the rest is forgotten).
    kept_at_switch: ClassVar[frozenset[str]] = frozenset()
    #: Whether the kind sets timers (`on_timer` fires them).
    timers: ClassVar[bool] = False
    #: Whether the kind is evaluated on each negative moment of the ledger (`on_ledger`).
    ledger: ClassVar[bool] = False
    #: Whether a candidate that fires, is deferred or is held out consumes its key for
    #: good (`Step.decide`: later candidates of that key are `already_raised`).
    consumes_key: ClassVar[bool] = False
    #: The rule-level options (rules.RULE_OPTIONS) this kind can apply; `rules check`
    #: refuses the others on it, naming file, rule and field.
    options: ClassVar[frozenset[str]] = frozenset({"owner"})

    def check(self, read: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems (field, message) of the fields read, beyond what each field's own reading
        found (e.g. a condition the kind requires)."""
        return []

    def key_field(self, read: dict[str, Any]) -> str | None:
        """The field that keys a rule's state and cool-down (None = per customer)."""
        correlate: str | None = read.get("correlate")
        return correlate

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        raise NotImplementedError

    def on_timer(self, step: Step, rule: Rule, key: str, deadline: int) -> None:
        """A deadline the rule set for `key` is due."""

    def timer_version(self, rs: dict[str, Any], key: str) -> int | None:
        """The rule version that set the pending timer for `key` before a pack switch (None:
        the current version, or no timer)."""
        return None

    def on_ledger(self, step: Step, rule: Rule, at: int, event: InteractionEvent | None) -> None:
        """A negative moment entered the customer's ledger at `at`."""


class MatchKind(Kind):
    """Every matching event is a candidate; with `gather`, the matching events of one
    window make one candidate at its end (docs/design.md 11.5)."""

    name = "match"
    options = frozenset({"owner", "gather", "latest_only", "needs_products"})
    timers = True

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        if rule.gather_ms is None:
            step.candidates.append(
                Candidate(rule, event.occurred_at, [event.event_id], "", event, NO_CONTEXT)
            )
            return
        gathered: dict[str, list[Any]] = step.rule_state(rule.id).setdefault(GATHERED, {})
        t = event.occurred_at
        gather_ms = rule.gather_ms
        # Windows are keyed by their deadline (a window whose timer has not fired yet may sit
        # beside a newer one); the candidate itself is per customer. An event within the
        # gathering time of a window's first event joins it, in either direction: one that
        # arrives late but happened first moves the window's start (and deadline) to its own.
        for key, window in gathered.items():
            start = window[GATHER_DEADLINE] - gather_ms
            if start - gather_ms <= t <= window[GATHER_DEADLINE]:
                evidence: list[list[Any]] = window[GATHER_EVIDENCE]
                if any(entry[1] == event.event_id for entry in evidence):
                    return
                insort(evidence, [t, event.event_id])
                if event.product and event.product not in window[GATHER_PRODUCTS]:
                    insort(window[GATHER_PRODUCTS], event.product)
                if t < start:
                    step.engine.cancel_timer(
                        step.store, window[GATHER_DEADLINE], step.customer_id, rule.id, key
                    )
                    del gathered[key]
                    window[GATHER_DEADLINE] = t + gather_ms
                    window[GATHER_EVENT] = remember(event)
                    gathered[str(t + gather_ms)] = window
                    step.schedule(t + gather_ms, rule.id, str(t + gather_ms))
                return
        deadline = t + gather_ms
        products = [event.product] if event.product else []
        gathered[str(deadline)] = [deadline, [[t, event.event_id]], products, remember(event)]
        step.schedule(deadline, rule.id, str(deadline))

    def on_timer(self, step: Step, rule: Rule, key: str, deadline: int) -> None:
        """A gathering window ended: one candidate with all it gathered (evidence in event
        time order)."""
        gathered: dict[str, list[Any]] | None = step.rule_state(rule.id).get(GATHERED)
        window = None if gathered is None else gathered.get(key)
        if window is None or window[GATHER_DEADLINE] != deadline:
            return
        del gathered[key]  # type: ignore[union-attr]
        first = recall(step.customer_id, window[GATHER_EVENT])
        products: list[str] = window[GATHER_PRODUCTS]
        ctx = {"gathered_products": ",".join(products)}
        if len(products) > 1:  # the reason names every product concerned
            ctx["product"] = " and ".join(p.replace("_", " ") for p in products)
        evidence = [entry[1] for entry in window[GATHER_EVIDENCE]]
        step.candidate(rule, deadline, evidence, "", first, ctx)


class ProfileKind(MatchKind):
    """A match rule on the customer's profile: `min_tenure_years` is required."""

    name = "profile"
    options = frozenset({"owner", "needs_products"})
    timers = False

    def check(self, read: dict[str, Any]) -> list[tuple[str, str]]:
        if read["pattern"].min_tenure_years is None:
            return [("when.min_tenure_years", "required for kind profile")]
        return []


#: first: the keys consumed, and the action that consumed each.
CONSUMED: Final = "k"
CONSUMED_BY: Final = "ka"


class FirstKind(Kind):
    """The first matching event per key (customer or a field), once ever.

    The key is consumed (`CONSUMED`, with the consuming action's id in `CONSUMED_BY`) when
    the candidate fires, is deferred or is held out (see `Step.decide`), never by a
    candidate that was suppressed. Later occurrences of a consumed key are candidates
    suppressed as `already_raised`, so the trace answers "why no explanation for the
    second bill?".
    """

    name = "first"
    consumes_key = True
    options = frozenset({"owner", "needs_products"})
    fields = (
        WhenField("per", "per", CUSTOMER_OR_FIELD, required=False, default="customer"),
        WhenField("new_within", "new_within_ms", DURATION, required=False),
    )
    state_keys: ClassVar[dict[str, Key]] = {
        CONSUMED: Key(
            "[str]",
            "first: sorted keys consumed (fired, deferred or held out)",
            "arbitration.Step.consume_key",
        ),
        CONSUMED_BY: Key(
            "{key: action_id}",
            "first: the action that consumed each key",
            "arbitration.Step.consume_key",
        ),
    }
    kept_at_switch = frozenset({CONSUMED, CONSUMED_BY})

    def check(self, read: dict[str, Any]) -> list[tuple[str, str]]:
        if read.get("new_within_ms") is not None and read.get("per") != "product":
            return [("when.new_within", "only a first rule keyed by product (per: product)")]
        return []

    def key_field(self, read: dict[str, Any]) -> str | None:
        per: str | None = read.get("per")
        return None if per in (None, "customer") else per

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        key = step.key(rule.key_field, event)
        rs = step.rule_state(rule.id)
        seen: list[str] | None = rs.get(CONSUMED)
        if seen and rule.key_field == CASE:
            # a case's key is consumed as long as the case is remembered (cases.py)
            known = case_keys(step.state)
            known.add(key)
            if any(k not in known for k in seen):
                seen[:] = [k for k in seen if k in known]
                by_key: dict[str, str] | None = rs.get(CONSUMED_BY)
                if by_key:
                    for k in [k for k in by_key if k not in known]:
                        del by_key[k]
        if seen is None or key not in seen:
            suppress = None
            if (
                rule.new_within_ms is not None
                and event.attributes.get("first_invoice") != "true"
                and not opened_within(
                    step.state, event.product, event.occurred_at, rule.new_within_ms
                )
            ):
                suppress = NOT_NEW
            cand = Candidate(
                rule, event.occurred_at, [event.event_id], key, event, NO_CONTEXT, suppress
            )
        else:
            consumers: dict[str, str] | None = (
                rs.get(CONSUMED_BY) if step.engine.decisions else None
            )
            cand = Candidate(
                rule,
                event.occurred_at,
                [event.event_id],
                key,
                event,
                NO_CONTEXT,
                ALREADY_RAISED,
                None if consumers is None else consumers.get(key),
            )
        step.candidates.append(cand)


#: count: the sliding window of matching events, entries [t, channel, event_id].
WINDOW: Final = "w"
WINDOW_AT: Final = 0
WINDOW_CHANNEL: Final = 1
WINDOW_EVENT: Final = 2


class CountKind(Kind):
    """At least `min_count` matching events in [t - window, t] over `min_channels` channels."""

    name = "count"
    fields = (
        WhenField("window", "window_ms", DURATION),
        WhenField("min_count", "min_count", COUNT),
        WhenField("min_channels", "min_channels", COUNT, required=False),
    )
    state_keys: ClassVar[dict[str, Key]] = {
        WINDOW: Key(
            "[[t: int, channel: str, event_id: str]]",
            "count: the sliding window of matching events, sorted",
            "kinds.CountKind",
        ),
    }

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        assert rule.window_ms is not None and rule.min_count is not None
        rs = step.rule_state(rule.id)
        window: list[list[Any]] = rs.setdefault(WINDOW, [])
        t = event.occurred_at
        added = [t, event.channel, event.event_id]
        insort(window, added)
        # kept the window plus the maximum lateness: a late event still finds its window
        step.prune(window, rule.window_ms + step.engine.max_lateness_ms)
        self._window_at(step, rule, window, t, event, None)
        if window[-1][WINDOW_AT] > t:
            # A late event: the windows ending at the later events it falls into count it
            # now, as they would have in order; one it completes raises its candidate then.
            for entry in [e for e in window if t < e[WINDOW_AT] <= t + rule.window_ms]:
                self._window_at(step, rule, window, entry[WINDOW_AT], None, added)

    def _window_at(
        self,
        step: Step,
        rule: Rule,
        window: list[list[Any]],
        t: int,
        event: InteractionEvent | None,
        late: list[Any] | None,
    ) -> None:
        """The candidate of the window ending at `t`, if it reaches the count; with `late`,
        only if it reaches it thanks to that late entry (else it was raised before)."""
        assert rule.window_ms is not None and rule.min_count is not None
        lo = t - rule.window_ms
        held = [entry for entry in window if lo <= entry[WINDOW_AT] <= t]
        if not self._reaches(rule, held):
            return
        if late is not None and self._reaches(rule, [e for e in held if e is not late]):
            return
        channels = sorted({entry[WINDOW_CHANNEL] for entry in held})
        ctx = {
            "count": len(held),
            "channels": ", ".join(channels),
            "channel_count": len(channels),
            "window": format_duration(rule.window_ms),
        }
        step.candidate(rule, t, [entry[WINDOW_EVENT] for entry in held], "", event, ctx)

    @staticmethod
    def _reaches(rule: Rule, held: list[list[Any]]) -> bool:
        assert rule.min_count is not None
        if len(held) < rule.min_count:
            return False
        return len({entry[WINDOW_CHANNEL] for entry in held}) >= rule.min_channels


#: sequence: recent A events per correlation key, entries [t, event_id, type]; and the B
#: events that found no A yet, per key, entries [t, event_id, remembered event] (a late A
#: pairs with them).
FIRSTS: Final = "a"
FIRST_AT: Final = 0
FIRST_EVENT: Final = 1
FIRST_TYPE: Final = 2
UNPAIRED: Final = "b"
UNPAIRED_AT: Final = 0
UNPAIRED_EVENT: Final = 1
UNPAIRED_KEPT: Final = 2


class SequenceKind(Kind):
    """B (role `then`) fires when a correlated A (role `first`) happened at most `within` before.

    Pairs both ways (docs/design.md 11.1): an A that arrives after a B it preceded fires the
    pair when it arrives, with the triggered_at, evidence and action id the pair has in
    order. So A events are kept `within` plus the maximum lateness, and the B events that
    found no A the maximum lateness (what a late event can still reach).
    """

    name = "sequence"
    fields = (
        WhenField("first", "pattern", PATTERN),
        WhenField("then", "follow", PATTERN),
        WhenField("within", "within_ms", DURATION),
        WhenField("correlate", "correlate", EVENT_FIELD, required=False),
    )
    conditions = False
    roles = (FIRST, THEN)
    state_keys: ClassVar[dict[str, Key]] = {
        FIRSTS: Key(
            "{key: [[t: int, event_id: str, type: str]]}",
            "sequence: recent A events per correlation key",
            "kinds.SequenceKind",
        ),
        UNPAIRED: Key(
            "{key: [[t: int, event_id: str, event: list]]}",
            "sequence: recent B events that found no A, per correlation key (a late A pairs "
            "with them; the event as candidates.remember keeps it)",
            "kinds.SequenceKind",
        ),
    }

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        assert rule.within_ms is not None
        rs = step.rule_state(rule.id)
        firsts: dict[str, list[list[Any]]] = rs.setdefault(FIRSTS, {})
        key = step.key(rule.correlate, event)
        t = event.occurred_at
        keep_ms = rule.within_ms + step.engine.max_lateness_ms
        if role == FIRST:
            entries = firsts.setdefault(key, [])
            insort(entries, [t, event.event_id, event.type])
            for k in list(firsts) if len(firsts) > 1 else (key,):
                step.prune(firsts[k], keep_ms)
                if not firsts[k]:
                    del firsts[k]
            self._pair_late(step, rule, rs, key, event)
            return
        entries = firsts.get(key, [])
        step.prune(entries, keep_ms)
        lo = t - rule.within_ms
        before = [e for e in entries if lo <= e[FIRST_AT] <= t and e[FIRST_EVENT] != event.event_id]
        if not entries:
            firsts.pop(key, None)
        if before:
            a_t, a_id, a_type = before[-1]
            self._candidate(step, rule, a_t, a_id, a_type, key, event)
            return
        unpaired: dict[str, list[list[Any]]] = rs.setdefault(UNPAIRED, {})
        waiting = unpaired.setdefault(key, [])
        insort(waiting, [t, event.event_id, remember(event)])
        for k in list(unpaired):
            step.prune(unpaired[k], step.engine.max_lateness_ms)
            if not unpaired[k]:
                del unpaired[k]

    def _pair_late(
        self, step: Step, rule: Rule, rs: dict[str, Any], key: str, event: InteractionEvent
    ) -> None:
        """An A pairs with the B events of its key that it preceded within `within` and that
        found no A when they arrived."""
        assert rule.within_ms is not None
        unpaired: dict[str, list[list[Any]]] | None = rs.get(UNPAIRED)
        if not unpaired:
            return
        waiting = unpaired.get(key)
        if not waiting:
            return
        t = event.occurred_at
        hi = t + rule.within_ms
        paired = [
            b for b in waiting if t <= b[UNPAIRED_AT] <= hi and b[UNPAIRED_EVENT] != event.event_id
        ]
        if not paired:
            return
        for b in paired:
            waiting.remove(b)
            late_b = recall(step.customer_id, b[UNPAIRED_KEPT])
            self._candidate(step, rule, t, event.event_id, event.type, key, late_b)
        if not waiting:
            del unpaired[key]

    def _candidate(
        self,
        step: Step,
        rule: Rule,
        a_t: int,
        a_id: str,
        a_type: str,
        key: str,
        then: InteractionEvent,
    ) -> None:
        assert rule.within_ms is not None
        t = then.occurred_at
        ctx = {
            "first_date": step.day(a_t),
            "first_what": WHAT.get(a_type, a_type.replace("_", " ")),
            "gap": format_duration(t - a_t) if t > a_t else "right",
            "within": format_duration(rule.within_ms),
        }
        step.candidate(rule, t, [a_id, then.event_id], key, then, ctx)


#: absence: the pending timer per correlation key, [deadline, a_t, a_event_id, a_type] and,
#: for a timer set before a pack switch, the version that set it; and the latest resolution
#: (B) time per key.
PENDING: Final = "p"
PENDING_DEADLINE: Final = 0
PENDING_AT: Final = 1
PENDING_EVENT: Final = 2
PENDING_TYPE: Final = 3
PENDING_VERSION: Final = 4
RESOLVED: Final = "d"


class AbsenceKind(Kind):
    """A (role `first`) not followed by a correlated B (role `missing`) within T.

    A schedules a timer at A + T, kept in the customer state (`PENDING`) and in the
    partition's timer index; a B with A <= B <= deadline resolves it. The timer fires
    when the partition watermark reaches the deadline, also for a customer who never
    sends another event. Recent B times (`RESOLVED`) are kept for one window so an A
    that arrives late, after its B, is already resolved.
    """

    name = "absence"
    fields = (
        WhenField("first", "pattern", PATTERN),
        WhenField("missing", "follow", PATTERN),
        WhenField("within", "within_ms", DURATION),
        WhenField("correlate", "correlate", EVENT_FIELD, required=False),
    )
    conditions = False
    roles = (FIRST, MISSING)
    timers = True
    state_keys: ClassVar[dict[str, Key]] = {
        PENDING: Key(
            "{key: [deadline, a_t, a_event_id, a_type] (+ [rule_version])}",
            "absence: the pending timer per correlation key; a fifth item is the version that "
            "set it before a pack switch (PENDING_VERSION)",
            "kinds.AbsenceKind, pack_switch",
        ),
        RESOLVED: Key(
            "{key: int}",
            "absence: latest resolution (B) time per key, kept one window",
            "kinds.AbsenceKind",
        ),
    }
    kept_at_switch = frozenset({PENDING, RESOLVED})

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        assert rule.within_ms is not None
        rs = step.rule_state(rule.id)
        pending: dict[str, list[Any]] = rs.setdefault(PENDING, {})
        done: dict[str, int] = rs.setdefault(RESOLVED, {})
        key = step.key(rule.correlate, event)
        t = event.occurred_at
        if role == MISSING:
            timer = pending.get(key)
            if timer is not None and timer[PENDING_AT] <= t <= timer[PENDING_DEADLINE]:
                del pending[key]
                step.engine.cancel_timer(
                    step.store, timer[PENDING_DEADLINE], step.customer_id, rule.id, key
                )
            if done.get(key, t - 1) < t:
                done[key] = t
            horizon = step.newest - rule.within_ms - step.engine.config.allowed_lateness_ms
            for k in [k for k, bt in done.items() if bt < horizon]:
                del done[k]
            return
        deadline = t + rule.within_ms
        resolved_at = done.get(key)
        if rule.correlate == CASE:  # the case may have closed before its opening arrived
            closed = case_closed_at(step.state, key)
            if closed is not None and (resolved_at is None or closed > resolved_at):
                resolved_at = closed
        if resolved_at is not None and t <= resolved_at <= deadline:
            return
        timer = pending.get(key)
        if timer is not None:
            if timer[PENDING_DEADLINE] <= deadline:
                return  # the earliest open case keeps the timer
            step.engine.cancel_timer(
                step.store, timer[PENDING_DEADLINE], step.customer_id, rule.id, key
            )
        pending[key] = [deadline, t, event.event_id, event.type]
        step.schedule(deadline, rule.id, key)

    def on_timer(self, step: Step, rule: Rule, key: str, deadline: int) -> None:
        """The deadline passed without a resolution: the candidate, at the deadline."""
        assert rule.within_ms is not None
        pending = step.rule_state(rule.id).get(PENDING, {})
        timer = pending.get(key)
        if timer is None or timer[PENDING_DEADLINE] != deadline:
            return  # resolved (or replaced) since it was scheduled
        del pending[key]
        a_t, a_id, a_type = timer[PENDING_AT], timer[PENDING_EVENT], timer[PENDING_TYPE]
        ctx = {
            "first_date": step.day(a_t),
            "first_what": WHAT.get(a_type, a_type.replace("_", " ")),
            "what": WHAT.get(a_type, a_type.replace("_", " ")),
            "type": a_type,
            "reference": key or "(no reference)",
            "within": format_duration(rule.within_ms),
        }
        step.candidate(rule, deadline, [a_id], key, None, ctx)

    def timer_version(self, rs: dict[str, Any], key: str) -> int | None:
        timer = rs.get(PENDING, NO_CONTEXT).get(key)
        if timer is not None and len(timer) > PENDING_VERSION:
            version: int = timer[PENDING_VERSION]
            return version
        return None


class RelationshipKind(Kind):
    """Negatives - positives in the ledger window >= min_deficit (evaluated on each negative)."""

    name = "relationship"
    fields = (WhenField("min_deficit", "min_deficit", COUNT),)
    conditions = False
    roles = ()
    ledger = True

    def on_ledger(self, step: Step, rule: Rule, at: int, event: InteractionEvent | None) -> None:
        assert rule.min_deficit is not None
        lo = at - step.engine.pack.relationship.window_ms
        ledger = step.state.get(LEDGER, ())
        held = [e for e in ledger if lo <= e[MOMENT_AT] <= at]
        negatives = [e for e in held if e[MOMENT_SIGN] < 0]
        positives = len(held) - len(negatives)
        if len(negatives) - positives >= rule.min_deficit:
            ctx = {"negatives": len(negatives), "positives": positives}
            evidence = [e[MOMENT_REF] for e in negatives if e[MOMENT_IS_EVENT]]
            step.candidate(rule, at, evidence, "", event, ctx)


#: Every rule kind by its YAML name, in the order the language lists them.
KINDS: Final[dict[str, Kind]] = {
    kind.name: kind
    for kind in (
        MatchKind(),
        FirstKind(),
        CountKind(),
        SequenceKind(),
        AbsenceKind(),
        ProfileKind(),
        RelationshipKind(),
    )
}

#: The kinds that set timers.
TIMER_KINDS: Final = tuple(kind for kind in KINDS.values() if kind.timers)


def timer_version(rs: dict[str, Any], key: str) -> int | None:
    """The rule version that set a rule's pending timer for `key` before a pack switch (None:
    the current version, or no timer); `rs` is the rule's state."""
    for kind in TIMER_KINDS:
        version = kind.timer_version(rs, key)
        if version is not None:
            return version
    return None


#: Every key a rule's dict (in a customer's `r`) may hold: the cool-down keys and each
#: kind's own.
RULE_KEYS: Final[dict[str, Key]] = (
    COOL_DOWN_KEYS
    | OPTION_KEYS
    | {name: key for kind in KINDS.values() for name, key in kind.state_keys.items()}
)
#: Rule state a changed rule keeps at a pack switch: cool-downs (and their causes) and what
#: each kind keeps (first keys and the actions that used them, pending timers and recent
#: resolutions); the rest (windows, remembered first events) is forgotten.
KEPT_AT_SWITCH: Final = frozenset(COOL_DOWN_KEYS).union(
    {LATEST}, *(kind.kept_at_switch for kind in KINDS.values())
)

"""The rule kinds: each turns one event (or one due timer) into at most one candidate.

One small class per kind (match and profile, first, count, sequence, absence,
relationship), each with one `on_event`; they share one evaluation path, `Step` in
arbitration.py, which decides the candidates. `rs` is the rule's own slice of the
customer state, a plain dict (its keys: state.py). Pure.
"""

from __future__ import annotations

from bisect import insort
from typing import TYPE_CHECKING, Any, ClassVar, Final

from processors.engine.candidates import NO_CONTEXT, Candidate, key_of
from processors.engine.rendering import WHAT
from processors.engine.rules import Rule, format_duration
from processors.engine.times import iso_day
from schemas.records import InteractionEvent

if TYPE_CHECKING:
    from processors.engine.arbitration import Step


class Kind:
    """Base of the rule kinds: one evaluation path, `on_event` per kind."""

    name: ClassVar[str]

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        raise NotImplementedError


class MatchKind(Kind):
    """Every matching event is a candidate. Profile rules are match rules with tenure."""

    name = "match"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        step.candidates.append(
            Candidate(rule, event.occurred_at, [event.event_id], "", event, NO_CONTEXT)
        )


class FirstKind(Kind):
    """The first matching event per key (customer or a field), once ever.

    The key is consumed (`k`, with the consuming action's id in `ka`) when the
    candidate fires, is deferred or is held out (see `Step.decide`), never by a
    candidate that was suppressed. Later occurrences of a consumed key are
    candidates suppressed as `already_raised`, so the trace answers "why no
    explanation for the second bill?".
    """

    name = "first"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        key = key_of(rule.key_field, event)
        rs = step.rule_state(rule.id)
        seen: list[str] | None = rs.get("k")
        if seen is None or key not in seen:
            cand = Candidate(rule, event.occurred_at, [event.event_id], key, event, NO_CONTEXT)
        else:
            consumers: dict[str, str] | None = rs.get("ka") if step.engine.decisions else None
            cand = Candidate(
                rule,
                event.occurred_at,
                [event.event_id],
                key,
                event,
                NO_CONTEXT,
                "already_raised",
                None if consumers is None else consumers.get(key),
            )
        step.candidates.append(cand)


class CountKind(Kind):
    """At least `min_count` matching events in [t - window, t] over `min_channels` channels."""

    name = "count"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        assert rule.window_ms is not None and rule.min_count is not None
        rs = step.rule_state(rule.id)
        window: list[list[Any]] = rs.setdefault("w", [])
        t = event.occurred_at
        insort(window, [t, event.channel, event.event_id])
        step.prune(window, rule.window_ms)
        lo = t - rule.window_ms
        held = [entry for entry in window if lo <= entry[0] <= t]
        if len(held) < rule.min_count:
            return
        channels = sorted({entry[1] for entry in held})
        if len(channels) >= rule.min_channels:
            ctx = {
                "count": len(held),
                "channels": ", ".join(channels),
                "channel_count": len(channels),
                "window": format_duration(rule.window_ms),
            }
            step.candidate(rule, t, [entry[2] for entry in held], "", event, ctx)


class SequenceKind(Kind):
    """B (role `then`) fires when a correlated A (role `first`) happened at most `within` before."""

    name = "sequence"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        assert rule.within_ms is not None
        rs = step.rule_state(rule.id)
        firsts: dict[str, list[list[Any]]] = rs.setdefault("a", {})
        key = key_of(rule.correlate, event)
        t = event.occurred_at
        if role == "first":
            entries = firsts.setdefault(key, [])
            insort(entries, [t, event.event_id, event.type])
            for k in list(firsts) if len(firsts) > 1 else (key,):
                step.prune(firsts[k], rule.within_ms)
                if not firsts[k]:
                    del firsts[k]
            return
        entries = firsts.get(key, [])
        step.prune(entries, rule.within_ms)
        lo = t - rule.within_ms
        before = [e for e in entries if lo <= e[0] <= t and e[1] != event.event_id]
        if not entries:
            firsts.pop(key, None)
        if before:
            a_t, a_id, a_type = before[-1]
            ctx = {
                "first_date": iso_day(a_t),
                "first_what": WHAT.get(a_type, a_type.replace("_", " ")),
                "gap": format_duration(t - a_t) if t > a_t else "right",
                "within": format_duration(rule.within_ms),
            }
            step.candidate(rule, t, [a_id, event.event_id], key, event, ctx)


class AbsenceKind(Kind):
    """A (role `first`) not followed by a correlated B (role `missing`) within T.

    A schedules a timer at A + T, kept in the customer state (`p`) and in the
    partition's timer index; a B with A <= B <= deadline resolves it. The
    timer fires when the partition watermark reaches the deadline, also for a
    customer who never sends another event. Recent B times (`d`) are kept for
    one window so an A that arrives late, after its B, is already resolved.
    """

    name = "absence"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        assert rule.within_ms is not None
        rs = step.rule_state(rule.id)
        pending: dict[str, list[Any]] = rs.setdefault("p", {})
        done: dict[str, int] = rs.setdefault("d", {})
        key = key_of(rule.correlate, event)
        t = event.occurred_at
        if role == "missing":
            timer = pending.get(key)
            if timer is not None and timer[1] <= t <= timer[0]:
                del pending[key]
                step.engine.cancel_timer(step.store, timer[0], step.customer_id, rule.id, key)
            if done.get(key, t - 1) < t:
                done[key] = t
            horizon = step.newest - rule.within_ms - step.engine.config.allowed_lateness_ms
            for k in [k for k, bt in done.items() if bt < horizon]:
                del done[k]
            return
        deadline = t + rule.within_ms
        resolved_at = done.get(key)
        if resolved_at is not None and t <= resolved_at <= deadline:
            return
        timer = pending.get(key)
        if timer is not None:
            if timer[0] <= deadline:
                return  # the earliest open case keeps the timer
            step.engine.cancel_timer(step.store, timer[0], step.customer_id, rule.id, key)
        pending[key] = [deadline, t, event.event_id, event.type]
        step.schedule(deadline, rule.id, key)

    def on_timer(self, step: Step, rule: Rule, key: str, deadline: int) -> None:
        """The deadline passed without a resolution: the candidate, at the deadline."""
        assert rule.within_ms is not None
        pending = step.rule_state(rule.id).get("p", {})
        timer = pending.get(key)
        if timer is None or timer[0] != deadline:
            return  # resolved (or replaced) since it was scheduled
        del pending[key]
        a_t, a_id, a_type = timer[1], timer[2], timer[3]
        ctx = {
            "first_date": iso_day(a_t),
            "first_what": WHAT.get(a_type, a_type.replace("_", " ")),
            "what": WHAT.get(a_type, a_type.replace("_", " ")),
            "type": a_type,
            "reference": key or "(no reference)",
            "within": format_duration(rule.within_ms),
        }
        step.candidate(rule, deadline, [a_id], key, None, ctx)


class RelationshipKind(Kind):
    """Negatives - positives in the ledger window >= min_deficit (evaluated on each negative)."""

    name = "relationship"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        self.evaluate(step, rule, event.occurred_at, event)

    def evaluate(self, step: Step, rule: Rule, at: int, event: InteractionEvent | None) -> None:
        assert rule.min_deficit is not None
        lo = at - step.engine.pack.relationship.window_ms
        ledger = step.state.get("led", ())
        held = [e for e in ledger if lo <= e[0] <= at]
        negatives = [e for e in held if e[1] < 0]
        positives = len(held) - len(negatives)
        if len(negatives) - positives >= rule.min_deficit:
            ctx = {"negatives": len(negatives), "positives": positives}
            evidence = [e[2] for e in negatives if e[3]]
            step.candidate(rule, at, evidence, "", event, ctx)


#: Each rule kind's semantics; arbitration and the timers call the absence and
#: relationship kinds directly.
ABSENCE: Final = AbsenceKind()
RELATIONSHIP: Final = RelationshipKind()
KIND_SEMANTICS: Final[dict[str, Kind]] = {
    "match": MatchKind(),
    "profile": MatchKind(),
    "first": FirstKind(),
    "count": CountKind(),
    "sequence": SequenceKind(),
    "absence": ABSENCE,
    "relationship": RELATIONSHIP,
}

"""When a rule fires: the whole semantics of the trigger engine, top to bottom.

The engine is a pure function of (state, event or tick) -> (state, actions,
decisions). One `StateStore` holds the state of one input partition; the
engine keeps no state of its own between calls, reads no clock and draws no
random numbers, so the same events in the same order give the same bytes in
replay, in tests and in the worker. It knows no Kafka and no Faust.

Reading order:

1. Time. Each partition has a watermark = max occurred_at seen - allowed
   lateness. When an event arrives the watermark advances first and every
   timer with deadline <= watermark fires (deadline order, ties by customer
   id then rule id; `triggered_at` = deadline); then the event is applied.
   Late events are applied with their own time; they never undo a fired timer.
2. Applying an event: drop it if its event_id was seen for this customer
   within the dedupe horizon (a `duplicate_event` decision per rule listening
   to its type); otherwise update the customer profile (last channel,
   customer_since, products, relationship ledger) and hand the event to every
   rule listening to its type. Each rule kind (small classes below, one
   `on_event` each) turns the event into zero or one candidate action.
3. Arbitration: candidates are decided highest priority first, ties by rule
   id. A candidate is suppressed as `already_raised` when its kind says so (a
   first-occurrence rule seeing its key again), by a cool-down (per customer
   and rule, per key where the rule has one, counted from the last action that
   fired: |t - last| < cool-down; suppressed candidates do not restart it), or,
   for engagement rules only, by the contact cap (fired engagement actions with
   |t - f| < cap window; capped means suppressed, never deferred). Otherwise a
   deterministic control group (hash of customer and rule < holdout percent)
   is `held_out` (it starts the cool-down like a fired action, so both groups
   keep the same cadence, but sends nothing); the rest fire. Every candidate
   yields exactly one Decision; a fired one carries its action's id.
   Every action gets `details.relationship_balance`: positives - negatives of
   the customer's ledger in the window ending at `triggered_at`, and the two
   counts as `details.relationship_positives` / `relationship_negatives`.
4. State stays bounded: windows, ledgers, dedupe ids and cool-downs are pruned
   against the customer's latest event time; timers are deleted when they fire
   or are resolved.
"""

from __future__ import annotations

import hashlib
import importlib
import string
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import Any, ClassVar, Final

from processors.engine.interfaces import (
    CLOCK_KEY,
    CUSTOMER_PREFIX,
    TIMER_BUCKET_MS,
    TIMER_BUCKET_PREFIX,
    TIMER_INDEX_KEY,
    DictStore,
    EngineConfig,
    EngineOutput,
    StateStore,
)
from processors.engine.rules import (
    CustomerProfile,
    Pattern,
    Rule,
    RulePack,
    format_duration,
)
from schemas.records import ActionEvent, Decision, InteractionEvent

#: Events that give the customer a product (for details.products).
PRODUCT_EVENTS: Final = frozenset({"account_opened"})

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_VIA: Final = {
    "call": "by phone",
    "email": "by email",
    "billing": "through billing",
    "web": "on the web",
    "other": "through another channel",
}
_WHAT: Final = {
    "account_opened": "an account opening",
    "cancellation_requested": "a cancellation request",
    "invoice_issued": "an invoice",
    "payment_received": "a payment",
    "payment_failed": "a failed payment",
    "payment_demand_issued": "a payment demand",
    "meter_reading_submitted": "a meter reading",
    "dispute_opened": "a dispute",
    "dispute_resolved": "a dispute resolution",
    "complaint_filed": "a complaint",
    "complaint_resolved": "a complaint resolution",
    "feedback_given": "feedback",
    "address_changed": "an address change",
    "inquiry": "an inquiry",
}


def utc_date(ms: int) -> date:
    """The UTC calendar date of an epoch-milliseconds timestamp."""
    return _day(ms // 86_400_000)


def iso_day(ms: int) -> str:
    """The UTC calendar date of an epoch-milliseconds timestamp as YYYY-MM-DD."""
    days = ms // 86_400_000
    text = _ISO_DAYS.get(days)
    if text is None:
        if len(_ISO_DAYS) >= 65_536:
            _ISO_DAYS.clear()
        text = _ISO_DAYS[days] = _day(days).isoformat()
    return text


#: day number -> YYYY-MM-DD, a plain dict because every reason with a {date} asks for it.
_ISO_DAYS: Final[dict[int, str]] = {}


def _iso_date(day: date) -> str:
    """day.isoformat(), remembered in _ISO_DATES (customer_since is on most events)."""
    if len(_ISO_DATES) >= 65_536:
        _ISO_DATES.clear()
    text = _ISO_DATES[day] = day.isoformat()
    return text


#: customer_since -> YYYY-MM-DD, a plain dict because it is on most events' path.
_ISO_DATES: Final[dict[date, str]] = {}


@lru_cache(maxsize=4096)
def _day(days: int) -> date:
    return (_EPOCH + timedelta(days=days)).date()


def tenure_years(since: date, on: date) -> int:
    """Whole years between `since` and `on` (an anniversary on Feb 29 counts on Feb 28)."""
    years = on.year - since.year
    month, day = since.month, since.day
    if month == 2 and day == 29:
        day = 28
    if (on.month, on.day) < (month, day):
        years -= 1
    return max(years, 0)


@lru_cache(maxsize=65_536)
def anniversary_ms(since_iso: str, years: int) -> int:
    """Start (UTC midnight) of the day a relationship begun on `since_iso` is `years` old."""
    since = date.fromisoformat(since_iso)
    day = 28 if (since.month, since.day) == (2, 29) else since.day
    when = datetime(since.year + years, since.month, day, tzinfo=UTC)
    return (when - _EPOCH) // timedelta(milliseconds=1)


def _plain_sha256() -> Callable[[bytes], Any]:
    """CPython's built-in SHA-256 (same digest as hashlib's): for the short texts of ids it
    costs about half of OpenSSL's, whose per-call context setup dominates."""
    for name in ("_sha2", "_sha256"):  # Python >= 3.12, <= 3.11
        try:
            candidate = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        if candidate(b"moments").digest() == hashlib.sha256(b"moments").digest():
            return candidate  # type: ignore[no-any-return]
    return hashlib.sha256


_sha256: Final = _plain_sha256()


def hex_id(text: str) -> str:
    """A 128-bit hex id of `text`: the first 32 hex digits of its SHA-256."""
    return _sha256(text.encode()).digest()[:16].hex()


def stable_id(*parts: str) -> str:
    """A 128-bit hex id from the parts (same parts -> same id, on every machine)."""
    return hex_id("\x1f".join(parts))


def in_holdout(customer_id: str, rule_id: str, percent: float) -> bool:
    """The deterministic control group: hash(customer, rule) mapped to [0, 100) < percent."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"{customer_id}\x1f{rule_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2**64 < percent


# ----------------------------------------------------------------------------------------
# Candidates and conditions
# ----------------------------------------------------------------------------------------


#: The context of candidates that have none (shared: contexts are only read).
_NO_CONTEXT: Final[dict[str, Any]] = {}


@dataclass(slots=True)
class Candidate:
    """An action a rule wants to take; arbitration turns it into a Decision."""

    rule: Rule
    at: int  # event time of the decision (triggered_at / decided_at)
    evidence: list[str]
    key: str = ""  # cool-down key ("" = per customer)
    event: InteractionEvent | None = None  # the event that made the rule fire, if any
    context: dict[str, Any] = field(default_factory=dict)  # extra reason placeholders
    suppress: str | None = None  # set by the kind itself, e.g. already_raised


def field_value(event: InteractionEvent, name: str) -> str | None:
    """An event field or `attributes.<key>` as a string (None when absent)."""
    if name.startswith("attributes."):
        return event.attributes.get(name[11:])
    value = getattr(event, name)
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return amount_text(value)
    return str(value)


def amount_text(value: float) -> str:
    """A money amount with two decimals, remembered: float formatting is slow, and a reason
    and the details of the same action both show it."""
    text = _AMOUNTS.get(value)
    if text is None:
        text = f"{value:.2f}"
        if value:  # 0.0 == -0.0 as keys, but they print differently
            if len(_AMOUNTS) >= 65_536:
                _AMOUNTS.clear()
            _AMOUNTS[value] = text
    return text


_AMOUNTS: Final[dict[float, str]] = {}


def profile_of(customer_id: str, state: dict[str, Any]) -> CustomerProfile:
    since = state.get("since")
    return CustomerProfile(
        customer_id=customer_id,
        products=tuple(state.get("prod", ())),
        customer_since=date.fromisoformat(since) if since else None,
        last_channel=state.get("ch"),
    )


def matches(p: Pattern, event: InteractionEvent, customer_id: str, state: dict[str, Any]) -> bool:
    """Does the event meet every condition of the pattern? (The type was checked by the index.)"""
    if p.channels is not None and event.channel not in p.channels:
        return False
    if p.products is not None and event.product not in p.products:
        return False
    for name, allowed in p.fields:
        if field_value(event, name) not in allowed:
            return False
    for key, values in p.attributes:
        if event.attributes.get(key) not in values:
            return False
    if p.min_tenure_years is not None:
        since = state.get("since")
        if since is None or event.occurred_at < anniversary_ms(since, p.min_tenure_years):
            return False
    return p.predicate is None or bool(p.predicate(event, profile_of(customer_id, state)))


def _key(rule_field: str | None, event: InteractionEvent) -> str:
    if rule_field is None:
        return ""
    if rule_field in _TEXT_FIELDS:
        value = getattr(event, rule_field)
        if value is None or type(value) is str:
            return value or ""  # what field_value gives, without its checks
    return field_value(event, rule_field) or ""


# ----------------------------------------------------------------------------------------
# Rule kinds: each turns one event (or one due timer) into at most one candidate.
# `rs` is the rule's own slice of the customer state, a plain dict.
# ----------------------------------------------------------------------------------------


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
            Candidate(rule, event.occurred_at, [event.event_id], "", event, _NO_CONTEXT)
        )


class FirstKind(Kind):
    """The first matching event per key (customer or a field), once ever.

    Later occurrences are candidates suppressed as `already_raised`, so the
    trace answers "why no explanation for the second bill?".
    """

    name = "first"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        key = _key(rule.key_field, event)
        rs = step.rule_state(rule.id)
        seen: list[str] | None = rs.get("k")
        suppress = None
        if seen is None:
            rs["k"] = [key]
        elif key in seen:
            suppress = "already_raised"
        else:
            insort(seen, key)
        step.candidates.append(
            Candidate(rule, event.occurred_at, [event.event_id], key, event, _NO_CONTEXT, suppress)
        )


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
        key = _key(rule.correlate, event)
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
                "first_what": _WHAT.get(a_type, a_type.replace("_", " ")),
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
        key = _key(rule.correlate, event)
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
        _, a_t, a_id, a_type = timer
        ctx = {
            "first_date": iso_day(a_t),
            "first_what": _WHAT.get(a_type, a_type.replace("_", " ")),
            "what": _WHAT.get(a_type, a_type.replace("_", " ")),
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


_ABSENCE: Final = AbsenceKind()
_RELATIONSHIP: Final = RelationshipKind()
KIND_SEMANTICS: Final[dict[str, Kind]] = {
    "match": MatchKind(),
    "profile": MatchKind(),
    "first": FirstKind(),
    "count": CountKind(),
    "sequence": SequenceKind(),
    "absence": _ABSENCE,
    "relationship": _RELATIONSHIP,
}


# ----------------------------------------------------------------------------------------
# One step of the engine for one customer: state, candidates, arbitration, output.
# ----------------------------------------------------------------------------------------


def _by_priority(cand: Candidate) -> tuple[int, str]:
    return -cand.rule.priority, cand.rule.id


class Step:
    """The work on one customer's state within one process()/advance() call."""

    __slots__ = (
        "candidates",
        "customer_id",
        "due_now",
        "engine",
        "newest",
        "out",
        "state",
        "store",
    )

    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        out: EngineOutput,
        customer_id: str,
        state: dict[str, Any],
    ) -> None:
        self.engine = engine
        self.store = store
        self.out = out
        self.customer_id = customer_id
        self.state = state
        self.newest: int = state.get("t", 0)
        self.candidates: list[Candidate] = []
        self.due_now: list[list[Any]] | None = None  # timers already due (late events)

    def rule_state(self, rule_id: str) -> dict[str, Any]:
        rules: dict[str, dict[str, Any]] | None = self.state.get("r")
        if rules is None:
            rules = self.state["r"] = {}
        rs = rules.get(rule_id)
        if rs is None:
            rs = rules[rule_id] = {}
        return rs

    def prune(self, entries: list[list[Any]], window_ms: int) -> None:
        """Drop time-sorted entries no event (allowing for lateness) can still need."""
        horizon = self.newest - window_ms - self.engine.config.allowed_lateness_ms
        cut = 0
        for entry in entries:
            if entry[0] >= horizon:
                break
            cut += 1
        if cut:
            del entries[:cut]

    def candidate(
        self,
        rule: Rule,
        at: int,
        evidence: list[str],
        key: str,
        event: InteractionEvent | None,
        context: dict[str, Any],
    ) -> Candidate:
        cand = Candidate(rule, at, evidence, key, event, context)
        self.candidates.append(cand)
        return cand

    def schedule(self, deadline: int, rule_id: str, key: str) -> None:
        if self.due_now is None:
            self.due_now = []
        self.engine.schedule_timer(
            self.store, deadline, self.customer_id, rule_id, key, self.due_now
        )

    # -- arbitration ----------------------------------------------------------------------

    def decide_all(self) -> None:
        """Decide the collected candidates: highest priority first, then rule id."""
        negative_rules = self.engine._negative_rules
        while self.candidates:
            batch = self.candidates
            if len(batch) > 1:
                batch.sort(key=_by_priority)
            self.candidates = []
            negative_action_at: int | None = None
            for cand in batch:
                if self.decide(cand) and cand.rule.id in negative_rules:
                    negative_action_at = cand.at
            if negative_action_at is not None:
                for rule in self.engine.ledger_rules:
                    _RELATIONSHIP.evaluate(self, rule, negative_action_at, None)

    def decide(self, cand: Candidate) -> bool:
        """One candidate -> one Decision (and an action when it fires). True if it fired."""
        rule = cand.rule
        engine = self.engine
        rt = engine.runtime[rule.id]
        config = engine.config
        state = self.state
        cid = self.customer_id
        at = cand.at
        key = cand.key
        cool_down_ms = rt.cool_down_ms
        cool: dict[str, int] | None = None
        if cool_down_ms is not None:
            rs = self.rule_state(rule.id)
            cool = rs.get("cd")
        if cand.suppress is not None:
            outcome = "suppressed"
            reason = cand.suppress
        elif (
            cool is not None and key in cool and abs(at - cool[key]) < cool_down_ms  # type: ignore[operator]
        ):
            outcome, reason = "suppressed", "cool_down"
        else:
            outcome = reason = "fired"
            if rt.engagement:
                window = config.contact_cap_window_ms
                recent = 0
                for f in state.get("cap", ()):
                    if abs(at - f) < window:
                        recent += 1
                if recent >= config.contact_cap:
                    outcome, reason = "suppressed", "contact_cap"
            if (
                outcome == "fired"
                and config.holdout_percent > 0
                and in_holdout(cid, rule.id, config.holdout_percent)
            ):
                outcome, reason = "held_out", "held_out"
        if cool_down_ms is not None and outcome != "suppressed":
            # held_out starts the cool-down too, so the control group keeps the same cadence
            if cool is None:
                cool = rs["cd"] = {}
            if key not in cool or cool[key] < at:
                cool[key] = at
            if len(cool) > 1:  # per-key cool-downs: forget keys whose cool-down is over
                horizon = self.newest - cool_down_ms - config.allowed_lateness_ms
                for k in [k for k, last in cool.items() if last < horizon]:
                    del cool[k]
        engine.decided += 1
        evidence = cand.evidence
        fired = outcome == "fired"
        if not fired and not engine.decisions:
            return False
        # ids hash "\x1f"-joined parts; the evidence tail is shared by both ids
        if len(evidence) == 1:  # the usual case: one event made the rule fire
            tail = "\x1f" + evidence[0]
        else:
            tail = "\x1f" + "\x1f".join(evidence) if evidence else ""
        action_id = (
            _sha256(f"{rt.action_prefix}{cid}{tail}".encode()).digest()[:16].hex()
            if fired
            else None
        )
        if engine.decisions:
            self.out.decisions.append(
                Decision(  # positional: the field order of decision.avsc
                    # the time too: the same evidence can be decided again later
                    _sha256(f"{rt.decision_prefix}{cid}\x1f{reason}\x1f{at}{tail}".encode())
                    .digest()[:16]
                    .hex(),
                    cid,
                    rule.id,
                    rule.version,
                    outcome,
                    reason,
                    action_id,
                    evidence,
                    at,
                )
            )
        if action_id is None:
            return False
        if rt.engagement:
            contacts: list[int] | None = state.get("cap")
            if contacts is None:
                state["cap"] = [at]
            else:
                insort(contacts, at)
                self.prune_times(contacts, config.contact_cap_window_ms)
        positives, negatives = engine.tally(state, at) if "led" in state else (0, 0)
        balance = positives - negatives
        self.out.actions.append(
            # positional: the field order of action_event.avsc
            ActionEvent(
                action_id,
                cid,
                rule.id,
                rule.action,
                rule.version,
                rule.destination,
                rule.priority,
                self.render(rt, cand, balance),
                list(evidence) if engine.decisions else evidence,  # not shared with a Decision
                state.get("ch") or "other",
                at,
                at + rule.due_by_ms if rule.due_by_ms is not None else None,
                self.details(rt, cand, (balance, positives, negatives)),
            )
        )
        if rt.ledger_sign:
            _record(
                state,
                self.newest,
                config.allowed_lateness_ms,
                engine._ledger_window,
                at,
                rt.ledger_sign,
                action_id,
                0,
            )
        return True

    def prune_times(self, times: list[int], window_ms: int) -> None:
        horizon = self.newest - window_ms - self.engine.config.allowed_lateness_ms
        cut = 0
        for t in times:
            if t >= horizon:
                break
            cut += 1
        if cut:
            del times[:cut]

    # -- rendering ------------------------------------------------------------------------

    def render(self, rt: _RuleRuntime, cand: Candidate, balance: int) -> str:
        """The rule's reason template with the placeholders it uses (and only those)."""
        extra = cand.context
        parts = rt.reason_parts
        if parts is None:  # a template str.format must parse itself (a pack built in code)
            ctx: dict[str, Any] = {}
            for name, getter in rt.placeholders:
                ctx[name] = extra[name] if name in extra else getter(self, cand, balance)
            return cand.rule.reason.format_map(ctx)
        pieces: list[str] = []
        append = pieces.append
        if extra is _NO_CONTEXT:
            for literal, _, getter in parts:
                append(literal)
                append(getter(self, cand, balance))
        else:
            for literal, name, getter in parts:
                append(literal)
                if name in extra:
                    value = extra[name]
                    append(value if type(value) is str else format(value))
                else:
                    append(getter(self, cand, balance))
        append(rt.reason_tail)
        return "".join(pieces)

    def details(
        self, rt: _RuleRuntime, cand: Candidate, ledger: tuple[int, int, int]
    ) -> dict[str, str]:
        """The rule's details (absent values left out) plus the ledger's, sorted.

        `ledger` is (balance, positives, negatives) at the candidate's time."""
        out: dict[str, str] = {}
        event = cand.event
        if event is not None and rt.event_details is not None:
            state = self.state
            for name, source_kind, read, source in rt.event_details:
                if source_kind == _FROM_EVENT:
                    value = read(event)
                    if value is None:
                        continue
                    if type(value) is not str:
                        value = field_value(event, source)
                elif source_kind == _FROM_STATE:
                    value = read(state)
                    if value is None:
                        continue
                else:
                    value = read(ledger)
                out[name] = value
            return out
        ordered = rt.details
        if ordered is None:  # a pack built in code naming a detail twice: the general path
            for name, getter in self.engine.detail_getters[cand.rule.id]:
                value = getter(self, cand)
                if value is not None:
                    out[name] = value
            for name, index in _LEDGER_DETAILS.items():
                out[name] = str(ledger[index])
            return dict(sorted(out.items()))
        for name, detail in ordered:
            if detail is None:
                out[name] = str(ledger[_LEDGER_DETAILS[name]])
            else:
                value = detail(self, cand)
                if value is not None:
                    out[name] = value
        return out


# ----------------------------------------------------------------------------------------
# Rendering: reason placeholders and details
# ----------------------------------------------------------------------------------------

DetailGetter = Callable[[Step, Candidate], str | None]


def detail_getter(source: str) -> DetailGetter:
    """How a detail source (see rules.py) is read for a candidate."""
    if source == "customer.products":
        return lambda step, cand: ",".join(step.state.get("prod", ()))
    if source == "customer.since":
        return lambda step, cand: step.state.get("since")
    if source == "customer.last_channel":
        return lambda step, cand: step.state.get("ch")

    if source in _TEXT_FIELDS:
        read = attrgetter(source)

        def from_text_field(step: Step, cand: Candidate) -> str | None:
            event = cand.event
            if event is not None:
                value = read(event)
                if value is None or type(value) is str:
                    return value  # what field_value gives, without its checks
                return field_value(event, source)
            if source == "reference":  # a timer: the correlation key is the A event's reference
                return cand.key or None
            value = cand.context.get(source)
            return None if value is None else str(value)

        return from_text_field

    def from_event(step: Step, cand: Candidate) -> str | None:
        if cand.event is not None:
            return field_value(cand.event, source)
        if source == "reference":  # a timer: the correlation key is the A event's reference
            return cand.key or None
        value = cand.context.get(source)
        return None if value is None else str(value)

    return from_event


#: Event fields holding text (or None): a detail reads them as they are.
_TEXT_FIELDS: Final = frozenset(
    {"channel", "type", "source", "product", "reference", "currency", "text"}
)

#: Where a detail of a candidate with an event comes from (see `event_detail`).
_FROM_EVENT: Final = 0  # read(event); a value that is not text goes through field_value
_FROM_STATE: Final = 1  # read(customer state)
_BALANCE: Final = 2  # details.relationship_*: read((balance, positives, negatives))
#: The ledger's details on every action -> index in (balance, positives, negatives).
_LEDGER_DETAILS: Final = {
    "relationship_balance": 0,
    "relationship_negatives": 2,
    "relationship_positives": 1,
}


def _ledger_reader(index: int) -> Callable[[Any], Any]:
    return lambda ledger: str(ledger[index])


#: (detail name, where from, read, source) for the candidates that have an event.
_EventDetail = tuple[str, int, Callable[[Any], Any], str]


def event_detail(name: str, source: str) -> _EventDetail:
    """`detail_getter` for a candidate with an event, as data the details loop reads inline."""
    if source == "customer.products":
        return name, _FROM_STATE, lambda state: ",".join(state.get("prod", ())), source
    if source == "customer.since":
        return name, _FROM_STATE, lambda state: state.get("since"), source
    if source == "customer.last_channel":
        return name, _FROM_STATE, lambda state: state.get("ch"), source
    if source.startswith("attributes."):
        key = source[11:]
        return name, _FROM_EVENT, lambda event: event.attributes.get(key), source
    if source in _TEXT_FIELDS:
        return name, _FROM_EVENT, attrgetter(source), source
    return name, _FROM_EVENT, lambda event: field_value(event, source), source


def _channel(step: Step, cand: Candidate) -> str:
    return cand.event.channel if cand.event is not None else step.state.get("ch") or "other"


def _what(event_type: str) -> str:
    return _WHAT.get(event_type, event_type.replace("_", " "))


def _tenure(step: Step, cand: Candidate) -> int:
    since = step.state.get("since")
    return tenure_years(date.fromisoformat(since), utc_date(cand.at)) if since else 0


def _amount(step: Step, cand: Candidate, balance: int) -> str:
    event = cand.event
    if event is None or event.amount is None:
        return "an amount"
    if event.currency:
        return f"{amount_text(event.amount)} {event.currency}".strip()
    return amount_text(event.amount)


def _event_attr(name: str, default: str) -> Callable[[Step, Candidate, int], Any]:
    def get(step: Step, cand: Candidate, balance: int) -> Any:
        value = getattr(cand.event, name, None) if cand.event is not None else None
        return value or default

    return get


#: A reason placeholder's text for a candidate (step, candidate, relationship balance).
Placeholder = Callable[["Step", Candidate, int], str]

#: How each reason placeholder is computed when the rule kind did not set it.
_PLACEHOLDERS: Final[dict[str, Placeholder]] = {
    "customer_id": lambda step, cand, balance: step.customer_id,
    "channel": lambda step, cand, balance: _channel(step, cand),
    "via": lambda step, cand, balance: _VIA.get(
        cand.event.channel if cand.event is not None else step.state.get("ch") or "other",
        "through another channel",
    ),
    "type": _event_attr("type", ""),
    "what": lambda step, cand, balance: _what(cand.event.type) if cand.event else "",
    "product": lambda step, cand, balance: (
        cand.event.product.replace("_", " ")
        if cand.event is not None and cand.event.product
        else "their account"
    ),
    "reference": _event_attr("reference", "(no reference)"),
    "amount": _amount,
    "date": lambda step, cand, balance: _ISO_DAYS.get(cand.at // 86_400_000) or iso_day(cand.at),
    "count": lambda step, cand, balance: str(len(cand.evidence)),
    "channels": lambda step, cand, balance: "",
    "channel_count": lambda step, cand, balance: "0",
    "window": lambda step, cand, balance: "",
    "within": lambda step, cand, balance: "",
    "first_date": lambda step, cand, balance: "",
    "first_what": lambda step, cand, balance: "",
    "gap": lambda step, cand, balance: "",
    "tenure_years": lambda step, cand, balance: str(_tenure(step, cand)),
    "since": lambda step, cand, balance: step.state.get("since") or "an unknown date",
    "products": lambda step, cand, balance: (
        ", ".join(p.replace("_", " ") for p in step.state.get("prod", ())) or "none on record"
    ),
    "new_address": lambda step, cand, balance: (
        (cand.event.attributes.get("new_address") if cand.event is not None else None)
        or "a new address"
    ),
    "balance": lambda step, cand, balance: str(balance),
    "negatives": lambda step, cand, balance: "0",
    "positives": lambda step, cand, balance: "0",
}


def _record(
    state: dict[str, Any],
    newest: int,
    lateness_ms: int,
    window_ms: int,
    at: int,
    sign: int,
    ref: str,
    is_event: int,
) -> None:
    """Insert a ledger entry [at, sign, ref, is_event] and prune it like `Step.prune`."""
    moment: list[Any] = [at, sign, ref, is_event]
    horizon = newest - window_ms - lateness_ms
    ledger: list[list[Any]] | None = state.get("led")
    if ledger is None:
        state["led"] = [moment] if at >= horizon else []
        return
    if ledger and ledger[-1][0] < at:
        ledger.append(moment)  # the usual case: the newest moment so far
    else:
        insort(ledger, moment)
    if ledger[0][0] < horizon:
        cut = 0
        for entry in ledger:
            if entry[0] >= horizon:
                break
            cut += 1
        del ledger[:cut]


# ----------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------

_deadline: Final = itemgetter(0)  # of a timer entry [deadline, customer, rule, key]

#: How a listener tests an event: None when the index's type check is the whole pattern.
MatchTest = Callable[[InteractionEvent, str, dict[str, Any]], bool]
#: A rule listening to an event type: (rule, role, test, kind).
_IndexEntry = tuple[Rule, str, MatchTest | None, Kind]


def _trivial(p: Pattern) -> bool:
    return p == Pattern(types=p.types)


def compile_pattern(p: Pattern) -> MatchTest | None:
    """`matches` specialised for one pattern (None when only its types matter).

    The tenure-only pattern (recognize_tenure listens to every event) gets its own
    closure; any other pattern is tested by `matches` itself.
    """
    if _trivial(p):
        return None
    years = p.min_tenure_years
    if years is not None and p == Pattern(types=p.types, min_tenure_years=years):

        def tenure(event: InteractionEvent, customer_id: str, state: dict[str, Any]) -> bool:
            since = state.get("since")
            if since is None:
                return False
            anniversary = anniversaries.get(since)
            if anniversary is None:
                if len(anniversaries) >= 65_536:
                    anniversaries.clear()
                anniversary = anniversaries[since] = anniversary_ms(since, years)
            return event.occurred_at >= anniversary

        anniversaries: dict[str, int] = {}  # a str-keyed dict is cheaper than lru_cache's tuple
        return tenure

    def test(event: InteractionEvent, customer_id: str, state: dict[str, Any]) -> bool:
        return matches(p, event, customer_id, state)

    return test


class _RuleRuntime:
    """What the engine precomputes per rule so a decision does no lookups it can avoid."""

    __slots__ = (
        "action_prefix",
        "cool_down_ms",
        "decision_prefix",
        "details",
        "engagement",
        "event_details",
        "ledger_sign",
        "placeholders",
        "reason_parts",
        "reason_tail",
        "rule",
    )

    def __init__(self, rule: Rule, relationship: Any) -> None:
        self.rule = rule
        self.cool_down_ms = rule.cool_down_ms
        self.engagement = rule.rule_class == "engagement"
        self.action_prefix = rule.id + "\x1f"
        self.decision_prefix = f"decision\x1f{rule.id}\x1f"
        names = [name for name, _ in rule.details]
        # Details come out sorted by name with relationship_balance among them (None = that slot).
        self.details: tuple[tuple[str, DetailGetter | None], ...] | None = None
        self.event_details: tuple[_EventDetail, ...] | None = None
        if len(set(names)) == len(names):
            getters: dict[str, DetailGetter | None] = {
                name: detail_getter(source) for name, source in rule.details
            }
            getters.update(dict.fromkeys(_LEDGER_DETAILS))
            self.details = tuple(sorted(getters.items(), key=lambda item: item[0]))
            sources = dict(rule.details)
            self.event_details = tuple(
                (name, _BALANCE, _ledger_reader(_LEDGER_DETAILS[name]), "")
                if getter is None
                else event_detail(name, sources[name])
                for name, getter in self.details
            )
        parsed = list(string.Formatter().parse(rule.reason))
        self.placeholders = tuple(
            (name, _PLACEHOLDERS[name]) for name in dict.fromkeys(f for _, f, _, _ in parsed if f)
        )
        # The template split once into (literal, placeholder, getter) pieces + a literal tail,
        # so rendering joins strings instead of str.format parsing the template every time.
        self.reason_parts: tuple[tuple[str, str, Placeholder], ...] | None = None
        self.reason_tail = ""
        if all(
            f in _PLACEHOLDERS and not spec and not conv
            for _, f, spec, conv in parsed
            if f is not None
        ):
            pieces: list[tuple[str, str, Placeholder]] = []
            literal = ""
            for text, name, _, _ in parsed:
                literal += text
                if name is not None:
                    pieces.append((literal, name, _PLACEHOLDERS[name]))
                    literal = ""
            self.reason_parts = tuple(pieces)
            self.reason_tail = literal
        self.ledger_sign = (
            1
            if rule.id in relationship.positive_rules
            else -1
            if rule.id in relationship.negative_rules
            else 0
        )


class Engine:
    """Runs a rule pack over events and ticks, one partition's StateStore at a time.

    It holds only the pack, the config and precomputed indexes; all state is in
    the store. It must never read the wall clock, random numbers or anything
    but its arguments. `decisions=False` leaves `EngineOutput.decisions` empty
    (and skips building them) for callers that only want actions; everything
    else, state included, is the same.
    """

    def __init__(
        self, pack: RulePack, config: EngineConfig | None = None, *, decisions: bool = True
    ) -> None:
        self.pack = pack
        self.config = config or EngineConfig()
        self.decisions = decisions
        #: Decisions made so far (counted also when they are not built).
        self.decided = 0
        self.rules = {rule.id: rule for rule in pack.rules}
        self.runtime = {rule.id: _RuleRuntime(rule, pack.relationship) for rule in pack.rules}
        self.detail_getters = {
            rule.id: tuple((name, detail_getter(source)) for name, source in rule.details)
            for rule in pack.rules
        }
        self.placeholders = {
            rule.id: tuple(name for name, _ in self.runtime[rule.id].placeholders)
            for rule in pack.rules
        }
        self.ledger_rules = [r for r in pack.rules if r.kind == "relationship"]
        order = {rule.id: i for i, rule in enumerate(pack.rules)}
        positioned: list[tuple[int, str | None, _IndexEntry]] = []
        tests: dict[Pattern, MatchTest | None] = {}
        for rule in pack.rules:
            kind = KIND_SEMANTICS[rule.kind]
            roles: list[tuple[str, Pattern]] = []
            if rule.kind == "relationship":
                continue
            roles.append(("first" if rule.kind in ("sequence", "absence") else "on", rule.pattern))
            if rule.follow is not None:
                roles.append(("then" if rule.kind == "sequence" else "missing", rule.follow))
            for role, pattern in roles:
                if pattern not in tests:
                    tests[pattern] = compile_pattern(pattern)
                entry: _IndexEntry = (rule, role, tests[pattern], kind)
                if pattern.types is None:
                    positioned.append((order[rule.id], None, entry))
                else:
                    for t in sorted(pattern.types):
                        positioned.append((order[rule.id], t, entry))
        self._positioned = positioned
        #: event type -> (listeners, ledger sign, gives a product): what an event of the type
        #: touches, worked out once per type
        self._by_type: dict[str, tuple[tuple[_IndexEntry, ...], int, bool]] = {}
        #: event type -> +1 / -1 for the ledger (negative wins where a type is both)
        self._signs = {t: 1 for t in pack.relationship.positive} | {
            t: -1 for t in pack.relationship.negative
        }
        self._lateness_ms = self.config.allowed_lateness_ms
        self._dedupe_ms = self.config.dedupe_horizon_ms
        self._dedupe_slack_ms = self._dedupe_ms + self._dedupe_ms // 4
        self._negative_rules = pack.relationship.negative_rules
        self._ledger_window = pack.relationship.window_ms

    def listeners(self, event_type: str) -> tuple[_IndexEntry, ...]:
        """Rules (with their role) that look at events of this type, in pack order."""
        return self._type_plan(event_type)[0]

    def _type_plan(self, event_type: str) -> tuple[tuple[_IndexEntry, ...], int, bool]:
        plan = self._by_type.get(event_type)
        if plan is None:
            listeners = tuple(e for _, t, e in self._positioned if t is None or t == event_type)
            plan = (listeners, self._signs.get(event_type, 0), event_type in PRODUCT_EVENTS)
            if len(self._by_type) < 10_000:  # unknown types must not grow the cache forever
                self._by_type[event_type] = plan
        return plan

    # -- public API -----------------------------------------------------------------------

    def process(self, store: StateStore, event: InteractionEvent) -> EngineOutput:
        """Apply one event of this partition: advance the watermark, fire due timers, apply."""
        out = EngineOutput([], [])
        # Replay and backfill: a DictStore holds the very objects the engine mutates, so
        # reads skip a Python call and only new keys need writing.
        in_place = type(store) is DictStore
        if in_place:
            data = store.data  # type: ignore[attr-defined]
            get: Callable[[str], Any] = data.get
            put: Callable[[str, Any], None] = data.__setitem__
        else:
            get = store.get
            put = store.set
        t = event.occurred_at
        clock = get(CLOCK_KEY)
        if clock is None:
            clock = {"max": t, "wm": t - self._lateness_ms}
            put(CLOCK_KEY, clock)
        elif t > clock["max"]:
            clock["max"] = t
            watermark = t - self._lateness_ms
            if watermark > clock["wm"]:
                clock["wm"] = watermark
                index: list[int] | None = get(TIMER_INDEX_KEY)
                if index and index[0] * TIMER_BUCKET_MS <= watermark:
                    # the first bucket is sorted: fire only when its first deadline is due
                    first = get(f"{TIMER_BUCKET_PREFIX}{index[0]}")
                    if not first or first[0][0] <= watermark:
                        self._fire_due_from(store, index, watermark, out)
            if not in_place:
                put(CLOCK_KEY, clock)

        # Apply the event to its customer.
        cid = event.customer_id
        skey = CUSTOMER_PREFIX + cid
        state: dict[str, Any] | None = get(skey)
        event_id = event.event_id
        event_type = event.type
        plan = self._by_type.get(event_type)
        if plan is None:
            plan = self._type_plan(event_type)
        listeners, sign, gives_product = plan
        fresh = state is None
        if state is None:
            state = {"seen": {event_id: t}, "t": t, "ch": event.channel, "so": t}
            newest = t
        else:
            seen: dict[str, int] = state["seen"]
            if event_id in seen:
                matching = [e for e in listeners if e[2] is None or e[2](event, cid, state)]
                self._duplicate(event, matching, out)
                return out
            seen[event_id] = t
            newest = state.get("t", t)
            if t >= newest:
                state["t"] = newest = t
                state["ch"] = event.channel
            # Ids are kept at least the dedupe horizon and at most a quarter longer, so the
            # (linear) expiry runs at most once per quarter horizon per customer.
            oldest = state.get("so", t)
            if oldest < newest - self._dedupe_slack_ms:
                horizon = newest - self._dedupe_ms
                seen = state["seen"] = {k: st for k, st in seen.items() if st >= horizon}
                oldest = min(seen.values(), default=t)
            state["so"] = oldest if oldest < t else t
        since_day = event.customer_since
        if since_day is not None:
            since = _ISO_DATES.get(since_day)
            if since is None:
                since = _iso_date(since_day)
            state["since"] = since
        product = event.product
        if product and gives_product:
            products: list[str] | None = state.get("prod")
            if products is None:
                state["prod"] = [product]
            elif product not in products:
                insort(products, product)
        if sign:
            _record(state, newest, self._lateness_ms, self._ledger_window, t, sign, event_id, 1)
        # Conditions read only since / products / last channel, which no rule kind changes,
        # so testing every listener before running any is the same as testing each in turn.
        matched: list[_IndexEntry] | None = None
        for entry in listeners:
            test = entry[2]
            if test is None or test(event, cid, state):
                if matched is None:
                    matched = [entry]
                else:
                    matched.append(entry)
        if matched is not None or sign < 0:
            step = Step(self, store, out, cid, state)
            if matched is not None:
                for rule, role, _, kind in matched:
                    kind.on_event(step, rule, role, event)
            if sign < 0:
                for rule in self.ledger_rules:
                    _RELATIONSHIP.evaluate(step, rule, t, event)
            if step.candidates:
                step.decide_all()
            if fresh or not in_place:
                put(skey, state)
            if step.due_now:
                self._fire(store, step.due_now, out)
        elif fresh or not in_place:
            put(skey, state)
        return out

    def advance(self, store: StateStore, now_ms: int) -> EngineOutput:
        """Idle tick: event time has reached `now_ms`; watermark = now_ms - lateness."""
        return self.advance_watermark(store, now_ms - self.config.allowed_lateness_ms)

    def advance_watermark(self, store: StateStore, watermark_ms: int) -> EngineOutput:
        """Set the watermark to `watermark_ms` if that raises it (`replay --until`); fire timers."""
        out = EngineOutput([], [])
        clock = store.get(CLOCK_KEY)
        if clock is None:
            clock = {"max": watermark_ms, "wm": watermark_ms}
        elif watermark_ms > clock["wm"]:
            clock["wm"] = watermark_ms
        else:
            return out
        store.set(CLOCK_KEY, clock)
        self._fire_due(store, watermark_ms, out)
        return out

    def watermark(self, store: StateStore) -> int | None:
        """The partition's current watermark (None before its first event)."""
        clock = store.get(CLOCK_KEY)
        return None if clock is None else int(clock["wm"])

    # -- applying an event ----------------------------------------------------------------

    def _duplicate(
        self, event: InteractionEvent, listeners: Iterable[_IndexEntry], out: EngineOutput
    ) -> None:
        """A redelivered or repeated event: no state change, a trace per listening rule."""
        done: set[str] = set()
        for rule, _, _, _ in listeners:
            if rule.id in done:
                continue
            done.add(rule.id)
            self.decided += 1
            if not self.decisions:
                continue
            out.decisions.append(
                Decision(
                    decision_id=stable_id(
                        "decision", rule.id, event.customer_id, "duplicate_event", event.event_id
                    ),
                    customer_id=event.customer_id,
                    rule=rule.id,
                    rule_version=rule.version,
                    outcome="suppressed",
                    reason="duplicate_event",
                    action_id=None,
                    evidence=[event.event_id],
                    decided_at=event.occurred_at,
                )
            )

    # -- relationship ledger --------------------------------------------------------------

    def record(self, step: Step, at: int, sign: int, ref: str, *, is_event: bool) -> None:
        """Add a positive (+1) or negative (-1) moment to the customer's rolling ledger."""
        _record(
            step.state,
            step.newest,
            self.config.allowed_lateness_ms,
            self._ledger_window,
            at,
            sign,
            ref,
            1 if is_event else 0,
        )

    def tally(self, state: dict[str, Any], at: int) -> tuple[int, int]:
        """(positives, negatives) with time in [at - window, at]."""
        ledger = state.get("led")
        if not ledger:
            return 0, 0
        lo = at - self._ledger_window
        positives = negatives = 0
        for entry in ledger:  # sorted by time
            moment = entry[0]
            if moment > at:
                break
            if moment >= lo:
                if entry[1] > 0:
                    positives += 1
                else:
                    negatives += 1
        return positives, negatives

    def balance(self, state: dict[str, Any], at: int) -> int:
        """Positives - negatives with time in [at - window, at]."""
        ledger = state.get("led")
        if not ledger:
            return 0
        lo = at - self._ledger_window
        total = 0
        for entry in ledger:  # sorted by time
            moment = entry[0]
            if moment > at:
                break
            if moment >= lo:
                total += entry[1]
        return total

    # -- timers ---------------------------------------------------------------------------

    def schedule_timer(
        self,
        store: StateStore,
        deadline: int,
        customer_id: str,
        rule_id: str,
        key: str,
        due_now: list[list[Any]],
    ) -> None:
        """Register a deadline in the partition's timer index (or in `due_now` if already due)."""
        clock = store.get(CLOCK_KEY)
        entry = [deadline, customer_id, rule_id, key]
        if clock is not None and deadline <= clock["wm"]:
            due_now.append(entry)  # a late event whose deadline already passed: fire after it
            return
        bucket = deadline // TIMER_BUCKET_MS
        bkey = f"{TIMER_BUCKET_PREFIX}{bucket}"
        entries = store.get(bkey)
        if entries is None:
            entries = []
            index: list[int] = store.get(TIMER_INDEX_KEY) or []
            insort(index, bucket)
            store.set(TIMER_INDEX_KEY, index)
        insort(entries, entry)
        store.set(bkey, entries)

    def cancel_timer(
        self, store: StateStore, deadline: int, customer_id: str, rule_id: str, key: str
    ) -> None:
        """Remove a resolved timer from the index."""
        bucket = deadline // TIMER_BUCKET_MS
        bkey = f"{TIMER_BUCKET_PREFIX}{bucket}"
        entries = store.get(bkey)
        if not entries:
            return
        entry = [deadline, customer_id, rule_id, key]
        if entry in entries:
            entries.remove(entry)
        if entries:
            store.set(bkey, entries)
        else:
            store.delete(bkey)
            index: list[int] = store.get(TIMER_INDEX_KEY) or []
            if bucket in index:
                index.remove(bucket)
            store.set(TIMER_INDEX_KEY, index)

    def _fire_due(self, store: StateStore, watermark: int, out: EngineOutput) -> None:
        index: list[int] | None = store.get(TIMER_INDEX_KEY)
        if not index or index[0] * TIMER_BUCKET_MS > watermark:
            return
        self._fire_due_from(store, index, watermark, out)

    def _fire_due_from(
        self, store: StateStore, index: list[int], watermark: int, out: EngineOutput
    ) -> None:
        """Fire every timer of the (sorted) bucket index with deadline <= watermark."""
        due: list[list[Any]] = []
        emptied = False
        while index and index[0] * TIMER_BUCKET_MS <= watermark:
            bkey = f"{TIMER_BUCKET_PREFIX}{index[0]}"
            entries: list[list[Any]] = store.get(bkey) or []
            ready = bisect_right(entries, watermark, key=_deadline)  # entries are sorted
            if ready < len(entries):
                if ready:
                    due.extend(entries[:ready])
                    store.set(bkey, entries[ready:])
                break
            due.extend(entries)
            store.delete(bkey)
            index.pop(0)
            emptied = True
        if emptied:
            store.set(TIMER_INDEX_KEY, index)
        if due:
            self._fire(store, due, out)

    def _fire(self, store: StateStore, due: list[list[Any]], out: EngineOutput) -> None:
        """Fire timers in deadline order, ties by customer id then rule id."""
        due.sort()
        for deadline, cid, rule_id, key in due:
            rule = self.rules.get(rule_id)
            if rule is None or rule.kind != "absence":
                continue  # a timer of a rule no longer in the pack
            skey = CUSTOMER_PREFIX + cid
            state = store.get(skey)
            if state is None:
                continue
            step = Step(self, store, out, cid, state)
            _ABSENCE.on_timer(step, rule, key, deadline)
            step.decide_all()
            store.set(skey, state)

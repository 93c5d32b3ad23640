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
   customer_since, products held: from any event naming one until an
   account_closed for it, relationship ledger) and hand the event to every
   rule listening to its type. Each rule kind (small classes below, one
   `on_event` each) turns the event into zero or one candidate action.
3. Arbitration (revision 2): the candidates of one event or one timer are
   decided highest priority first, ties by rule id. Checks, in order:
   already raised (a `first` key consumed before) / already waiting (the same
   rule and key deferred and still queued), cool-down (per customer and rule,
   per key where the rule has one, from the last action that fired or was held
   out: |t - last| < cool-down), held out (engagement rules only: a rule's own
   holdout or the default, hash of customer and rule < percent; it starts the
   cool-down and consumes a first key but sends nothing), contact cap
   (engagement rules only: fired engagement actions with triggered_at in
   (t - 24 h, t]). A capped candidate is *deferred* into the customer's queue
   (`dq`) with its reason, details, due_by and action id; one queue timer per
   customer fires it when the cap frees (highest priority, then the earlier
   candidate, then rule id; triggered_at = that moment) or expires it at its
   due_by / defer_for (an expiry equal to the freeing moment still fires).
   Before `emit_from` (history warm-up) a candidate that would fire or be held
   out only builds that state and is traced `warm_up`. Every candidate yields
   one Decision (a deferred one a second when it fires or expires); fired and
   deferred ones carry the action id, blocked ones `blocked_by`.
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
from heapq import heapify, heappop, heappush
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

#: The event that ends a customer's holding of the product it names (any other event naming a
#: product starts one): details.products lists what the customer holds.
PRODUCT_CLOSED: Final = "account_closed"

#: The rule id of a customer's deferred-candidate timer in the partition's timer index (it
#: sorts before every rule id, so at one deadline a customer's queue is served first).
QUEUE_TIMER: Final = ""

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
    "account_closed": "an account closure",
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


def future_cap(occurred_at: int, record_ms: int, skew_ms: int) -> int | None:
    """The future-dated guard (DESIGN.md section 3): an event dated more than `skew_ms`
    after the timestamp of the record that carried it may move its partition's watermark
    only as far as `record_ms + skew_ms`. That cap for `Engine.process`, or None when the
    event is within the skew (no cap needed)."""
    cap = record_ms + skew_ms
    return cap if occurred_at > cap else None


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
#: Where an absence timer set before a pack switch keeps the version that set it.
_TIMER_VERSION: Final = 4
#: Rule state a changed rule keeps at a switch: cool-downs (and their causes), first keys (and
#: the actions that used them), pending absence timers and recent resolutions.
_KEPT_AT_SWITCH: Final = frozenset({"cd", "cb", "k", "ka", "p", "d"})
#: Partition key recording the last pack switch: {"at", "watermark", "versions"}.
PACK_KEY: Final = "p:pack"


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
    blocked_by: str | None = None  # with `suppress`: the action that caused it, if known


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

    The key is consumed (`k`, with the consuming action's id in `ka`) when the
    candidate fires, is deferred or is held out (see `Step.decide`), never by a
    candidate that was suppressed. Later occurrences of a consumed key are
    candidates suppressed as `already_raised`, so the trace answers "why no
    explanation for the second bill?".
    """

    name = "first"

    def on_event(self, step: Step, rule: Rule, role: str, event: InteractionEvent) -> None:
        key = _key(rule.key_field, event)
        rs = step.rule_state(rule.id)
        seen: list[str] | None = rs.get("k")
        if seen is None or key not in seen:
            cand = Candidate(rule, event.occurred_at, [event.event_id], key, event, _NO_CONTEXT)
        else:
            consumers: dict[str, str] | None = rs.get("ka") if step.engine.decisions else None
            cand = Candidate(
                rule,
                event.occurred_at,
                [event.event_id],
                key,
                event,
                _NO_CONTEXT,
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
        a_t, a_id, a_type = timer[1], timer[2], timer[3]
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


def _queue_order(entry: list[Any]) -> tuple[int, int, str]:
    """Which waiting candidate fires first: highest priority, then the earlier, then rule id."""
    return -entry[1], entry[0], entry[2]


def _expiry_order(entry: list[Any]) -> tuple[int, str, int]:
    return entry[7], entry[2], entry[0]


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
        try:  # the usual case, and free of charge when nothing is raised
            return self.state["r"][rule_id]  # type: ignore[no-any-return]
        except KeyError:
            pass
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
        """One candidate -> one Decision (and an action when it fires).

        Checks in order (DESIGN.md 5): already raised / already waiting, cool-down, held
        out (engagement only), contact cap (engagement only: deferred), fired. A warm-up
        candidate (before `emit_from`) goes through the same checks but, where it would
        have fired or been held out, only builds that state and is traced `warm_up`.
        True if it fired (or, warming up, would have): the caller then updates the ledger
        rules.
        """
        rule = cand.rule
        engine = self.engine
        rt = engine.runtime[rule.id]
        if rt.rule is not rule:  # a timer set by an earlier version fires under that version
            rt = engine.retired[(rule.id, rule.version)]
        config = engine.config
        state = self.state
        cid = self.customer_id
        at = cand.at
        key = cand.key
        cool_down_ms = rt.cool_down_ms
        cool: dict[str, int] | None = None
        blocked_by: str | None = None
        would = ""  # warming up: what the candidate would have been
        if cool_down_ms is not None:
            rs = self.rule_state(rule.id)
            cool = rs.get("cd")
        if cand.suppress is not None:
            outcome = "suppressed"
            reason = cand.suppress
            blocked_by = cand.blocked_by
        else:
            outcome = reason = "fired"
            if rt.engagement and "dq" in state:
                for waiting in state["dq"]:
                    if waiting[2] == rule.id and waiting[3] == key:
                        outcome, reason, blocked_by = "suppressed", "already_waiting", waiting[4]
                        break
            if (
                outcome == "fired"
                and cool is not None
                and key in cool
                and abs(at - cool[key]) < cool_down_ms  # type: ignore[operator]
            ):
                outcome, reason = "suppressed", "cool_down"
                if engine.decisions:
                    blocked_by = rs.get("cb", _NO_CONTEXT).get(key)
            if outcome == "fired":
                if rt.holdout > 0 and in_holdout(cid, rule.id, rt.holdout):
                    outcome = reason = "held_out"
                if rt.warm_up and at < config.emit_from_ms:  # type: ignore[operator]
                    would = outcome
                    outcome, reason = "suppressed", "warm_up"
                elif outcome == "fired" and rt.engagement:
                    holder = self.cap_holder(at)
                    if holder is not None:
                        outcome, reason, blocked_by = "deferred", "contact_cap", holder or None
        engine.decided += 1
        evidence = cand.evidence
        if outcome == "suppressed" and not would:  # nothing to build but the trace
            if engine.decisions:
                tail = "\x1f" + "\x1f".join(evidence) if evidence else ""
                prefix = rt.decision_prefix
                self.trace(
                    rule.id,
                    rule.version,
                    prefix,
                    outcome,
                    reason,
                    None,
                    evidence,
                    at,
                    blocked_by,
                    tail,
                )
            return False
        effective = would or outcome
        # ids hash "\x1f"-joined parts; the evidence tail is shared by both ids
        if len(evidence) == 1:  # the usual case: one event made the rule fire
            tail = "\x1f" + evidence[0]
        else:
            tail = "\x1f" + "\x1f".join(evidence) if evidence else ""
        action_id = (
            None
            if effective == "held_out"
            else _sha256(f"{rt.action_prefix}{cid}{tail}".encode()).digest()[:16].hex()
        )
        # what later blocked candidates name: an action that was emitted (not a warm-up one)
        cause = None if would else action_id
        if cool_down_ms is not None and effective != "deferred":
            # held_out starts the cool-down too, so the control group keeps the same cadence
            self.start_cool_down(rs, cool, key, at, cause, cool_down_ms)
        if rule.kind == "first":
            self.consume_key(rule.id, key, cause)
        if engine.decisions:
            action = None if would else action_id
            prefix = rt.decision_prefix
            self.trace(
                rule.id,
                rule.version,
                prefix,
                outcome,
                reason,
                action,
                evidence,
                at,
                blocked_by,
                tail,
            )
        if action_id is None:
            return False
        if would:
            if rt.ledger_sign:
                self.record_action(rt, at, action_id)
            return True
        positives, negatives = engine.tally(state, at) if "led" in state else (0, 0)
        balance = positives - negatives
        if outcome == "deferred":
            self.defer(rt, cand, action_id, (balance, positives, negatives))
            return False
        if rt.engagement:
            self.hold_slot(at, action_id)
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

    def record_action(self, rt: _RuleRuntime, at: int, action_id: str) -> None:
        """A fired action of a positive or negative rule goes into the customer's ledger."""
        engine = self.engine
        _record(
            self.state,
            self.newest,
            engine.config.allowed_lateness_ms,
            engine._ledger_window,
            at,
            rt.ledger_sign,
            action_id,
            0,
        )

    def start_cool_down(
        self,
        rs: dict[str, Any],
        cool: dict[str, int] | None,
        key: str,
        at: int,
        action_id: str | None,
        cool_down_ms: int,
    ) -> None:
        """(Re)start the rule's cool-down for `key` at `at`; `cb` remembers the action."""
        if cool is None:
            cool = rs["cd"] = {}
        if key not in cool or cool[key] < at:
            cool[key] = at
            causes: dict[str, str] | None = rs.get("cb")
            if action_id is not None:
                if causes is None:
                    rs["cb"] = {key: action_id}
                else:
                    causes[key] = action_id
            elif causes is not None:
                causes.pop(key, None)
        if len(cool) > 1:  # per-key cool-downs: forget keys whose cool-down is over
            horizon = self.newest - cool_down_ms - self.engine.config.allowed_lateness_ms
            causes = rs.get("cb")
            for k in [k for k, last in cool.items() if last < horizon]:
                del cool[k]
                if causes is not None:
                    causes.pop(k, None)

    def consume_key(self, rule_id: str, key: str, action_id: str | None) -> None:
        """A `first` rule's key is used up (fired, deferred or held out)."""
        rs = self.rule_state(rule_id)
        seen: list[str] | None = rs.get("k")
        if seen is None:
            rs["k"] = [key]
        elif key not in seen:
            insort(seen, key)
        if action_id is not None:
            consumers: dict[str, str] | None = rs.get("ka")
            if consumers is None:
                rs["ka"] = {key: action_id}
            else:
                consumers[key] = action_id

    # -- the contact cap and the deferred candidates --------------------------------------

    def slots(self) -> list[list[Any]]:
        """The fired engagement actions [[triggered_at, action_id]] (old state: bare times)."""
        contacts: list[Any] | None = self.state.get("cap")
        if contacts is None:
            contacts = self.state["cap"] = []
        elif contacts and type(contacts[0]) is int:
            contacts = self.state["cap"] = [[f, ""] for f in contacts]
        return contacts

    def cap_holder(self, at: int) -> str | None:
        """None when the cap has room at `at`; else the action id of the oldest counted action
        ("" when the state predates action ids). The cap counts triggered_at in (at - W, at]."""
        contacts = self.state.get("cap")
        if not contacts:
            return None
        if type(contacts[0]) is int:
            contacts = self.slots()
        config = self.engine.config
        lo = at - config.contact_cap_window_ms
        count = 0
        holder: str | None = None
        for f, action_id in contacts:
            if lo < f <= at:
                count += 1
                if holder is None:
                    holder = action_id
        return holder if count >= config.contact_cap else None

    def hold_slot(self, at: int, action_id: str) -> None:
        """A fired engagement action holds a slot of the cap from `at` for the window."""
        contacts = self.slots()
        insort(contacts, [at, action_id])
        config = self.engine.config
        horizon = self.newest - config.contact_cap_window_ms - config.allowed_lateness_ms
        if contacts[0][0] < horizon:
            cut = 0
            for entry in contacts:
                if entry[0] >= horizon:
                    break
                cut += 1
            del contacts[:cut]

    def next_free(self, now: int) -> int | None:
        """The first moment after `now` the cap has room: when a counted action leaves it."""
        config = self.engine.config
        window = config.contact_cap_window_ms
        times = [entry[0] for entry in self.slots()]
        for moment in sorted({f + window for f in times if f + window > now}):
            held = sum(1 for f in times if moment - window < f <= moment)
            if held < config.contact_cap:
                return moment
        return None

    def defer(
        self, rt: _RuleRuntime, cand: Candidate, action_id: str, ledger: tuple[int, int, int]
    ) -> None:
        """Queue a candidate the cap blocked; it keeps its reason, details, due_by and id.

        An entry is [at, priority, rule, key, action_id, evidence, due_by, expires,
        rule_version, reason, details]; it expires at its due_by, else after `defer_for`.
        """
        rule = cand.rule
        due_by = cand.at + rule.due_by_ms if rule.due_by_ms is not None else None
        expires = due_by if due_by is not None else cand.at + rule.defer_for_ms
        entry = [
            cand.at,
            rule.priority,
            rule.id,
            cand.key,
            action_id,
            list(cand.evidence),
            due_by,
            expires,
            rule.version,
            self.render(rt, cand, ledger[0]),
            self.details(rt, cand, ledger),
        ]
        queue: list[list[Any]] | None = self.state.get("dq")
        if queue is None:
            self.state["dq"] = [entry]
        else:
            queue.append(entry)
        self.schedule_queue(cand.at)

    def schedule_queue(self, now: int) -> None:
        """Keep one timer per customer with waiting candidates: the cap frees or one expires."""
        state = self.state
        queue: list[list[Any]] = state["dq"]
        deadline = min(entry[7] for entry in queue)
        free = self.next_free(now)
        if free is not None and free < deadline:
            deadline = free
        scheduled = state.get("dqt")
        if scheduled == deadline:
            return
        if scheduled is not None:
            self.engine.cancel_timer(self.store, scheduled, self.customer_id, QUEUE_TIMER, "")
        state["dqt"] = deadline
        self.schedule(deadline, QUEUE_TIMER, "")

    def serve_queue(self, now: int) -> None:
        """The customer's queue timer at `now`: fire waiting candidates while the cap has room
        (highest priority, then the earlier candidate, then rule id), expire the rest whose
        time is up (an expiry equal to `now` still fires), and set the next timer."""
        state = self.state
        state.pop("dqt", None)
        queue: list[list[Any]] | None = state.get("dq")
        if not queue:
            state.pop("dq", None)
            return
        for entry in sorted((e for e in queue if e[7] < now), key=_expiry_order):
            queue.remove(entry)
            self.expire(entry)
        while queue and self.cap_holder(now) is None:
            entry = min(queue, key=_queue_order)
            queue.remove(entry)
            self.fire_deferred(entry, now)
        for entry in sorted((e for e in queue if e[7] <= now), key=_expiry_order):
            queue.remove(entry)
            self.expire(entry)
        if queue:
            self.schedule_queue(now)
        else:
            del state["dq"]

    def trace(
        self,
        rule_id: str,
        version: int,
        decision_prefix: str,
        outcome: str,
        reason: str,
        action_id: str | None,
        evidence: list[str],
        at: int,
        blocked_by: str | None,
        tail: str,
    ) -> None:
        """Append a candidate's Decision. Its id hashes `decision_prefix` ("decision", the
        rule id), the customer, reason, time (the same evidence can be decided again later)
        and `tail` (the evidence, each part after a "\\x1f")."""
        cid = self.customer_id
        self.out.decisions.append(
            Decision(  # positional: the field order of decision.avsc
                _sha256(f"{decision_prefix}{cid}\x1f{reason}\x1f{at}{tail}".encode())
                .digest()[:16]
                .hex(),
                cid,
                rule_id,
                version,
                outcome,
                reason,
                action_id,
                evidence,
                at,
                blocked_by,
            )
        )

    def _trace(
        self,
        rule_id: str,
        version: int,
        outcome: str,
        reason: str,
        action_id: str | None,
        evidence: list[str],
        at: int,
    ) -> None:
        """The Decision of a deferred candidate that finally fires or expires."""
        engine = self.engine
        engine.decided += 1
        if not engine.decisions:
            return
        tail = "\x1f" + "\x1f".join(evidence) if evidence else ""
        prefix = f"decision\x1f{rule_id}\x1f"
        self.trace(
            rule_id, version, prefix, outcome, reason, action_id, list(evidence), at, None, tail
        )

    def expire(self, entry: list[Any]) -> None:
        """A deferred candidate whose time ran out before the cap freed: suppressed, expired."""
        _, _, rule_id, _, _, evidence, _, expires, version, _, _ = entry
        self._trace(rule_id, version, "suppressed", "expired", None, evidence, expires)

    def fire_deferred(self, entry: list[Any], now: int) -> None:
        """A deferred candidate fires when the cap frees: triggered_at = now, with its original
        due_by, evidence, reason and action_id; it holds a slot and starts its cool-down."""
        _, _, rule_id, key, action_id, evidence, due_by, _, version, reason, details = entry
        engine = self.engine
        rt_now = engine.runtime.get(rule_id)
        if rt_now is None:  # the rule left the pack while its candidate waited
            self._trace(rule_id, version, "suppressed", "rule_removed", None, evidence, now)
            return
        # a candidate deferred under an earlier version fires under that version
        rt = rt_now if rt_now.rule.version == version else engine.retired.get((rule_id, version))
        if rt is None:
            rt = rt_now
        rule = rt.rule
        self._trace(rule_id, version, "fired", "fired", action_id, evidence, now)
        self.hold_slot(now, action_id)
        if rt.cool_down_ms is not None:
            rs = self.rule_state(rule_id)
            self.start_cool_down(rs, rs.get("cd"), key, now, action_id, rt.cool_down_ms)
        state = self.state
        details = dict(details)
        positives, negatives = engine.tally(state, now) if "led" in state else (0, 0)
        details["relationship_balance"] = str(positives - negatives)
        details["relationship_positives"] = str(positives)
        details["relationship_negatives"] = str(negatives)
        self.out.actions.append(
            ActionEvent(
                action_id,
                self.customer_id,
                rule_id,
                rule.action,
                version,
                rule.destination,
                rule.priority,
                reason,
                list(evidence),
                state.get("ch") or "other",
                now,
                due_by,
                dict(sorted(details.items())),
            )
        )
        if rt.ledger_sign:
            self.record_action(rt, now, action_id)
            if rt.ledger_sign < 0:
                for ledger_rule in engine.ledger_rules:
                    _RELATIONSHIP.evaluate(self, ledger_rule, now, None)

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


def _hold_product(state: dict[str, Any], products: list[str] | None, product: str, t: int) -> None:
    """The customer holds `product` from `t` (unless it was closed at or after `t`: `pc` keeps
    the closing times, so an older event arriving late does not reopen a closed product)."""
    closed: dict[str, int] | None = state.get("pc")
    if closed is not None and closed.get(product, t - 1) >= t:
        return
    if products is None:
        state["prod"] = [product]
    else:
        insort(products, product)


def _close_product(state: dict[str, Any], products: list[str] | None, product: str, t: int) -> None:
    """An account_closed for `product` at `t`: the customer no longer holds it."""
    if products is not None and product in products:
        products.remove(product)
    closed: dict[str, int] | None = state.get("pc")
    if closed is None:
        state["pc"] = {product: t}
    elif closed.get(product, t) <= t:
        closed[product] = t


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
        "holdout",
        "ledger_sign",
        "placeholders",
        "reason_parts",
        "reason_tail",
        "rule",
        "warm_up",
    )

    def __init__(self, rule: Rule, relationship: Any, config: EngineConfig) -> None:
        self.rule = rule
        # Control groups are for engagement rules only: a service rule is never held out.
        holdout = rule.holdout_percent
        self.holdout = (
            0.0
            if rule.rule_class != "engagement"
            else (config.holdout_percent if holdout is None else holdout)
        )
        self.warm_up = config.emit_from_ms is not None
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
        #: (rule id, version) -> runtime of a version an earlier pack had (`switch_pack`): its
        #: timers and deferred candidates still fire under it.
        self.retired: dict[tuple[str, int], _RuleRuntime] = {}
        #: Pack switches so far, (changed rule ids, removed or added rule ids) each: a
        #: customer's state is brought up to date (`migrate`) when it is next touched.
        self.migrations: list[tuple[frozenset[str], frozenset[str]]] = []
        #: How many switches this engine's pack is from the first (state key "pe").
        self.epoch = 0
        self.runtime = {
            rule.id: _RuleRuntime(rule, pack.relationship, self.config) for rule in pack.rules
        }
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
        #: event type -> (listeners, ledger sign, closes a product): what an event of the type
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
            plan = (listeners, self._signs.get(event_type, 0), event_type == PRODUCT_CLOSED)
            if len(self._by_type) < 10_000:  # unknown types must not grow the cache forever
                self._by_type[event_type] = plan
        return plan

    # -- public API -----------------------------------------------------------------------

    def process(
        self, store: StateStore, event: InteractionEvent, watermark_cap: int | None = None
    ) -> EngineOutput:
        """Apply one event of this partition: advance the watermark, fire due timers, apply.

        `watermark_cap` (the future-dated guard, see `future_cap`): the event moves the
        partition's clock at most as far as an event at that time would; it is applied
        with its own time all the same.
        """
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
        ct = t if watermark_cap is None or t <= watermark_cap else watermark_cap  # clock time
        clock = get(CLOCK_KEY)
        if clock is None:
            clock = {"max": ct, "wm": ct - self._lateness_ms}
            put(CLOCK_KEY, clock)
        elif ct > clock["max"]:
            clock["max"] = ct
            watermark = ct - self._lateness_ms
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
        listeners, sign, closes = plan
        fresh = state is None
        if state is None:
            state = {"seen": {event_id: t}, "t": t, "ch": event.channel, "so": t}
            if self.epoch:
                state["pe"] = self.epoch
            newest = t
        else:
            if self.epoch and state.get("pe", 0) != self.epoch:
                self.migrate(state)
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
        if product:
            # Holdings: from any event naming the product until an account_closed for it.
            products: list[str] | None = state.get("prod")
            if closes:
                _close_product(state, products, product, t)
            elif products is None or product not in products:
                _hold_product(state, products, product, t)
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

    def switch_pack(
        self, stores: Iterable[StateStore], pack: RulePack, at: int
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
        from processors.engine.lifecycle import compare_packs

        changes = compare_packs(self.pack, pack)
        engine = Engine(pack, self.config, decisions=self.decisions)
        engine.decided = self.decided
        engine.retired = dict(self.retired)
        dropped = frozenset(changes.removed) | frozenset(changes.added)
        engine.migrations = [*self.migrations, (frozenset(changes.changed), dropped)]
        engine.epoch = len(engine.migrations)
        for rule_id in changes.changed:
            old_rt = self.runtime[rule_id]
            engine.retired[(rule_id, old_rt.rule.version)] = old_rt
        out = EngineOutput([], [])
        removed = set(changes.removed)
        cancelled = {rid for rid in changes.changed if engine.rules[rid].pending == "cancel"}
        changed = set(changes.changed)
        versions = {rule.id: rule.version for rule in pack.rules}
        for store in stores:
            engine._switch_store(store, self, removed, cancelled, changed, at, out)
            store.set(
                PACK_KEY, {"at": at, "watermark": self.watermark(store), "versions": versions}
            )
        self.decided = engine.decided
        return engine, out

    def _switch_store(
        self,
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
            step = Step(self, store, out, cid, state)
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
                    self.cancel_timer(store, deadline, cid, QUEUE_TIMER, "")
            elif rule_id in removed or rule_id in cancelled or rule_id in changed:
                rs = state.get("r", _NO_CONTEXT).get(rule_id)
                pending = None if rs is None else rs.get("p")
                timer = None if pending is None else pending.get(key)
                if timer is None or timer[0] != deadline:
                    continue
                if rule_id in changed and rule_id not in cancelled:
                    if len(timer) <= _TIMER_VERSION:  # remember the version that set it
                        timer.append(previous.rules[rule_id].version)
                else:
                    assert pending is not None
                    del pending[key]
                    self.cancel_timer(store, deadline, cid, rule_id, key)
                    version = (
                        timer[_TIMER_VERSION]
                        if len(timer) > _TIMER_VERSION
                        else previous.rules[rule_id].version
                    )
                    reason = "rule_removed" if rule_id in removed else "rule_changed"
                    step._trace(rule_id, version, "suppressed", reason, None, [timer[2]], at)
            else:
                continue
            store.set(skey, state)
        for skey in sorted(visited):  # after their timers were handled under the old state
            state = store.get(skey)
            if state is not None and state.get("pe", 0) != self.epoch:
                self.migrate(state)
                store.set(skey, state)

    def migrate(self, state: dict[str, Any]) -> None:
        """Bring one customer's state through the switches it has not seen (DESIGN.md 8): a
        changed rule keeps its cool-downs, first keys and pending timers and forgets the rest
        (windows, remembered first events); a removed rule's state goes, and so does any old
        state of a rule that is new in the pack, which starts empty."""
        rules: dict[str, dict[str, Any]] | None = state.get("r")
        if rules:
            for changed, dropped in self.migrations[state.get("pe", 0) :]:
                for rule_id in dropped:
                    rules.pop(rule_id, None)
                for rule_id in changed:
                    rs = rules.get(rule_id)
                    if rs:
                        for name in [name for name in rs if name not in _KEPT_AT_SWITCH]:
                            del rs[name]
        state["pe"] = self.epoch

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
        """Fire timers in deadline order, ties by customer id then rule id (a customer's queue
        timer first). Timers set while these fire (a freed cap, a deferral) that are already
        due fire in the same call, in deadline order."""
        heapify(due)
        while due:
            deadline, cid, rule_id, key = heappop(due)
            skey = CUSTOMER_PREFIX + cid
            if rule_id == QUEUE_TIMER:
                state = store.get(skey)
                if state is None or state.get("dqt") != deadline:
                    continue  # moved since it was set
                if self.epoch and state.get("pe", 0) != self.epoch:
                    self.migrate(state)
                step = Step(self, store, out, cid, state)
                step.serve_queue(deadline)
            else:
                state = store.get(skey)
                if state is None:
                    continue
                if self.epoch and state.get("pe", 0) != self.epoch:
                    self.migrate(state)
                rule = self.rules.get(rule_id)
                timer = state.get("r", _NO_CONTEXT).get(rule_id, _NO_CONTEXT).get("p", {}).get(key)
                if timer is not None and len(timer) > _TIMER_VERSION:
                    # set before a switch by an earlier version: it fires under that version
                    # (under the current one if this engine does not know it: never lost)
                    retired = self.retired.get((rule_id, timer[_TIMER_VERSION]))
                    if retired is not None:
                        rule = retired.rule
                if rule is None or rule.kind != "absence":
                    continue  # a timer of a rule no longer in the pack
                step = Step(self, store, out, cid, state)
                _ABSENCE.on_timer(step, rule, key, deadline)
            step.decide_all()
            store.set(skey, state)
            if step.due_now:
                for entry in step.due_now:
                    heappush(due, entry)

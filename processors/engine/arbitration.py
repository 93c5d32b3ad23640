"""Arbitration: one step of the engine on one customer, from candidates to decisions.

`Step` holds one customer's state for one `Engine.process` / timer call; the rule
kinds (kinds.py) add candidates to it, and `decide_all` decides them, highest priority
first, ties by rule id. Checks, in order (docs/design.md 5.5): already raised / already
waiting, cool-down, held out (engagement only), contact cap (engagement only: the
candidate is deferred into the customer's queue `dq`, served by one queue timer when
the cap frees or a candidate expires), fired. Before `emit_from` a candidate that would
fire or be held out only builds that state (`warm_up`). Every candidate yields one
Decision; a deferred one a second when it fires or expires. Pure: the state keys it
reads and writes are listed in state.py.
"""

from __future__ import annotations

from bisect import insort
from typing import TYPE_CHECKING, Any, Final

from processors.engine.actions import named_owner, open_action
from processors.engine.candidates import NO_CONTEXT, Candidate, key_of
from processors.engine.cases import CASE, closing_after, note_follow_up, open_case_at
from processors.engine.customer import channel_hint, opted_out
from processors.engine.decisions import (
    ALREADY_WAITING,
    CONTACT_CAP,
    COOL_DOWN,
    DEFERRED,
    EXPIRED,
    FIRED,
    HELD_OUT,
    NOTHING_TO_UPDATE,
    OPEN_CASE,
    OPTED_OUT,
    OWNED,
    RULE_REMOVED,
    SUPERSEDED,
    SUPPRESSED,
    WARM_UP,
)
from processors.engine.ids import in_holdout, sha256
from processors.engine.interfaces import EngineOutput, StateStore
from processors.engine.kinds import CONSUMED, CONSUMED_BY
from processors.engine.rendering import details, render
from processors.engine.rule_model import Rule
from processors.engine.state import (
    CAP,
    CASES,
    CONSENT,
    COOL_DOWN_CAUSES,
    COOL_DOWNS,
    LATEST,
    LEDGER,
    NEWEST,
    OWNER_ACTION,
    OWNER_AT,
    OWNER_DESTINATION,
    OWNER_PRIORITY,
    OWNER_UNTIL,
    OWNERS,
    PRODUCTS,
    RULES,
    SLOT_AT,
    WAITING,
    WAITING_ACTION,
    WAITING_AT,
    WAITING_EXPIRES,
    WAITING_KEY,
    WAITING_PRIORITY,
    WAITING_RULE,
    WAITING_TIMER,
)
from schemas.records import ActionEvent, Decision, InteractionEvent

if TYPE_CHECKING:
    from processors.engine.core import Engine
    from processors.engine.runtime import RuleRuntime

#: The rule id of a customer's deferred-candidate timer in the partition's timer index (it
#: sorts before every rule id, so at one deadline a customer's queue is served first).
QUEUE_TIMER: Final = ""
#: The rule id of a held event's timer (key: the event id): the engagement rules see the
#: event once the watermark passes it (docs/design.md 11.1). It sorts after the queue timer
#: and before every rule id.
HOLD_TIMER: Final = "\x01hold"


def _by_priority(cand: Candidate) -> tuple[int, str]:
    return -cand.rule.priority, cand.rule.id


def _queue_order(entry: list[Any]) -> tuple[int, int, str]:
    """Which waiting candidate fires first: highest priority, then the earlier, then rule id."""
    return -entry[WAITING_PRIORITY], entry[WAITING_AT], entry[WAITING_RULE]


def _expiry_order(entry: list[Any]) -> tuple[int, str, int]:
    return entry[WAITING_EXPIRES], entry[WAITING_RULE], entry[WAITING_AT]


class Step:
    """The work on one customer's state within one process()/advance() call."""

    __slots__ = (
        "candidates",
        "case_key",
        "customer_id",
        "due_now",
        "engine",
        "newest",
        "out",
        "state",
        "store",
    )

    engine: Engine
    store: StateStore
    out: EngineOutput
    customer_id: str
    state: dict[str, Any]

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
        self.newest: int = state.get(NEWEST, 0)
        self.candidates: list[Candidate] = []
        self.due_now: list[list[Any]] | None = None  # timers already due (late events)
        self.case_key = ""  # the key of the case the event opened, repeated or closed

    def key(self, source: str | None, event: InteractionEvent) -> str:
        """The event's value of a rule's key or correlation (`case`: its case's key)."""
        if source == CASE:
            return self.case_key
        return key_of(source, event)

    def rule_state(self, rule_id: str) -> dict[str, Any]:
        # lookups, not try/except: a compiled function pays dearly for every raised KeyError
        rules: dict[str, dict[str, Any]] | None = self.state.get(RULES)
        if rules is None:
            rules = self.state[RULES] = {}
        rs = rules.get(rule_id)
        if rs is None:
            rs = rules[rule_id] = {}
        return rs

    def day(self, ms: int) -> str:
        """The date of a time as reasons write it (the engine's time zone)."""
        return self.engine.day(ms)

    def prune(self, entries: list[list[Any]], window_ms: int) -> None:
        """Drop time-sorted entries (each a list, time first) no event (allowing for lateness)
        can still need."""
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
        while self.candidates:
            batch = self.candidates
            if len(batch) > 1:
                batch.sort(key=_by_priority)
            self.candidates = []
            for cand in batch:
                self.decide(cand)

    def decide(self, cand: Candidate) -> bool:
        """One candidate -> one Decision (and an action when it fires).

        Checks in order (docs/design.md 5.5): already raised / already waiting, cool-down, held
        out (engagement only), contact cap (engagement only: deferred), fired. A warm-up
        candidate (before `emit_from`) goes through the same checks but, where it would
        have fired or been held out, only builds that state and is traced `warm_up`.
        True if it fired (or, warming up, would have): the caller then updates the ledger
        rules.
        """
        rule = cand.rule
        engine = self.engine
        rule_id = rule.id
        rt = engine.runtime[rule_id]
        if rt.rule is not rule:  # a timer set by an earlier version fires under that version
            rt = engine.retired[(rule_id, rule.version)]
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
            rs = self.rule_state(rule_id)
            cool = rs.get(COOL_DOWNS)
        if cand.suppress is None and rt.needs_products and not state.get(PRODUCTS):
            cand.suppress = NOTHING_TO_UPDATE
        if cand.suppress is None and rt.latest_only:
            newer = self.newer_change(rule_id, key, at)
            if newer is not None:
                cand.suppress, cand.blocked_by = SUPERSEDED, newer or None
        if cand.suppress is not None:
            outcome = SUPPRESSED
            reason = cand.suppress
            blocked_by = cand.blocked_by
        else:
            outcome = reason = FIRED
            if rt.engagement and WAITING in state:
                for waiting in state[WAITING]:
                    if waiting[WAITING_RULE] == rule_id and waiting[WAITING_KEY] == key:
                        outcome, reason = SUPPRESSED, ALREADY_WAITING
                        blocked_by = waiting[WAITING_ACTION]
                        break
            if outcome == FIRED and OWNERS in state:
                owner = self.owner_at(rt, at)
                if owner is not None:
                    outcome, reason, blocked_by = SUPPRESSED, OWNED, owner
            if (
                outcome == FIRED
                and cool is not None
                and key in cool
                and abs(at - cool[key]) < cool_down_ms  # type: ignore[operator]
            ):
                outcome, reason = SUPPRESSED, COOL_DOWN
                if engine.decisions:
                    blocked_by = rs.get(COOL_DOWN_CAUSES, NO_CONTEXT).get(key)
            if outcome == FIRED and rt.engagement and CONSENT in state and opted_out(state, at):
                outcome, reason = SUPPRESSED, OPTED_OUT
            if outcome == FIRED:
                if rt.holdout > 0 and in_holdout(cid, rule_id, rt.holdout):
                    outcome = reason = HELD_OUT
                if rt.warm_up and at < config.emit_from_ms:  # type: ignore[operator]
                    would = outcome
                    outcome, reason = SUPPRESSED, WARM_UP
                elif outcome == FIRED and rt.engagement:
                    case = open_case_at(state, at) if CASES in state else None
                    if case is not None:
                        outcome, reason, blocked_by = DEFERRED, OPEN_CASE, case or None
                    else:
                        holder = self.cap_holder(at)
                        if holder is not None:
                            outcome, reason, blocked_by = DEFERRED, CONTACT_CAP, holder or None
        engine.decided += 1
        evidence = cand.evidence
        if outcome == SUPPRESSED and not would:  # nothing to build but the trace
            if engine.decisions:
                tail = "\x1f" + "\x1f".join(evidence) if evidence else ""
                prefix = rt.decision_prefix
                self.trace(
                    rule_id,
                    rt.version,
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
            if effective == HELD_OUT
            else sha256(f"{rt.action_prefix}{cid}{tail}".encode()).digest()[:16].hex()
        )
        # what later blocked candidates name: an action that was emitted (not a warm-up one)
        cause = None if would else action_id
        if cool_down_ms is not None and effective != DEFERRED:
            # held_out starts the cool-down too, so the control group keeps the same cadence
            self.start_cool_down(rs, cool, key, at, cause, cool_down_ms)
        if rt.first:
            self.consume_key(rule_id, key, cause)
        if rt.latest_only and effective != DEFERRED:
            self.note_change(rule_id, key, at, cause)
        if engine.decisions:
            action = None if would else action_id
            prefix = rt.decision_prefix
            self.trace(
                rule_id,
                rt.version,
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
            return True
        positives, negatives = engine.tally(state, at) if LEDGER in state else (0, 0)
        balance = positives - negatives
        if outcome == DEFERRED:
            self.defer(rt, cand, action_id, (balance, positives, negatives))
            return False
        if rt.engagement:
            self.hold_slot(at, action_id)
        if rt.case_keyed:
            note_follow_up(state, key, action_id)
        if rt.owner:
            self.take_ownership(rt, at, action_id)
        due_by = (
            engine.deadline(rt.destination, at, rt.due_by_ms) if rt.due_by_ms is not None else None
        )
        action_details = details(self, rt, cand, (balance, positives, negatives))
        if OWNERS in state:
            owner = named_owner(state, rt.destination, at)
            if owner is not None:
                action_details["owner"] = owner
                action_details = dict(sorted(action_details.items()))
        self.out.actions.append(
            # positional: the field order of action_event.avsc
            ActionEvent(
                action_id,
                cid,
                rule_id,
                rt.action,
                rt.version,
                rt.destination,
                rt.priority,
                render(self, rt, cand, balance),
                list(evidence) if engine.decisions else evidence,  # not shared with a Decision
                channel_hint(state, at),
                at,
                due_by,
                action_details,
            )
        )
        open_action(self, action_id, rule_id, rt.destination, at, due_by)
        return True

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
            cool = rs[COOL_DOWNS] = {}
        if key not in cool or cool[key] < at:
            cool[key] = at
            causes: dict[str, str] | None = rs.get(COOL_DOWN_CAUSES)
            if action_id is not None:
                if causes is None:
                    rs[COOL_DOWN_CAUSES] = {key: action_id}
                else:
                    causes[key] = action_id
            elif causes is not None:
                causes.pop(key, None)
        if len(cool) > 1:  # per-key cool-downs: forget keys whose cool-down is over
            horizon = self.newest - cool_down_ms - self.engine.config.allowed_lateness_ms
            causes = rs.get(COOL_DOWN_CAUSES)
            for k in [k for k, last in cool.items() if last < horizon]:
                del cool[k]
                if causes is not None:
                    causes.pop(k, None)

    def consume_key(self, rule_id: str, key: str, action_id: str | None) -> None:
        """A `first` rule's key is used up (fired, deferred or held out)."""
        rs = self.rule_state(rule_id)
        seen: list[str] | None = rs.get(CONSUMED)
        if seen is None:
            rs[CONSUMED] = [key]
        elif key not in seen:
            insort(seen, key)
        if action_id is not None:
            consumers: dict[str, str] | None = rs.get(CONSUMED_BY)
            if consumers is None:
                rs[CONSUMED_BY] = {key: action_id}
            else:
                consumers[key] = action_id

    # -- the contact cap and the deferred candidates --------------------------------------

    def slots(self) -> list[list[Any]]:
        """The fired engagement actions [[triggered_at, action_id]] (state.py: `cap`)."""
        contacts: list[Any] | None = self.state.get(CAP)
        if contacts is None:
            contacts = self.state[CAP] = []
        return contacts

    def cap_holder(self, at: int) -> str | None:
        """None when the cap has room at `at`; else the action id of the oldest counted action
        ("" when the state predates action ids). The cap counts triggered_at in (at - W, at]."""
        contacts = self.state.get(CAP)
        if not contacts:
            return None
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
        self.prune(contacts, self.engine.config.contact_cap_window_ms)

    def next_free(self, now: int) -> int | None:
        """The first moment after `now` the cap has room: when a counted action leaves it."""
        config = self.engine.config
        window = config.contact_cap_window_ms
        times = [entry[SLOT_AT] for entry in self.slots()]
        for moment in sorted({f + window for f in times if f + window > now}):
            held = sum(1 for f in times if moment - window < f <= moment)
            if held < config.contact_cap:
                return moment
        return None

    def defer(
        self, rt: RuleRuntime, cand: Candidate, action_id: str, ledger: tuple[int, int, int]
    ) -> None:
        """Queue a candidate the cap blocked; it keeps its reason, details, due_by and id.

        An entry is [at, priority, rule, key, action_id, evidence, due_by, expires,
        rule_version, reason, details]; it expires at its due_by, else after `defer_for`.
        """
        rule = cand.rule
        due_by = (
            self.engine.deadline(rule.destination, cand.at, rule.due_by_ms)
            if rule.due_by_ms is not None
            else None
        )
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
            render(self, rt, cand, ledger[0]),
            details(self, rt, cand, ledger),
        ]
        queue: list[list[Any]] | None = self.state.get(WAITING)
        if queue is None:
            self.state[WAITING] = [entry]
        else:
            queue.append(entry)
        self.schedule_queue(cand.at)

    def schedule_queue(self, now: int) -> None:
        """Keep one timer per customer with waiting candidates: the cap frees or one expires."""
        state = self.state
        queue: list[list[Any]] = state[WAITING]
        deadline = min(entry[WAITING_EXPIRES] for entry in queue)
        free = self.next_free(now)
        if free is not None and free < deadline:
            deadline = free
        if CASES in state:  # the open cases' resolutions may have arrived already
            closes = closing_after(state, now)
            if closes is not None and closes < deadline:
                deadline = closes
        scheduled = state.get(WAITING_TIMER)
        if scheduled == deadline:
            return
        if scheduled is not None:
            self.engine.cancel_timer(self.store, scheduled, self.customer_id, QUEUE_TIMER, "")
        state[WAITING_TIMER] = deadline
        self.schedule(deadline, QUEUE_TIMER, "")

    def serve_queue(self, now: int) -> None:
        """The customer's queue timer at `now`: fire waiting candidates while the cap has room
        (highest priority, then the earlier candidate, then rule id), expire the rest whose
        time is up (an expiry equal to `now` still fires), and set the next timer."""
        state = self.state
        state.pop(WAITING_TIMER, None)
        queue: list[list[Any]] | None = state.get(WAITING)
        if not queue:
            state.pop(WAITING, None)
            return
        for entry in sorted((e for e in queue if e[WAITING_EXPIRES] < now), key=_expiry_order):
            queue.remove(entry)
            self.expire(entry)
        while queue and self.cap_holder(now) is None and open_case_at(state, now) is None:
            entry = min(queue, key=_queue_order)
            queue.remove(entry)
            self.fire_deferred(entry, now)
        for entry in sorted((e for e in queue if e[WAITING_EXPIRES] <= now), key=_expiry_order):
            queue.remove(entry)
            self.expire(entry)
        if queue:
            self.schedule_queue(now)
        else:
            del state[WAITING]

    def release_queue(self, now: int) -> None:
        """A case closed at `now`: the candidates waiting for it fire now (subject to the
        cap and any other open case), instead of at the queue timer."""
        state = self.state
        if WAITING not in state or open_case_at(state, now) is not None:
            return
        # a closing that arrives late never fires a candidate before the candidate's own time
        now = max(now, max(entry[WAITING_AT] for entry in state[WAITING]))
        scheduled = state.get(WAITING_TIMER)
        if scheduled is not None:
            self.engine.cancel_timer(self.store, scheduled, self.customer_id, QUEUE_TIMER, "")
        self.serve_queue(now)

    # -- owners and newer changes ---------------------------------------------------------

    def owner_at(self, rt: RuleRuntime, at: int) -> str | None:
        """The action of an owner holding the customer at `at` for the candidate's
        destination with a higher priority (it suppresses the candidate as `owned`)."""
        for owner in self.state[OWNERS]:
            if (
                owner[OWNER_DESTINATION] == rt.destination
                and owner[OWNER_PRIORITY] > rt.priority
                and owner[OWNER_AT] <= at < owner[OWNER_UNTIL]
            ):
                action: str = owner[OWNER_ACTION]
                return action
        return None

    def take_ownership(self, rt: RuleRuntime, at: int, action_id: str) -> None:
        """An owner rule's action fired: it owns the customer for the rule's cool-down."""
        assert rt.cool_down_ms is not None
        owners: list[list[Any]] | None = self.state.get(OWNERS)
        entry = [at, at + rt.cool_down_ms, action_id, rt.destination, rt.priority]
        if owners is None:
            self.state[OWNERS] = [entry]
            return
        owners.append(entry)
        horizon = self.newest - self.engine.config.allowed_lateness_ms
        owners[:] = [owner for owner in owners if owner[OWNER_UNTIL] >= horizon]

    def newer_change(self, rule_id: str, key: str, at: int) -> str | None:
        """For a `latest_only` rule: the action of a newer change already applied for the key
        ("" when it fired nothing), or None when the candidate is the newest."""
        latest = self.rule_state(rule_id).get(LATEST, NO_CONTEXT).get(key)
        if latest is None or latest[0] <= at:
            return None
        action: str = latest[1] or ""
        return action

    def note_change(self, rule_id: str, key: str, at: int, action_id: str | None) -> None:
        rs = self.rule_state(rule_id)
        latest: dict[str, list[Any]] | None = rs.get(LATEST)
        if latest is None:
            latest = rs[LATEST] = {}
        if key not in latest or latest[key][0] <= at:
            latest[key] = [at, action_id]

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
                sha256(f"{decision_prefix}{cid}\x1f{reason}\x1f{at}{tail}".encode())
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

    def trace_pending(
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
        self.trace_pending(rule_id, version, SUPPRESSED, EXPIRED, None, evidence, expires)

    def fire_deferred(self, entry: list[Any], now: int) -> None:
        """A deferred candidate fires when the cap frees: triggered_at = now, with its original
        due_by, evidence, reason and action_id; it holds a slot and starts its cool-down."""
        _, _, rule_id, key, action_id, evidence, due_by, _, version, reason, details = entry
        engine = self.engine
        rt_now = engine.runtime.get(rule_id)
        if rt_now is None:  # the rule left the pack while its candidate waited
            self.trace_pending(rule_id, version, SUPPRESSED, RULE_REMOVED, None, evidence, now)
            return
        # a candidate deferred under an earlier version fires under that version
        rt = rt_now if rt_now.rule.version == version else engine.retired.get((rule_id, version))
        if rt is None:
            rt = rt_now
        rule = rt.rule
        if CONSENT in self.state and opted_out(self.state, now):
            self.trace_pending(rule_id, version, SUPPRESSED, OPTED_OUT, None, evidence, now)
            return
        self.trace_pending(rule_id, version, FIRED, FIRED, action_id, evidence, now)
        self.hold_slot(now, action_id)
        if rt.cool_down_ms is not None:
            rs = self.rule_state(rule_id)
            self.start_cool_down(rs, rs.get(COOL_DOWNS), key, now, action_id, rt.cool_down_ms)
        state = self.state
        details = dict(details)
        positives, negatives = engine.tally(state, now) if LEDGER in state else (0, 0)
        details["relationship_balance"] = str(positives - negatives)
        details["relationship_positives"] = str(positives)
        details["relationship_negatives"] = str(negatives)
        if OWNERS in state:
            owner = named_owner(state, rule.destination, now)
            if owner is not None:
                details["owner"] = owner
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
                channel_hint(state, now),
                now,
                due_by,
                dict(sorted(details.items())),
            )
        )
        open_action(self, action_id, rule_id, rule.destination, now, due_by)

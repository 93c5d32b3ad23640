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
   rule listening to its type. Each rule kind (small classes in kinds.py, one
   `on_event` each) turns the event into zero or one candidate action.
3. Arbitration: the candidates of one event or one timer are
   decided highest priority first, ties by rule id. Checks, in order:
   already raised (a `first` key consumed before) / already waiting (the same
   rule and key deferred and still queued), cool-down (per customer and rule,
   per key where the rule has one, from the last action that fired or was held
   out: |t - last| < cool-down), held out (engagement rules only: a rule's own
   holdout or the default, hash of customer and rule < percent; it starts the
   cool-down and consumes a first key but sends nothing), contact cap
   (engagement rules only: fired engagement actions with triggered_at in
   (t - the cap's window, t]; one in 24 h by default). A capped candidate is
   *deferred* into the customer's queue (`dq`) with its reason, details, due_by
   and action id; one queue timer per customer fires it when the cap frees
   (highest priority, then the earlier candidate, then rule id; triggered_at =
   that moment) or expires it at its due_by / defer_for (an expiry equal to the
   freeing moment still fires).
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

Where each part lives: time and ids (`times.py`, `ids.py`), candidates and
conditions (`candidates.py`), the rule kinds (`kinds.py`), arbitration: cap, deferral
queue, holdout, cool-downs (`arbitration.py`), reasons and details (`rendering.py`),
what is precomputed per rule (`runtime.py`), the customer's holdings and ledger
(`customer.py`), what a pack switch carries over (`pack_switch.py`), every key of the
state with its version (`state.py`; a rule kind's own keys are declared by its class) and
the outcomes and reasons a decision gives (`decisions.py`). This module is the `Engine`:
events, ticks, timers and pack switches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from heapq import heapify, heappop, heappush
from typing import Any, Final

from processors.engine.actions import ACTION_TIMER, apply_status, on_action_timer
from processors.engine.arbitration import HOLD_TIMER, QUEUE_TIMER, Step
from processors.engine.candidates import NO_CONTEXT, recall, remember
from processors.engine.cases import CASE_EVENTS, apply_case_event, key_at
from processors.engine.customer import (
    PERSON_CHANNELS,
    PREFERENCES_CHANGED,
    PRODUCT_OPENED,
    close_product,
    hold_product,
    is_own_moment,
    record_moment,
    record_opening,
    record_own_channel,
    record_preferences,
)
from processors.engine.decisions import DUPLICATE_EVENT, RULE_ERROR, SUPPRESSED
from processors.engine.hours import deadline_writer
from processors.engine.ids import stable_id
from processors.engine.interfaces import DictStore, EngineConfig, EngineOutput, StateStore
from processors.engine.kinds import KEPT_AT_SWITCH, KINDS, Kind, timer_version
from processors.engine.lifecycle import compare_packs
from processors.engine.pack_switch import carry_over
from processors.engine.rendering import detail_getter
from processors.engine.rule_model import ENGAGEMENT, Pattern, Rule, RuleError, RulePack
from processors.engine.runtime import MatchTest, RuleRuntime, compile_pattern
from processors.engine.state import (
    CHANNEL,
    CLOCK_KEY,
    CLOCK_MAX,
    CLOCK_WATERMARK,
    CUSTOMER_PREFIX,
    EPOCH,
    HELD,
    LEDGER,
    MOMENT_AT,
    MOMENT_SIGN,
    NAMED,
    NEWEST,
    PRODUCTS,
    RULES,
    SEEN,
    SEEN_OLDEST,
    SINCE,
    STATE_VERSION,
    VERSION_FIELD,
    WAITING,
    WAITING_TIMER,
    upgrade_customer,
    upgrade_partition,
)
from processors.engine.timers import add_timer, cancel_timer, first_due, take_due
from processors.engine.times import ISO_DATES, day_writer, iso_date
from schemas.records import STATUS_EVENT_TYPES, Decision, InteractionEvent

__all__ = ["PRODUCT_CLOSED", "Engine"]

#: The event that ends a customer's holding of the product it names (any other event naming a
#: product starts one): details.products lists what the customer holds.
PRODUCT_CLOSED: Final = "account_closed"
#: Negative moments and operational events raise no engagement candidate (etiquette,
#: docs/design.md 11.4): a `profile` rule or a match on any type fires on the others only.
NO_ENGAGEMENT: Final = frozenset(
    {
        "complaint_filed",
        "dispute_opened",
        "cancellation_requested",
        "account_closed",
        "payment_failed",
        "payment_demand_issued",
        "action_acknowledged",
        "action_reassigned",
        "action_done",
    }
)
#: The operational status events of actions (docs/design.md 12): held until the watermark
#: passes them, then applied to the action they name; never contacts, never in the ledger,
#: never a match for a rule on any type, no change to the customer's profile.
OPERATIONAL: Final = frozenset(STATUS_EVENT_TYPES)
#: Event types that change the profile beyond products and the ledger (`_apply_special`).
SPECIAL_TYPES: Final = frozenset(CASE_EVENTS) | {PREFERENCES_CHANGED, PRODUCT_OPENED}


#: What the clock step says of an event too late to apply (`Engine._move_clock`): told by
#: its False (compiled code copies tuples, so never compare it by identity).
_TOO_LATE: Final[tuple[bool, int]] = (False, 0)

#: A rule listening to an event type: (rule, role, test, kind).
_IndexEntry = tuple[Rule, str, MatchTest | None, Kind]
#: What an event of a type touches: (listeners deciding on arrival, ledger sign, closes a
#: product, a case / preference / opening event, listeners deciding at the watermark (the
#: event is held for them), whether held ledger rules look at it, an operational status
#: event).
_TypePlan = tuple[tuple[_IndexEntry, ...], int, bool, bool, tuple[_IndexEntry, ...], bool, bool]


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
        self.retired: dict[tuple[str, int], RuleRuntime] = {}
        #: Pack switches so far, (changed rule ids, removed or added rule ids) each: a
        #: customer's state is brought up to date (`migrate`) when it is next touched.
        self.migrations: list[tuple[frozenset[str], frozenset[str]]] = []
        #: How many switches this engine's pack is from the first (state key `EPOCH`).
        self.epoch = 0
        #: Where each call's output splits, for hosts that merge the outputs of several
        #: engines into one order (the sharded file replay): when a list, every timer fired
        #: adds ((deadline, customer, rule, key), actions, decisions) and `process` adds
        #: (None, actions, decisions) before it applies its event, the counts being the
        #: lengths of the call's output lists at that point.
        self.marks: list[tuple[tuple[int, str, str, str] | None, int, int]] | None = None
        self.runtime = {
            rule.id: RuleRuntime(rule, pack.relationship, self.config) for rule in pack.rules
        }
        self.detail_getters = {
            rule.id: tuple((name, detail_getter(source)) for name, source in rule.details)
            for rule in pack.rules
        }
        self.placeholders = {
            rule.id: tuple(name for name, _ in self.runtime[rule.id].placeholders)
            for rule in pack.rules
        }
        #: The rules evaluated on each negative moment of the ledger, with their kind.
        self.ledger_rules = [
            (r, KINDS[r.kind]) for r in pack.rules if KINDS[r.kind].ledger and not r.at_watermark
        ]
        #: The ledger rules evaluated once the watermark passes a negative moment.
        self.held_ledger_rules = [
            (r, KINDS[r.kind]) for r in pack.rules if KINDS[r.kind].ledger and r.at_watermark
        ]
        order = {rule.id: i for i, rule in enumerate(pack.rules)}
        positioned: list[tuple[int, str | None, _IndexEntry]] = []
        tests: dict[Pattern, MatchTest | None] = {}
        for rule in pack.rules:
            kind = KINDS[rule.kind]
            for role, pattern in zip(kind.roles, (rule.pattern, rule.follow), strict=False):
                assert pattern is not None
                if pattern not in tests:
                    tests[pattern] = compile_pattern(pattern)
                entry: _IndexEntry = (rule, role, tests[pattern], kind)
                if pattern.types is None:
                    positioned.append((order[rule.id], None, entry))
                else:
                    for t in sorted(pattern.types):
                        positioned.append((order[rule.id], t, entry))
        self._positioned = positioned
        #: event type -> (listeners, ledger sign, closes a product, a case / preference /
        #: opening event): what an event of the type touches, worked out once per type
        self._by_type: dict[str, _TypePlan] = {}
        #: Case resolutions that matched no open case (docs/design.md 11.2), counted.
        self.unmatched_resolutions = 0
        #: event type -> +1 / -1 for the ledger (negative wins where a type is both)
        self._signs = {t: 1 for t in pack.relationship.positive} | {
            t: -1 for t in pack.relationship.negative
        }
        self._lateness_ms = self.config.allowed_lateness_ms
        # Ids are kept the dedupe horizon plus the allowed lateness: an event that is not too
        # late (max_lateness <= dedupe horizon) finds its first delivery's id still there.
        self._dedupe_ms = self.config.dedupe_horizon_ms + self._lateness_ms
        self._dedupe_slack_ms = self._dedupe_ms + self._dedupe_ms // 4
        #: How far behind the watermark an event may be and still be applied (never more
        #: than the dedupe horizon); what late events can still reach is kept that long.
        self.max_lateness_ms = min(self.config.max_lateness_ms, self.config.dedupe_horizon_ms)
        #: The date of a time as reasons write it (in the configured time zone).
        self.day: Callable[[int], str] = day_writer(self.config.timezone)
        #: The relationship ledger's window.
        self.ledger_window = pack.relationship.window_ms
        #: How long an action stays open after its due_by (docs/design.md 12.2).
        self.action_horizon_ms: int = self.config.action_horizon_ms
        #: (destination, start, duration) -> a due_by: the destination's working hours where
        #: the pack gives them (docs/design.md 12), else continuous time.
        self.deadline: Callable[[str, int, int], int] = deadline_writer(
            pack.destinations, self.config.timezone
        )

    def _hold(
        self, store: StateStore, state: dict[str, Any], event: InteractionEvent, case_id: str | None
    ) -> None:
        """Keep an event for the engagement rules until the watermark passes it: by then
        everything that happened before it within the allowed lateness is known, so arrival
        order changes nothing they decide (docs/design.md 11.1). Its timer goes straight into
        the index, even for an event the watermark has passed: timers fire only when the clock
        moves, so it fires at the next advance, after the event is applied."""
        waiting: dict[str, list[Any]] | None = state.get(HELD)
        if waiting is None:
            waiting = state[HELD] = {}
        event_id = event.event_id
        waiting[event_id] = [remember(event), case_id]
        self._index_timer(store, [event.occurred_at, event.customer_id, HOLD_TIMER, event_id])

    def _release(
        self, store: StateStore, out: EngineOutput, cid: str, state: dict[str, Any], event_id: str
    ) -> Step | None:
        """The watermark passed a held event: the engagement rules see it now, with its own
        time (their conditions are tested against the customer's state as it is now). The
        step, or None when no rule took it up."""
        waiting: dict[str, list[Any]] | None = state.get(HELD)
        kept = None if waiting is None else waiting.pop(event_id, None)
        if waiting is not None and not waiting:
            del state[HELD]
        if kept is None:
            return None
        event = recall(cid, kept[0])
        case_id: str | None = kept[1]
        plan = self._type_plan(event.type)
        step: Step | None = None
        if plan[6]:
            step = self._release_step(store, out, cid, state, case_id, event.occurred_at)
            apply_status(step, event)
        for rule, role, test, kind in plan[4]:
            try:
                hit = test is None or test(event, cid, state)
            except RuleError:
                hit = self._rule_error(store, out, cid, state, rule, event)
            if hit:
                if step is None:
                    step = self._release_step(store, out, cid, state, case_id, event.occurred_at)
                kind.on_event(step, rule, role, event)
        if plan[5] and is_own_moment(event):
            if step is None:
                step = self._release_step(store, out, cid, state, case_id, event.occurred_at)
            for rule, kind in self.held_ledger_rules:
                kind.on_ledger(step, rule, event.occurred_at, event)
        return step

    def _release_step(
        self,
        store: StateStore,
        out: EngineOutput,
        cid: str,
        state: dict[str, Any],
        case_id: str | None,
        t: int,
    ) -> Step:
        """The step of a released event (a case event: its cycle as the case's history says
        now)."""
        step = Step(self, store, out, cid, state)
        if case_id is not None:
            step.case_key = key_at(state, case_id, t)
        return step

    def _rule_error(
        self,
        store: StateStore,
        out: EngineOutput,
        cid: str,
        state: dict[str, Any],
        rule: Rule,
        event: InteractionEvent,
    ) -> bool:
        """A rule's predicate raised on the event: that rule's candidate is suppressed
        (`rule_error`), the other rules go on; False (the event does not match it)."""
        Step(self, store, out, cid, state).trace_pending(
            rule.id, rule.version, SUPPRESSED, RULE_ERROR, None, [event.event_id], event.occurred_at
        )
        return False

    def _apply_special(
        self, state: dict[str, Any], event: InteractionEvent, newest: int
    ) -> str | None:
        """The profile changes of a case event, a preference change or an account opening;
        the id of the case a case event belongs to (else None)."""
        event_type = event.type
        if event_type in CASE_EVENTS:
            key = apply_case_event(state, event, newest, self.max_lateness_ms)
            if not key:
                self.unmatched_resolutions += 1
            return key
        if event_type == PREFERENCES_CHANGED:
            record_preferences(state, event)
        elif event_type == PRODUCT_OPENED and event.product:
            record_opening(state, event.product, event.occurred_at)
        return None

    def listeners(self, event_type: str) -> tuple[_IndexEntry, ...]:
        """Rules (with their role) that look at events of this type, in pack order (the
        engagement rules after the others)."""
        plan = self._type_plan(event_type)
        return plan[0] + plan[4]

    def _type_plan(self, event_type: str) -> _TypePlan:
        plan = self._by_type.get(event_type)
        if plan is None:
            operational = event_type in OPERATIONAL
            # an operational event is never a match for a rule on any type
            listening = [
                e
                for _, t, e in self._positioned
                if t == event_type or (t is None and not operational)
            ]
            # Rules deciding at the watermark see an event once it passes (`_release`);
            # engagement rules (etiquette) never see a negative moment.
            held = tuple(
                e
                for e in listening
                if e[0].at_watermark
                and not (e[0].rule_class == ENGAGEMENT and event_type in NO_ENGAGEMENT)
            )
            sign = 0 if operational else self._signs.get(event_type, 0)
            plan = (
                tuple(e for e in listening if not e[0].at_watermark),
                sign,
                event_type == PRODUCT_CLOSED,
                event_type in SPECIAL_TYPES,
                held,
                sign < 0 and bool(self.held_ledger_rules),
                operational,
            )
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
        data: dict[str, Any] | None = None
        if in_place:
            data = store.data  # type: ignore[attr-defined]
            get: Callable[[str], Any] = data.get
            put: Callable[[str, Any], None] = data.__setitem__
        else:
            get = store.get
            put = store.set
        t = event.occurred_at
        ct = t if watermark_cap is None or t <= watermark_cap else watermark_cap  # clock time
        due = self._move_clock(store, data, ct)
        if due is not None:
            if not due[0]:  # _TOO_LATE
                out.too_late = True  # kept by the host on interactions.late, never applied
                return out
            self._fire_seen_due(store, due[1], out)

        if self.marks is not None:
            self.marks.append((None, len(out.actions), len(out.decisions)))
        # Apply the event to its customer.
        cid = event.customer_id
        skey = CUSTOMER_PREFIX + cid
        state: dict[str, Any] | None = get(skey)
        event_id = event.event_id
        event_type = event.type
        plan = self._by_type.get(event_type)
        if plan is None:
            plan = self._type_plan(event_type)
        listeners, sign, closes, special, held, hold_ledger, operational = plan
        case_id: str | None = None
        fresh = state is None
        if state is None:
            state = {
                VERSION_FIELD: STATE_VERSION,
                SEEN: {event_id: t},
                NEWEST: t,
                CHANNEL: event.channel,
                SEEN_OLDEST: t,
            }
            if self.epoch:
                state[EPOCH] = self.epoch
            newest = t
        else:
            if state.get(VERSION_FIELD) != STATE_VERSION or (
                self.epoch and state.get(EPOCH, 0) != self.epoch
            ):
                self.migrate(state)
            seen: dict[str, int] = state[SEEN]
            if event_id in seen:
                matching = [e for e in listeners + held if _quiet_test(e, event, cid, state)]
                self._duplicate(event, matching, out)
                return out
            seen[event_id] = t
            newest = state.get(NEWEST, t)
            if t >= newest:
                state[NEWEST] = newest = t
                if not operational:
                    state[CHANNEL] = event.channel
            # Ids are kept at least the dedupe horizon and at most a quarter longer, so the
            # (linear) expiry runs at most once per quarter horizon per customer.
            oldest = state.get(SEEN_OLDEST, t)
            if oldest < newest - self._dedupe_slack_ms:
                horizon = newest - self._dedupe_ms
                seen = state[SEEN] = {k: st for k, st in seen.items() if st >= horizon}
                oldest = min(seen.values(), default=t)
            state[SEEN_OLDEST] = oldest if oldest < t else t
        since_day = None if operational else event.customer_since
        if since_day is not None:
            since = ISO_DATES.get(since_day)
            if since is None:
                since = iso_date(since_day)
            # Tenure starts at the earliest customer_since: a new product's younger date
            # never moves it (ISO dates compare as text).
            known = state.get(SINCE)
            if known is None or since < known:
                state[SINCE] = since
        product = None if operational else event.product
        if product:
            # Holdings: from any event naming the product until an account_closed for it.
            products: list[str] | None = state.get(PRODUCTS)
            if closes:
                close_product(state, products, product, t)
            else:
                named: dict[str, int] | None = state.get(NAMED)
                if named is None:
                    state[NAMED] = {product: t}
                elif named.get(product, t - 1) < t:
                    named[product] = t
                if products is None or product not in products:
                    hold_product(state, products, product, t)
        if special:
            case_id = self._apply_special(state, event, newest)
        if event.channel in PERSON_CHANNELS and not operational:
            record_own_channel(state, event)
        if sign and is_own_moment(event):
            record_moment(
                state, newest, self._lateness_ms, self.ledger_window, t, sign, event_id, 1
            )
        # Conditions read only since / products / last channel, which no rule kind changes,
        # so testing every listener before running any is the same as testing each in turn.
        matched: list[_IndexEntry] | None = None
        for entry in listeners:
            test = entry[2]
            try:
                hit = test is None or test(event, cid, state)
            except RuleError:
                hit = self._rule_error(store, out, cid, state, entry[0], event)
            if hit:
                if matched is None:
                    matched = [entry]
                else:
                    matched.append(entry)
        released = case_id is not None and WAITING in state and not CASE_EVENTS[event_type][1]
        holding = bool(held) or operational or (hold_ledger and is_own_moment(event))
        if holding:
            self._hold(store, state, event, case_id)
        if matched is not None or sign < 0 or released:
            step = Step(self, store, out, cid, state)
            if case_id is not None:
                step.case_key = key_at(state, case_id, t)
            if matched is not None:
                for rule, role, _, kind in matched:
                    kind.on_event(step, rule, role, event)
            if sign < 0 and is_own_moment(event):
                for rule, kind in self.ledger_rules:
                    kind.on_ledger(step, rule, t, event)
            if step.candidates:
                step.decide_all()
            if released:
                step.release_queue(t)  # a case closed: what waited for it goes now
            if fresh or not in_place:
                put(skey, state)
            if step.due_now:
                # A timer is never due at the moment it is set: one already behind the
                # watermark (a late event's) fires at the next advance, after the events that
                # arrive before it (a late complaint and its late resolution escalate nothing).
                for timer in step.due_now:
                    self._index_timer(store, timer)
        elif fresh or not in_place:
            put(skey, state)
        return out

    def _move_clock(
        self, store: StateStore, data: dict[str, Any] | None, ct: int
    ) -> tuple[bool, int] | None:
        """The clock step of an event at clock time `ct`: the partition's max time and
        watermark move; (True, watermark) when timers are due, `_TOO_LATE` when the
        event is older than the watermark minus the maximum lateness (nothing moves), else
        None. `data` is the dict of a DictStore (read and changed in place), None for any
        other store."""
        clock: dict[str, Any] | None = (
            data.get(CLOCK_KEY) if data is not None else store.get(CLOCK_KEY)
        )
        if clock is None:
            clock = {
                CLOCK_MAX: ct,
                CLOCK_WATERMARK: ct - self._lateness_ms,
                VERSION_FIELD: STATE_VERSION,
            }
            if data is not None:
                data[CLOCK_KEY] = clock
            else:
                store.set(CLOCK_KEY, clock)
        elif clock.get(VERSION_FIELD) != STATE_VERSION:
            upgrade_partition(store, clock)  # state of an older layout (state.py)
        newest: int = clock[CLOCK_MAX]
        if ct <= newest:
            if ct < clock[CLOCK_WATERMARK] - self.max_lateness_ms:
                return _TOO_LATE
            return None
        clock[CLOCK_MAX] = ct
        watermark = ct - self._lateness_ms
        due: tuple[bool, int] | None = None
        passed: int = clock[CLOCK_WATERMARK]
        if watermark > passed:
            clock[CLOCK_WATERMARK] = watermark
            if first_due(store, watermark):
                due = (True, watermark)
        if data is None:
            store.set(CLOCK_KEY, clock)
        return due

    def observe(self, store: StateStore, t: int) -> EngineOutput | None:
        """The clock step of `process` alone, for an event at `t` that another engine applies
        (a sharded replay: each shard sees every line's time, applies its own customers'):
        the clock moves and due timers fire exactly as `process` would make them. Their
        output, or None when none fired."""
        due = self._move_clock(
            store,
            store.data if type(store) is DictStore else None,  # type: ignore[attr-defined]
            t,
        )
        if due is None or not due[0]:  # none due, or too late
            return None
        out = EngineOutput([], [])
        self._fire_seen_due(store, due[1], out)
        return out

    def advance(self, store: StateStore, now_ms: int) -> EngineOutput:
        """Idle tick: event time has reached `now_ms`; watermark = now_ms - lateness."""
        return self.advance_watermark(store, now_ms - self.config.allowed_lateness_ms)

    def advance_watermark(self, store: StateStore, watermark_ms: int) -> EngineOutput:
        """Set the watermark to `watermark_ms` if that raises it (`replay --until`); fire timers."""
        out = EngineOutput([], [])
        clock = store.get(CLOCK_KEY)
        if clock is None:
            clock = {
                CLOCK_MAX: watermark_ms,
                CLOCK_WATERMARK: watermark_ms,
                VERSION_FIELD: STATE_VERSION,
            }
        else:
            if clock.get(VERSION_FIELD) != STATE_VERSION:
                upgrade_partition(store, clock)  # state of an older layout (state.py)
            if watermark_ms <= clock[CLOCK_WATERMARK]:
                return out
            clock[CLOCK_WATERMARK] = watermark_ms
        store.set(CLOCK_KEY, clock)
        self._fire_due(store, watermark_ms, out)
        return out

    def switch_pack(
        self, stores: Iterable[StateStore], pack: RulePack, at: int
    ) -> tuple[Engine, EngineOutput]:
        """Switch from this engine's pack to `pack` at event time `at` (docs/design.md 8.3):
        the engine of the new pack and the decisions of the switch.

        Unchanged rules keep all their state. A changed rule keeps its cool-downs, first
        keys and deferred candidates; the timers it set fire under the version that set
        them unless the new version says `pending: cancel`. A removed rule's timers and
        deferred candidates are dropped, a new rule starts empty (what each store's timers
        and queues carry over: `pack_switch.carry_over`). Call it between two events, after
        the watermark advanced and due timers fired."""
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
        out = carry_over(self, engine, stores, changes, at)
        self.decided = engine.decided
        return engine, out

    def migrate(self, state: dict[str, Any]) -> None:
        """Bring one customer's state up to date, one step at a time: its layout from the
        version it was written in to STATE_VERSION (`state.upgrade_customer`), then through
        the pack switches it has not seen (docs/design.md 8.3): a changed rule keeps its cool-downs,
        first keys and pending timers and forgets the rest (windows, remembered first
        events); a removed rule's state goes, and so does any old state of a rule that is new
        in the pack, which starts empty."""
        if state.get(VERSION_FIELD) != STATE_VERSION:
            upgrade_customer(state)
        if not self.epoch or state.get(EPOCH, 0) == self.epoch:
            return
        rules: dict[str, dict[str, Any]] | None = state.get(RULES)
        if rules:
            for changed, dropped in self.migrations[state.get(EPOCH, 0) :]:
                for rule_id in dropped:
                    rules.pop(rule_id, None)
                for rule_id in changed:
                    rs = rules.get(rule_id)
                    if rs:
                        for name in [name for name in rs if name not in KEPT_AT_SWITCH]:
                            del rs[name]
        state[EPOCH] = self.epoch

    def watermark(self, store: StateStore) -> int | None:
        """The partition's current watermark (None before its first event)."""
        clock = store.get(CLOCK_KEY)
        return None if clock is None else int(clock[CLOCK_WATERMARK])

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
                        "decision", rule.id, event.customer_id, DUPLICATE_EVENT, event.event_id
                    ),
                    customer_id=event.customer_id,
                    rule=rule.id,
                    rule_version=rule.version,
                    outcome=SUPPRESSED,
                    reason=DUPLICATE_EVENT,
                    action_id=None,
                    evidence=[event.event_id],
                    decided_at=event.occurred_at,
                )
            )

    # -- relationship ledger --------------------------------------------------------------

    def tally(self, state: dict[str, Any], at: int) -> tuple[int, int]:
        """(positives, negatives) with time in [at - window, at]."""
        ledger = state.get(LEDGER)
        if not ledger:
            return 0, 0
        lo = at - self.ledger_window
        positives = negatives = 0
        for entry in ledger:  # sorted by time
            moment = entry[MOMENT_AT]
            if moment > at:
                break
            if moment >= lo:
                if entry[MOMENT_SIGN] > 0:
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
        """Register a deadline in the partition's timer index, or in `due_now` if the watermark
        has already passed it (the caller fires those in the same advance when timers are
        firing, else indexes them for the next one)."""
        clock = (
            store.data.get(CLOCK_KEY)  # type: ignore[attr-defined]
            if type(store) is DictStore
            else store.get(CLOCK_KEY)
        )
        entry = [deadline, customer_id, rule_id, key]
        if clock is not None and deadline <= clock[CLOCK_WATERMARK]:
            due_now.append(entry)
            return
        self._index_timer(store, entry)

    def _index_timer(self, store: StateStore, entry: list[Any]) -> None:
        """Put a timer [deadline, customer_id, rule_id, key] into the partition's chunks."""
        add_timer(store, entry)

    def cancel_timer(
        self, store: StateStore, deadline: int, customer_id: str, rule_id: str, key: str
    ) -> None:
        """Remove a resolved timer from the index."""
        cancel_timer(store, [deadline, customer_id, rule_id, key])

    def _fire_due(self, store: StateStore, watermark: int, out: EngineOutput) -> None:
        if first_due(store, watermark):
            self._fire_seen_due(store, watermark, out)

    def _fire_seen_due(self, store: StateStore, watermark: int, out: EngineOutput) -> None:
        """Fire every pending timer with deadline <= watermark, the caller having seen
        (`first_due`) that one is."""
        due = take_due(store, watermark)
        if due:
            self._fire(store, due, out)

    def _fire(self, store: StateStore, due: list[list[Any]], out: EngineOutput) -> None:
        """Fire timers in deadline order, ties by customer id then rule id (a customer's queue
        timer first). Timers set while these fire (a freed cap, a deferral) that are already
        due fire in the same call, in deadline order."""
        heapify(due)
        marks = self.marks
        # A DictStore holds the very states the engine changes: read them without a call,
        # nothing to write back.
        in_place = type(store) is DictStore
        get: Callable[[str], Any] = (
            store.data.get if in_place else store.get  # type: ignore[attr-defined]
        )
        while due:
            entry = heappop(due)
            deadline: int = entry[0]
            cid: str = entry[1]
            rule_id: str = entry[2]
            key: str = entry[3]
            if marks is not None:
                marks.append(((deadline, cid, rule_id, key), len(out.actions), len(out.decisions)))
            skey = CUSTOMER_PREFIX + cid
            state = get(skey)
            if state is None:
                continue
            if rule_id == QUEUE_TIMER and state.get(WAITING_TIMER) != deadline:
                continue  # moved since it was set
            if state.get(VERSION_FIELD) != STATE_VERSION or (
                self.epoch and state.get(EPOCH, 0) != self.epoch
            ):
                self.migrate(state)
            if rule_id == QUEUE_TIMER:
                step = Step(self, store, out, cid, state)
                step.serve_queue(deadline)
            elif rule_id == HOLD_TIMER:
                released = self._release(store, out, cid, state, key)
                if released is None:
                    if not in_place:
                        store.set(skey, state)
                    continue
                step = released
            elif rule_id == ACTION_TIMER:
                step = Step(self, store, out, cid, state)
                on_action_timer(step, key, deadline)
            else:
                rule = self.rules.get(rule_id)
                version = timer_version(state.get(RULES, NO_CONTEXT).get(rule_id, NO_CONTEXT), key)
                if version is not None:
                    # set before a switch by an earlier version: it fires under that version
                    # (under the current one if this engine does not know it: never lost)
                    retired = self.retired.get((rule_id, version))
                    if retired is not None:
                        rule = retired.rule
                if rule is None:
                    continue  # a timer of a rule no longer in the pack
                kind = KINDS[rule.kind]
                if not kind.timers:
                    continue
                step = Step(self, store, out, cid, state)
                kind.on_timer(step, rule, key, deadline)
            step.decide_all()
            if not in_place:
                store.set(skey, state)
            if step.due_now:
                for entry in step.due_now:
                    heappush(due, entry)


def _quiet_test(
    entry: _IndexEntry, event: InteractionEvent, cid: str, state: dict[str, Any]
) -> bool:
    """An entry's test on a duplicate delivery: a predicate that raises does not match (its
    `rule_error` was decided at the first delivery)."""
    test = entry[2]
    try:
        return test is None or test(event, cid, state)
    except RuleError:
        return False

"""The engine's state layout, version `STATE_VERSION`: every key it keeps, and the way up
from older versions.

One `StateStore` holds one input partition. Its values are plain JSON (dict, list,
str, int, float, bool, None), so a Faust changelog, RocksDB or a file can hold them;
times are epoch milliseconds of event time. Two kinds of keys:

- partition keys, `p:...` (`PARTITION_KEYS`): the clock, the timer index and its
  chunks, the last pack switch;
- one key per customer, `c:<customer_id>` (`customer_key`), a dict (`CUSTOMER_KEYS`)
  whose `r` holds one dict per rule id with the rule's own state: its cool-down
  (`COOL_DOWN_KEYS`) and the keys its kind declares (`kinds.RULE_KEYS` lists them all).

Lists in the state are records read by position; the `..._AT`-style constants below name
each position, so code says `entry[WAITING_RULE]` where the stored bytes hold a list.

The version is stored in the state itself: in the partition's clock (`p:clock`
field `v`) for the partition keys, and in each customer's dict (`v`) for that
customer, because a store can only be read key by key (a customer is brought up to
date when the engine next touches it). A missing `v` is version 0: the unversioned
state written before versions existed. Each version step is a function from one
version to the next (`CUSTOMER_STEPS`, `PARTITION_STEPS`); `upgrade_customer` and
`upgrade_partition` run the steps a state has not seen, in order, and refuse state
written by a newer engine. A change of layout adds a step, raises `STATE_VERSION`
and updates the tables below (a test compares them with the state a replay writes).

Knows no Kafka, no Faust; nothing here runs on the per-event path except the version
comparison the engine makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from processors.engine.interfaces import StateStore

#: The layout this engine writes. 0: unversioned (before versions existed; `cap` could
#: hold bare times). 1: `cap` holds [time, action_id] pairs. 2: revision 3 (docs/design.md
#: 11): cases, consent, the customer's own channel, owners, product openings; the ledger
#: holds the customer's own moments only. 3: the customer's actions followed until done
#: (`ac`, docs/design.md 12) and their timers. 4: timers in chunks of bounded size
#: (timers.py) instead of one list per hour of deadlines.
STATE_VERSION: Final = 4
#: Where the version is kept: a customer's dict, and the partition's clock.
VERSION_FIELD: Final = "v"

#: Store key of one customer's state: CUSTOMER_PREFIX + customer_id.
CUSTOMER_PREFIX: Final = "c:"
#: Reserved partition-level keys (never start with CUSTOMER_PREFIX).
CLOCK_KEY: Final = "p:clock"  # {"max": max occurred_at seen, "wm": watermark, "v": version}
#: The pending timers (timers.py): sorted [[lowest deadline, chunk id]] of their chunks, and
#: + chunk id -> a sorted list of at most TIMER_CHUNK_MAX [[deadline, customer, rule, key]].
TIMER_INDEX_KEY: Final = "p:tindex"
TIMER_CHUNK_PREFIX: Final = "p:tchunk:"
TIMER_CHUNK_MAX: Final = 64
#: Version 3's timers: one sorted list per hour of deadlines, and the list of those hours.
V3_TIMER_INDEX_KEY: Final = "p:timers"
V3_TIMER_BUCKET_PREFIX: Final = "p:timers:"
#: The packs a live partition has run and a switch it waits for (`switching`).
LINE_KEY: Final = "p:line"
#: The YAML text of every pack in a live partition's chain (`switching`).
TEXTS_KEY: Final = "p:packs"
#: Partition key recording the last pack switch: {"at", "watermark", "versions"}.
PACK_KEY: Final = "p:pack"

#: The fields of the partition's clock (`CLOCK_KEY`).
CLOCK_MAX: Final = "max"
CLOCK_WATERMARK: Final = "wm"

#: A pending timer (a `TIMER_CHUNK_PREFIX` key holds them sorted):
#: [deadline, customer_id, rule_id, key], named by these positions.
TIMER_DEADLINE: Final = 0
TIMER_CUSTOMER: Final = 1
TIMER_RULE: Final = 2
TIMER_KEY: Final = 3

#: The keys of a customer's dict (`CUSTOMER_KEYS` says what each holds).
SEEN: Final = "seen"
NEWEST: Final = "t"
CHANNEL: Final = "ch"
SEEN_OLDEST: Final = "so"
SINCE: Final = "since"
PRODUCTS: Final = "prod"
CLOSED: Final = "pc"
LEDGER: Final = "led"
CAP: Final = "cap"
WAITING: Final = "dq"
WAITING_TIMER: Final = "dqt"
EPOCH: Final = "pe"
RULES: Final = "r"
CASES: Final = "cs"
CONSENT: Final = "cp"
OWN_CHANNEL: Final = "oc"
OWNERS: Final = "ow"
OPENED: Final = "po"
HELD: Final = "he"
NAMED: Final = "pn"
UNMATCHED: Final = "cu"
ACTIONS: Final = "ac"

#: A followed action (`ACTIONS`, processors/engine/actions.py), by action_id: [fired_at,
#: rule_id, destination, due_by | None, owner | None, status, overdue 0 | 1, until]; `until`
#: is the deadline of its pending timer (due_by, then the lapse) while it is open, the time
#: it is remembered until once done or lapsed.
ACTION_AT: Final = 0
ACTION_RULE: Final = 1
ACTION_DESTINATION: Final = 2
ACTION_DUE_BY: Final = 3
ACTION_OWNER: Final = 4
ACTION_STATUS: Final = 5
ACTION_OVERDUE: Final = 6
ACTION_UNTIL: Final = 7
#: At most this many open actions per customer: beyond, the one due to lapse first lapses.
MAX_OPEN_ACTIONS: Final = 64

#: A case (`CASES`, processors/engine/cases.py): [kind, product, history [[t, 1 | 0]],
#: {cycle key: follow-up action id}].
CASE_KIND: Final = 0
CASE_PRODUCT: Final = 1
CASE_HISTORY: Final = 2
CASE_FOLLOW_UPS: Final = 3

#: A change of the customer's contact preferences (`CONSENT`): [at, engagement
#: ("opt_out" | "opt_in" | None), preferred channel (or None)].
CONSENT_AT: Final = 0
CONSENT_ENGAGEMENT: Final = 1
CONSENT_PREFERRED: Final = 2

#: An owner of the customer (`OWNERS`): [at, until, action_id, destination, priority].
OWNER_AT: Final = 0
OWNER_UNTIL: Final = 1
OWNER_ACTION: Final = 2
OWNER_DESTINATION: Final = 3
OWNER_PRIORITY: Final = 4

#: A moment of the relationship ledger (`LEDGER`): [at, sign, ref, is_event].
MOMENT_AT: Final = 0
MOMENT_SIGN: Final = 1
MOMENT_REF: Final = 2
MOMENT_IS_EVENT: Final = 3

#: A slot of the contact cap (`CAP`): [triggered_at, action_id].
SLOT_AT: Final = 0
SLOT_ACTION: Final = 1

#: A deferred candidate in the customer's queue (`WAITING`): [at, priority, rule_id, key,
#: action_id, evidence, due_by, expires, rule_version, reason, details].
WAITING_AT: Final = 0
WAITING_PRIORITY: Final = 1
WAITING_RULE: Final = 2
WAITING_KEY: Final = 3
WAITING_ACTION: Final = 4
WAITING_EVIDENCE: Final = 5
WAITING_DUE_BY: Final = 6
WAITING_EXPIRES: Final = 7
WAITING_VERSION: Final = 8
WAITING_REASON: Final = 9
WAITING_DETAILS: Final = 10

#: The keys every rule with a cool-down keeps in its own dict (`r.<rule_id>`), beside its
#: kind's (`kinds.RULE_KEYS` lists them all).
COOL_DOWNS: Final = "cd"
COOL_DOWN_CAUSES: Final = "cb"


def customer_key(customer_id: str) -> str:
    """The store key of a customer's state."""
    return CUSTOMER_PREFIX + customer_id


@dataclass(frozen=True, slots=True)
class Key:
    """One key of the layout: the JSON shape of its value, what it means, who writes it."""

    shape: str
    meaning: str
    writer: str


#: The partition's own keys (a `TIMER_CHUNK_PREFIX` key stands for every chunk).
PARTITION_KEYS: Final[dict[str, Key]] = {
    CLOCK_KEY: Key(
        '{"max": int, "wm": int, "v": int}',
        "max occurred_at seen on the partition (capped for future-dated events), the "
        "watermark (max - allowed lateness, or set by a tick / --until), the layout version "
        "of the partition keys",
        "Engine.process, Engine.advance_watermark, upgrade_partition",
    ),
    TIMER_INDEX_KEY: Key(
        "[[int, int]]",
        "the timer chunks as [lowest deadline, chunk id], sorted by deadline",
        "timers.add_timer, timers.take_due, timers.cancel_timer, erasure",
    ),
    TIMER_CHUNK_PREFIX: Key(
        "[[deadline: int, customer_id: str, rule_id: str, key: str]]",
        "at most TIMER_CHUNK_MAX sorted pending timers, a range of deadlines no later than "
        "the next chunk's; rule_id '' is the customer's "
        "deferred-candidate queue timer, '\\x01hold' a held event's (key: its event id), "
        "'\\x02action' a followed action's overdue or lapse (key: its action id), any other "
        "a rule's timer for `key`",
        "timers.add_timer, timers.take_due, timers.cancel_timer, erasure",
    ),
    PACK_KEY: Key(
        '{"at": int, "watermark": int | null, "versions": {rule_id: int}, ...}',
        "the last pack switch of the partition (a host may add its own fields, e.g. the offset)",
        "pack_switch.switch_pack (and the host)",
    ),
    LINE_KEY: Key(
        '{"chain": [pack_id: str], "at": [int], "pending": [pack_id: str, at: int] | null}',
        "the packs a live partition has run, oldest first, the time of each switch, and a "
        "switch it waits for (written by a live worker only, never by replay)",
        "switching (start, request_switch, feed, tick)",
    ),
    TEXTS_KEY: Key(
        "{pack_id: str}",
        "the YAML text of every pack in the partition's chain, to rebuild its engine after a "
        "restart or a rebalance (a live worker only)",
        "switching (start, request_switch)",
    ),
}

#: A customer's dict (`c:<customer_id>`).
CUSTOMER_KEYS: Final[dict[str, Key]] = {
    VERSION_FIELD: Key(
        "int", "layout version of this customer's state", "Engine.process, upgrade_customer"
    ),
    SEEN: Key(
        "{event_id: int}",
        "event ids applied within the dedupe horizon, with their occurred_at (duplicates "
        "are suppressed)",
        "Engine.process",
    ),
    NEWEST: Key(
        "int", "the customer's newest occurred_at (what pruning measures from)", "Engine.process"
    ),
    CHANNEL: Key(
        "str", "channel of the customer's newest event (a reason's `via`)", "Engine.process"
    ),
    SEEN_OLDEST: Key("int", "oldest occurred_at in `seen` (when to expire it)", "Engine.process"),
    SINCE: Key(
        "str YYYY-MM-DD",
        "the earliest customer_since seen (a younger one, a new product's, never moves it)",
        "Engine.process",
    ),
    PRODUCTS: Key(
        "[str]", "sorted products the customer holds", "customer.hold_product / close_product"
    ),
    CLOSED: Key(
        "{product: int}",
        "when each product was closed (a late older event does not reopen it)",
        "customer.close_product",
    ),
    LEDGER: Key(
        "[[at: int, sign: 1 | -1, ref: str, is_event: 0 | 1]]",
        "the relationship ledger, sorted by time: the customer's own positive and negative "
        "moments (ref = event id; is_event is always 1 from version 2), within the ledger "
        "window",
        "customer.record_moment",
    ),
    CAP: Key(
        "[[triggered_at: int, action_id: str]]",
        "fired engagement actions within the contact-cap window, sorted ('' = an action from "
        "before ids were kept)",
        "arbitration.Step.hold_slot",
    ),
    WAITING: Key(
        "[[at, priority, rule_id, key, action_id, evidence, due_by, expires, rule_version, "
        "reason, details]]",
        "candidates the contact cap deferred, waiting in the customer's queue",
        "arbitration.Step.defer / serve_queue, pack_switch",
    ),
    WAITING_TIMER: Key(
        "int",
        "deadline of the customer's queue timer (in the timer index)",
        "arbitration.Step.schedule_queue / serve_queue",
    ),
    EPOCH: Key(
        "int",
        "pack switches this state has been brought through (Engine.epoch)",
        "Engine.migrate, Engine.process",
    ),
    RULES: Key(
        "{rule_id: {...}}",
        "each rule's own state (kinds.RULE_KEYS: the cool-down keys and its kind's)",
        "kinds, arbitration",
    ),
    CASES: Key(
        "{case_id: [kind: str, product: str | null, history: [[t: int, 1 | 0]], "
        "{cycle key: follow-up action_id}]}",
        "the customer's cases: every opening (1) and closing (0) sorted by time, and the "
        "follow-up of each cycle; remembered 90 days after the last of them",
        "cases.apply_case_event, cases.note_follow_up",
    ),
    UNMATCHED: Key(
        "[[at: int, kind: str, product: str | null]]",
        "resolutions without a reference that matched no open case, kept the maximum "
        "lateness: an opening that arrives late but happened before one is closed by it",
        "cases.apply_case_event",
    ),
    CONSENT: Key(
        "[[at: int, engagement: 'opt_out' | 'opt_in' | null, preferred_channel: str | null]]",
        "the customer's contact preferences over time, sorted (contact_preferences_changed)",
        "customer.record_preferences",
    ),
    OWN_CHANNEL: Key(
        "[at: int, channel: 'call' | 'email' | 'web']",
        "the newest channel the customer used themselves (channel_hint without a preference)",
        "Engine.process",
    ),
    OWNERS: Key(
        "[[at: int, until: int, action_id: str, destination: str, priority: int]]",
        "fired actions of `owner` rules that own the customer until `until`",
        "arbitration.Step.take_ownership",
    ),
    NAMED: Key(
        "{product: int}",
        "the newest time an event (not a closing) named each product: a closing older than "
        "that, arriving late, leaves the product held",
        "Engine.process",
    ),
    HELD: Key(
        "{event_id: [event: list, case id: str | null]}",
        "events waiting for the watermark to pass them before the engagement rules see them "
        "(candidates.remember keeps each; a hold timer per event)",
        "Engine.process, Engine._release",
    ),
    ACTIONS: Key(
        "{action_id: [fired_at: int, rule_id: str, destination: str, due_by: int | null, "
        "owner: str | null, status: str, overdue: 0 | 1, until: int]}",
        "the customer's fired actions followed until done or lapsed (open, acknowledged, "
        "reassigned, overdue), at most MAX_OPEN_ACTIONS open; done and lapsed ones are "
        "remembered until `until` so a late status is told apart from an unknown one",
        "actions.open_action / apply_status / on_action_timer",
    ),
    OPENED: Key(
        "{product: [int]}",
        "when account_opened events named each product (new_within), newest kept",
        "customer.record_opening",
    ),
}

#: The keys a rule keeps for its options (rules.RULE_OPTIONS): the newest change per key
#: (`latest_only`) and the candidates it gathers (`gather`).
LATEST: Final = "lt"
GATHERED: Final = "g"
#: A gathering window (`GATHERED`): [deadline, evidence [[t, event_id]] sorted, products,
#: its first event (as candidates.remember keeps it)].
GATHER_DEADLINE: Final = 0
GATHER_EVIDENCE: Final = 1
GATHER_PRODUCTS: Final = 2
GATHER_EVENT: Final = 3

OPTION_KEYS: Final[dict[str, Key]] = {
    LATEST: Key(
        "{key: [at: int, action_id: str | null]}",
        "latest_only: the newest change applied per key and the action it fired",
        "arbitration.Step.note_change",
    ),
    GATHERED: Key(
        "{deadline: [deadline: int, [[t: int, event_id]], [product], first event: list]}",
        "gather: the windows being gathered, by deadline, each until its deadline",
        "kinds.MatchKind",
    ),
}

#: A rule's cool-down keys, kept at a pack switch (its kind's keys: kinds.RULE_KEYS).
COOL_DOWN_KEYS: Final[dict[str, Key]] = {
    COOL_DOWNS: Key(
        "{key: int}",
        "cool-down start per key ('' = per customer)",
        "arbitration.Step.start_cool_down",
    ),
    COOL_DOWN_CAUSES: Key(
        "{key: action_id}",
        "the action that started each cool-down (blocked_by)",
        "arbitration.Step.start_cool_down",
    ),
}


class StateVersionError(ValueError):
    """State written by a newer engine than this one: never guessed at."""


def _customer_0_to_1(state: dict[str, Any]) -> None:
    """Unversioned state could keep the contact cap as bare times (from before action ids
    were kept): [time, ""] pairs, "" standing for the unknown action."""
    contacts = state.get("cap")
    if contacts and type(contacts[0]) is int:
        state["cap"] = [[at, ""] for at in contacts]


def _partition_0_to_1(store: StateStore) -> None:
    """The partition keys of unversioned state are already those of version 1."""


def _customer_1_to_2(state: dict[str, Any]) -> None:
    """Revision 3: the ledger counts the customer's own moments only, so the fired actions
    version 1 kept in it go; the new keys start empty (a case, a preference or an opening
    from before the upgrade is not known)."""
    ledger = state.get(LEDGER)
    if ledger:
        state[LEDGER] = [moment for moment in ledger if moment[MOMENT_IS_EVENT]]


def _partition_1_to_2(store: StateStore) -> None:
    """The partition keys of version 1 are already those of version 2."""


def _customer_2_to_3(state: dict[str, Any]) -> None:
    """Actions followed until done (docs/design.md 12): `ac` starts empty, so the actions
    fired before the upgrade are not followed (no status for them; one is `unknown`)."""


def _partition_2_to_3(store: StateStore) -> None:
    """The partition keys of version 2 are already those of version 3 (the action timers are
    timers like the others)."""


def _customer_3_to_4(state: dict[str, Any]) -> None:
    """Version 4 changed partition keys only."""


def _timer_chunks(entries: list[list[Any]]) -> tuple[list[list[int]], list[list[list[Any]]]]:
    """Sorted timers as chunks half full (room to grow before a split): the index and the
    chunks, chunk i under TIMER_CHUNK_PREFIX + i."""
    half = TIMER_CHUNK_MAX // 2
    chunks = [entries[start : start + half] for start in range(0, len(entries), half)]
    return [[chunk[0][0], number] for number, chunk in enumerate(chunks)], chunks


def _partition_3_to_4(store: StateStore) -> None:
    """Timers move from one list per hour of deadlines into chunks of bounded size."""
    hours: list[int] = store.get(V3_TIMER_INDEX_KEY) or []
    entries: list[list[Any]] = []
    for hour in hours:  # sorted hours of sorted lists: all of them in order
        key = f"{V3_TIMER_BUCKET_PREFIX}{hour}"
        entries.extend(store.get(key) or [])
        store.delete(key)
    if store.get(V3_TIMER_INDEX_KEY) is not None:
        store.delete(V3_TIMER_INDEX_KEY)
    index, chunks = _timer_chunks(entries)
    for number, chunk in enumerate(chunks):
        store.set(f"{TIMER_CHUNK_PREFIX}{number}", chunk)
    if index:
        store.set(TIMER_INDEX_KEY, index)


#: CUSTOMER_STEPS[n] brings a customer's dict from version n to n + 1.
CUSTOMER_STEPS: Final[tuple[Callable[[dict[str, Any]], None], ...]] = (
    _customer_0_to_1,
    _customer_1_to_2,
    _customer_2_to_3,
    _customer_3_to_4,
)
#: PARTITION_STEPS[n] brings the partition keys from version n to n + 1.
PARTITION_STEPS: Final[tuple[Callable[[StateStore], None], ...]] = (
    _partition_0_to_1,
    _partition_1_to_2,
    _partition_2_to_3,
    _partition_3_to_4,
)


def _version_of(value: dict[str, Any], what: str) -> int:
    version = value.get(VERSION_FIELD, 0)
    if type(version) is not int or version < 0:
        raise StateVersionError(f"engine state: {what} has layout version {version!r}")
    if version > STATE_VERSION:
        raise StateVersionError(
            f"engine state: {what} has layout version {version}, newer than this engine's "
            f"{STATE_VERSION}; run an engine that knows it"
        )
    return version


def upgrade_customer(state: dict[str, Any]) -> None:
    """Bring one customer's dict to STATE_VERSION, one version step at a time (in place)."""
    for step in CUSTOMER_STEPS[_version_of(state, "a customer") :]:
        step(state)
    state[VERSION_FIELD] = STATE_VERSION


def upgrade_partition(store: StateStore, clock: dict[str, Any]) -> None:
    """Bring the partition keys of `store` (whose clock is `clock`) to STATE_VERSION, one
    version step at a time; the clock, stamped with the version, is written back."""
    for step in PARTITION_STEPS[_version_of(clock, "the partition clock") :]:
        step(store)
    clock[VERSION_FIELD] = STATE_VERSION
    store.set(CLOCK_KEY, clock)

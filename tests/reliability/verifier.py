"""The verifier of the fault tests: what the oracle expects against what PostgreSQL holds.

The oracle is the offline engine (`processors.replay.replay_events`, the same
core the worker runs) over the same events, with one state store per
partition of the interactions topic, events assigned to partitions like the
publisher assigns them (murmur2 of the customer id): `file_oracle`. For runs
through the live worker, `pipeline.expected_outputs` adds the one input the
events do not carry, the wall clock of idle ticks, by advancing each replayed
partition to the watermark the worker's changelog ends with.

`verify(...)` compares expected actions and decisions with the `actions` and
`decisions` tables: lost (expected action ids missing), unexpected (stored ids
the oracle does not expect), mismatched (same id, other content), duplicates
(an action id fired by more than one decision: a primary key cannot show a
second row, so duplicates are looked for in the decisions), and the decisions
themselves (every expected one stored, nothing else but `duplicate_event`
traces of redelivered events). `records_past_durable_rows` finds records
below a committed offset without a row; `dlq_sources` reads a dead-letter
topic and returns the distinct source offsets it holds (redelivery may repeat
a dead letter); `order_violations` checks each customer's decisions come in
the oracle's order. `event_rows` is how many rows `interaction_events` holds
for a list of events.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from confluent_kafka import Message

from common.settings import Settings
from processors.config import engine_config
from processors.engine import Engine, load_rule_pack
from processors.replay import replay_events
from schemas.codec import codec_for
from schemas.records import ActionEvent, Decision, InteractionEvent

ERROR_HEADERS = (
    "moments.error.stage",
    "moments.error.class",
    "moments.error.message",
    "moments.error.topic",
    "moments.error.partition",
    "moments.error.offset",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_engine(settings: Settings) -> Engine:
    """An engine with the settings' rule pack and knobs, as the worker builds it."""
    return Engine(load_rule_pack(settings.engine.rules_path), engine_config(settings))


@dataclass
class Oracle:
    """The actions and decisions the oracle expects for a run's events."""

    actions: list[ActionEvent]
    decisions: list[Decision]
    events: int = 0

    @property
    def decision_ids(self) -> int:
        """Distinct decision ids (the engine may give two decisions one id; a table keeps one)."""
        return len({d.decision_id for d in self.decisions})

    @property
    def decision_id_collisions(self) -> int:
        return len(self.decisions) - self.decision_ids


def file_oracle(events: Sequence[InteractionEvent], settings: Settings) -> Oracle:
    """replay_events over EVENTS, partitions = the interactions topic's partition count."""
    actions, decisions = replay_events(
        events,
        engine=new_engine(settings),
        partitions=settings.kafka.interactions_partitions,
    )
    return Oracle(actions, decisions, events=len(events))


def event_rows(events: Iterable[InteractionEvent]) -> int:
    """The rows `interaction_events` holds for EVENTS: one per (customer_id, event_id). The
    simulation delivers some events twice, as channels do; the sink keeps the first."""
    return len({(e.customer_id, e.event_id) for e in events})


def _header_map(message: Message) -> dict[str, bytes]:
    raw = message.headers() or []
    headers = raw.items() if isinstance(raw, dict) else raw
    return {k: v.encode() if isinstance(v, str) else (v or b"") for k, v in headers}


# --------------------------------------------------------------------------- stored rows


def _ms(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // timedelta(milliseconds=1)


def stored_actions(conninfo: str) -> list[ActionEvent]:
    """Every row of `actions` as an ActionEvent."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT action_id, customer_id, rule, action, rule_version, destination, priority,"
            " reason, evidence, channel_hint, triggered_at, due_by, details FROM actions"
        ).fetchall()
    return [
        ActionEvent(
            action_id=r[0],
            customer_id=r[1],
            rule=r[2],
            action=r[3],
            rule_version=r[4],
            destination=r[5],
            priority=r[6],
            reason=r[7],
            evidence=list(r[8]),
            channel_hint=r[9],
            triggered_at=_ms(r[10]) or 0,
            due_by=_ms(r[11]),
            details=dict(r[12]),
        )
        for r in rows
    ]


def stored_decisions(conninfo: str) -> list[Decision]:
    """Every row of `decisions` as a Decision."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT decision_id, customer_id, rule, rule_version, outcome, reason, action_id,"
            " evidence, decided_at, blocked_by FROM decisions"
        ).fetchall()
    return [
        Decision(
            decision_id=r[0],
            customer_id=r[1],
            rule=r[2],
            rule_version=r[3],
            outcome=r[4],
            reason=r[5],
            action_id=r[6],
            evidence=list(r[7]),
            decided_at=_ms(r[8]) or 0,
            blocked_by=r[9],
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- the comparison


@dataclass
class Verdict:
    """Oracle against database: every list empty means the database holds exactly the oracle."""

    expected_actions: int
    stored_actions: int
    lost: list[str]
    unexpected: list[str]
    mismatched: list[str]
    duplicates: list[str]
    expected_decisions: int
    stored_decisions: int
    missing_decisions: list[str]
    unexpected_decisions: list[str]
    mismatched_decisions: list[str]
    #: duplicate_event decisions the oracle does not have: traces of redelivered events.
    redelivery_traces: int

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.mismatched
            or self.duplicates
            or self.missing_decisions
            or self.unexpected_decisions
            or self.mismatched_decisions
        )

    def summary(self) -> str:
        parts = [
            f"actions expected {self.expected_actions}, stored {self.stored_actions}",
            f"lost {len(self.lost)} {self.lost[:5]}",
            f"unexpected {len(self.unexpected)} {self.unexpected[:5]}",
            f"mismatched {len(self.mismatched)} {self.mismatched[:5]}",
            f"duplicates {len(self.duplicates)} {self.duplicates[:5]}",
            f"decisions expected {self.expected_decisions}, stored {self.stored_decisions}",
            f"missing {len(self.missing_decisions)} {self.missing_decisions[:5]}",
            f"unexpected {len(self.unexpected_decisions)} {self.unexpected_decisions[:5]}",
            f"mismatched {len(self.mismatched_decisions)} {self.mismatched_decisions[:5]}",
            f"redelivery traces {self.redelivery_traces}",
        ]
        return "; ".join(parts)

    def figures(self) -> dict[str, int]:
        return {
            "actions expected": self.expected_actions,
            "actions stored": self.stored_actions,
            "lost": len(self.lost),
            "duplicates": len(self.duplicates),
            "unexpected": len(self.unexpected) + len(self.mismatched),
            "decisions expected": self.expected_decisions,
            "decisions missing/unexpected": len(self.missing_decisions)
            + len(self.unexpected_decisions)
            + len(self.mismatched_decisions),
            "redelivery traces": self.redelivery_traces,
        }


def verify(
    actions: Sequence[ActionEvent],
    decisions: Sequence[Decision],
    conninfo: str,
) -> Verdict:
    """Compare expected ACTIONS and DECISIONS with the tables of CONNINFO."""
    expected: dict[str, ActionEvent] = {}
    for a in actions:
        expected.setdefault(a.action_id, a)
    stored = {a.action_id: a for a in stored_actions(conninfo)}
    lost = sorted(expected.keys() - stored.keys())
    unexpected = sorted(stored.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])

    # The engine can give two decisions one id (they differ in decided_at); the table keeps
    # one of them, the first or the last depending on how the sink batched them.
    versions: dict[str, list[Decision]] = defaultdict(list)
    for d in decisions:
        versions[d.decision_id].append(d)
    want = {k: v[0] for k, v in versions.items()}
    have_list = stored_decisions(conninfo)
    have = {d.decision_id: d for d in have_list}
    missing_decisions = sorted(want.keys() - have.keys())
    extra = have.keys() - want.keys()
    traces = {k for k in extra if have[k].reason == "duplicate_event"}
    unexpected_decisions = sorted(extra - traces)
    mismatched_decisions = sorted(
        k for k in want.keys() & have.keys() if have[k] not in versions[k]
    )
    fired = Counter(d.action_id for d in have_list if d.outcome == "fired")
    duplicates = sorted(str(k) for k, n in fired.items() if n > 1)
    return Verdict(
        expected_actions=len(expected),
        stored_actions=len(stored),
        lost=lost,
        unexpected=unexpected,
        mismatched=mismatched,
        duplicates=duplicates,
        expected_decisions=len(want),
        stored_decisions=len(have),
        missing_decisions=missing_decisions,
        unexpected_decisions=unexpected_decisions,
        mismatched_decisions=mismatched_decisions,
        redelivery_traces=len(traces),
    )


# --------------------------------------------------------------------------- dead letters


@dataclass
class DeadLetters:
    """A dead-letter topic's records: distinct source offsets and header problems."""

    records: int
    sources: set[tuple[str, int, int]]
    missing_headers: list[str]
    stages: Counter[str]


def dlq_sources(records: Iterable[Message]) -> DeadLetters:
    """Distinct (topic, partition, offset) named by the records' `moments.error.*` headers."""
    sources: set[tuple[str, int, int]] = set()
    missing: list[str] = []
    stages: Counter[str] = Counter()
    count = 0
    for message in records:
        count += 1
        headers = _header_map(message)
        absent = [h for h in ERROR_HEADERS if h not in headers]
        if absent:
            missing.append(f"{message.topic()}[{message.partition()}]@{message.offset()}: {absent}")
            continue
        stages[headers["moments.error.stage"].decode()] += 1
        sources.add(
            (
                headers["moments.error.topic"].decode(),
                int(headers["moments.error.partition"]),
                int(headers["moments.error.offset"]),
            )
        )
    return DeadLetters(count, sources, missing, stages)


# --------------------------------------------------------------------------- offsets


#: A record to publish: (topic, key, value, ident).
WireRecord = tuple[str, bytes, bytes, str]


def wire_records(
    settings: Settings,
    events: Iterable[InteractionEvent] = (),
    actions: Iterable[ActionEvent] = (),
    decisions: Iterable[Decision] = (),
) -> list[WireRecord]:
    """Records as the publisher, the worker and the sink key them (customer id, Avro)."""
    topics = settings.topics
    event_codec, action_codec = codec_for(InteractionEvent), codec_for(ActionEvent)
    decision_codec = codec_for(Decision)
    records = [
        (topics.interactions, e.customer_id.encode(), event_codec.encode(e), ident(e))
        for e in events
    ]
    records += [
        (topics.action(a.destination), a.customer_id.encode(), action_codec.encode(a), ident(a))
        for a in actions
    ]
    records += [
        (topics.decisions, d.customer_id.encode(), decision_codec.encode(d), ident(d))
        for d in decisions
    ]
    return records


def ident(record: ActionEvent | Decision | InteractionEvent) -> str:
    """The key a record's row is stored under, as one string ("a:", "d:" or "e:" + key)."""
    if isinstance(record, ActionEvent):
        return "a:" + record.action_id
    if isinstance(record, Decision):
        return "d:" + record.decision_id
    return f"e:{record.customer_id}\x00{record.event_id}"


def durable_idents(conninfo: str, inserted_before: datetime | None = None) -> set[str]:
    """The key of every row of actions, decisions and interaction_events (see `ident`).

    With INSERTED_BEFORE, only rows whose transaction started before it
    (`inserted_at`, the database clock on this same machine).
    """
    cutoff = inserted_before or datetime(9999, 1, 1, tzinfo=UTC)
    with psycopg.connect(conninfo) as conn:
        found = {
            "a:" + r[0]
            for r in conn.execute("SELECT action_id FROM actions WHERE inserted_at < %s", (cutoff,))
        }
        found |= {
            "d:" + r[0]
            for r in conn.execute(
                "SELECT decision_id FROM decisions WHERE inserted_at < %s", (cutoff,)
            )
        }
        found |= {
            f"e:{r[0]}\x00{r[1]}"
            for r in conn.execute(
                "SELECT customer_id, event_id FROM interaction_events WHERE inserted_at < %s",
                (cutoff,),
            )
        }
    return found


def records_past_durable_rows(
    committed: dict[tuple[str, int], int],
    placed: dict[tuple[str, int, int], str],
    durable: set[str],
) -> list[str]:
    """Records below a committed offset whose row is not in the database.

    COMMITTED: the sink group's offset per (topic, partition); PLACED: the key
    (`ident`) of each record at (topic, partition, offset); DURABLE: the keys
    with rows. A record counts as durable when a row with its key exists,
    whichever delivery wrote it (a redelivered action is the same row).
    """
    problems: list[str] = []
    for (topic, partition, offset), key in sorted(placed.items()):
        if offset < committed.get((topic, partition), -1) and key not in durable:
            problems.append(f"{topic}[{partition}]@{offset} ({key}) committed without a row")
    return problems


# --------------------------------------------------------------------------- order


def order_violations(
    expected: Sequence[Decision], decision_records: Iterable[Message]
) -> list[str]:
    """Customers whose decisions the worker emitted in another order than the oracle.

    The worker emits a customer's decisions in the order it applies the
    customer's events (and fires the timers they set) onto one partition of
    `decisions` (key customer_id). See `decision_order_violations` for the
    check; this reads the records in log order.
    """
    decode = codec_for(Decision).decode
    records = sorted(
        (
            (int(m.partition() or 0), int(m.offset() or 0), decode(value))
            for m in decision_records
            if (value := m.value()) is not None
        ),
        key=lambda r: (r[0], r[1]),
    )
    return decision_order_violations(expected, [decision for _, _, decision in records])


def decision_order_violations(
    expected: Sequence[Decision], decisions: Iterable[Decision]
) -> list[str]:
    """Per customer, in the given order: the decisions come in the order of EXPECTED.

    EXPECTED is what the oracle's replay gives for the events (in the order it
    gives them): it applies each partition's events in input order, as the
    worker must, so a customer's decisions come out in one order. The input
    order alone does not give it: rules deciding at the watermark (engagement
    rules, `decide: at_watermark`) decide an event once the watermark passes
    it, in event-time order, after events that arrived later (docs/design.md
    11.1). Keeps the first of each decision id (a redelivered event may emit
    the same decisions again, at least once), and leaves out `duplicate_event`
    traces and decisions EXPECTED lacks (`verify` reports those).
    """
    rank: dict[str, int] = {}
    for index, decision in enumerate(expected):
        rank.setdefault(decision.decision_id, index)
    last: dict[str, tuple[int, Decision]] = {}
    seen: set[str] = set()
    problems: list[str] = []
    for decision in decisions:
        if decision.decision_id in seen or decision.reason == "duplicate_event":
            continue
        seen.add(decision.decision_id)
        if decision.decision_id not in rank:
            continue
        index = rank[decision.decision_id]
        customer = decision.customer_id
        before = last.get(customer)
        if before is not None and index < before[0]:
            problems.append(
                f"{customer}: {decision.rule} (decided at {decision.decided_at}) after"
                f" {before[1].rule} (decided at {before[1].decided_at}), which the oracle"
                " gives later"
            )
            continue
        last[customer] = (index, decision)
    return problems

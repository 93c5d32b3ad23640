"""The PostgreSQL sink: actions, decisions, interaction events and action statuses into tables.

Four parts, each usable alone:

- `apply_migrations(conninfo)` (`sinks.migrate`) applies the versioned SQL
  files in `sinks/migrations/` once each.
- `sinks.rows` says how a record becomes a row of its table, in COPY wire form.
- `PostgresSink` buffers records (`add`) and writes them in one transaction
  (`flush`): a binary COPY straight into each table; only when PostgreSQL
  refuses it (a key already there after a redelivery, text it cannot hold)
  does that table's batch go through a staging table and
  `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, so a redelivered record never
  becomes a second row. A failed flush keeps its buffer for the retry.
- `run_postgres_sink(settings)` runs the sinks' shared consume loop
  (`sinks.consume`) with `BatchWriter` as its effect: batch, write, and only
  after the database commit report the records durable (the loop then commits
  their offsets). A writer thread writes batch k while batch k+1 is consumed
  and decoded (one ahead).

It must never commit a Kafka offset past a row that is not durable, never skip
a record silently (undecodable actions and decisions go to `actions.dlq`,
database outages are waited out), and never build SQL from values: values
travel by COPY or as parameters. On `interactions` it stores exactly the
events the worker applies: records the worker refuses (undecodable, invalid,
oversized, tombstones) are left to the worker, which owns `interactions.dlq`,
so each poison record is dead-lettered once; idle ticks are skipped by the
loop.

Erasure (docs/design.md 10.1): the erasure record on `interactions` and the
erasure marker on each action topic and `decisions` reach the sink in offset
order (`PostgresSink.erase`). The customer's records of that topic still in the
buffer are dropped, and the batch's transaction first deletes their rows of
that topic already stored, then records the completed erasure in `erasures`
(keyed hash, erasure time, rows removed per table), then writes the rest of
the batch: nothing read before the marker survives it, anything after it
(the customer coming back) is kept. The loop drops records of erased customers
dated before their erasure (the registry), so a new group never writes them.

Action statuses (docs/design.md 12): each `ActionStatus` record of
`action-status` is a row of `action_status_history`; in the same transaction
the sink derives the current status, owner, acknowledged_at, done_at,
resolution and overdue_at of every action its batch touched from that history
(view `action_status_current`, migration 008), so the rows are the same
whichever topic it read first: the actions of the batch's statuses, and the
actions of statuses that came first whose row has now landed (their ids wait in
`action_status_waiting`, migration 010: a batch of new actions asks that table
once instead of looking up each action in the history). It observes the event-time
histograms of time to acknowledge and to done when a batch first sets those
columns (after the commit: a redelivery observes nothing), and counts the open
and overdue actions per destination for its gauges every `WORK_GAUGES_S`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Message
from psycopg.adapt import PyFormat

from common.metrics import (
    ACTION_TIME_TO_ACKNOWLEDGE,
    ACTION_TIME_TO_DONE,
    ACTIONS_OPEN,
    ACTIONS_OVERDUE,
    SINK_BATCH_DURATION,
    SINK_ERRORS,
    SINK_ROWS,
)
from common.privacy import keyed_customer_hash
from common.settings import Settings
from schemas.codec import codec_for
from schemas.records import DESTINATIONS, ActionEvent, ActionStatus, Decision, InteractionEvent
from sinks.consume import POLL_S, TP, ConsumeLoop, Progress, Route, retry_until, run_sink
from sinks.dead_letters import DeadLetters
from sinks.erasure import ACTION_TABLE, DECISION_TABLE, STATUS_TABLE, erase_topic_rows
from sinks.migrate import apply_migrations, load_migrations
from sinks.rows import (
    ACTION_STATUS_HISTORY,
    ACTIONS,
    TABLES,
    Batch,
    Entry,
    Record,
    TableSpec,
    action_row,
    table_of,
    without_nul,
)

#: What others import from here besides the sink: the migrations, the tables, a row builder.
__all__ = [
    "ACTIONS",
    "TABLES",
    "BatchWriter",
    "PostgresSink",
    "Refused",
    "SinkConfigError",
    "action_row",
    "apply_migrations",
    "fetch_actions",
    "load_migrations",
    "refuses_record",
    "run_postgres_sink",
    "sink_topics",
]

log = logging.getLogger(__name__)

SINK_NAME = "postgres"
# How often the loop looks whether the batch being written is durable (to report it).
_INFLIGHT_CHECK_S = 0.05
#: What a write waits out (retried with backoff): the database or the network is away.
_OUTAGES = (psycopg.Error, OSError)
#: How often the sink counts the open and overdue actions for its gauges.
WORK_GAUGES_S = 15.0

# The current status of the actions a batch touched, from their status history (migration
# 008); `o` is the row before the update, to tell what this batch set first. A history of
# `open` alone derives what a new row holds already: only the others are aggregated.
_NEWS = """
SELECT DISTINCT action_id FROM action_status_history
WHERE action_id = ANY(%s) AND status <> 'open'
"""
_DERIVE_STATUS = """
UPDATE actions a
SET status = c.status, owner = c.owner, acknowledged_at = c.acknowledged_at,
    done_at = c.done_at, resolution = c.resolution, overdue_at = c.overdue_at
FROM action_status_current c
JOIN actions o ON o.action_id = c.action_id
WHERE c.action_id = ANY(%s) AND a.action_id = c.action_id AND a.customer_id = c.customer_id
  AND (a.status, a.owner, a.acknowledged_at, a.done_at, a.resolution, a.overdue_at)
      IS DISTINCT FROM
      (c.status, c.owner, c.acknowledged_at, c.done_at, c.resolution, c.overdue_at)
RETURNING a.destination,
    CASE WHEN o.acknowledged_at IS NULL
         THEN extract(epoch FROM a.acknowledged_at - a.triggered_at)::float8 END,
    CASE WHEN o.done_at IS NULL
         THEN extract(epoch FROM a.done_at - a.triggered_at)::float8 END
"""

# Statuses whose action row is not there yet (migration 010): their action ids wait.
_WAIT = """
INSERT INTO action_status_waiting (action_id)
SELECT DISTINCT h.action_id FROM action_status_history h
WHERE h.action_id = ANY(%s) AND h.status <> 'open'
  AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.action_id = h.action_id)
ON CONFLICT DO NOTHING
"""
# The waiting actions whose row has landed (this batch or a concurrent writer's): derived now.
_LANDED = """
DELETE FROM action_status_waiting w USING actions a
WHERE a.action_id = w.action_id
RETURNING w.action_id
"""
# After an erasure: the ids whose history is gone wait for nothing.
_WAITING_ERASED = """
DELETE FROM action_status_waiting w
WHERE NOT EXISTS (SELECT 1 FROM action_status_history h WHERE h.action_id = w.action_id)
"""

# A database the sink did not migrate may predate the status columns: it then writes the
# tables as they are (a status of such a database is kept in no current column). One that
# predates migration 010 has no waiting table: every action of a batch is looked up then.
_HAS_STATUS_VIEW = """
SELECT to_regclass('action_status_current') IS NOT NULL,
       to_regclass('action_status_waiting') IS NOT NULL
"""

# Per destination, on the partial index of unfinished actions (migration 009's desk queue).
_COUNT_WORK = """
SELECT destination, count(*), count(*) FILTER (WHERE overdue_at IS NOT NULL)
FROM actions
WHERE status IN ('open', 'acknowledged', 'reassigned', 'overdue')
GROUP BY destination
"""

#: Per action whose status a batch changed: its destination, and the event-time seconds to
#: acknowledge and to done when the batch set those first (else None).
WorkChange = tuple[str, float | None, float | None]


class SinkConfigError(ValueError):
    """The sink cannot run with these settings (names what is wrong)."""


# --------------------------------------------------------------------------- the sink

#: What PostgreSQL says when a COPY straight into a table cannot stand: a key already there
#: (a redelivery) or text it cannot hold (NUL). The batch then goes the careful way.
_CAREFUL_WAY = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.CharacterNotInRepertoire,
    psycopg.errors.UntranslatableCharacter,
)


#: SQLSTATE classes of a row PostgreSQL refuses for what it holds: data exception (22),
#: integrity constraint violation (23), program limit exceeded (54, e.g. an index row too
#: large). Such a record is data for the dead-letter topic, never an outage to wait out.
REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def refuses_record(exc: psycopg.Error) -> bool:
    """Whether `exc` is PostgreSQL refusing a row (not an outage: those are retried)."""
    state = exc.sqlstate
    return state is not None and state[:2] in REFUSED_SQLSTATE_CLASSES


@dataclass(frozen=True, slots=True)
class Erasure:
    """An erasure marker met in a batch: whose rows of which topic go, and the tables they are
    in (None: every customer table, for the erasure record on `interactions`)."""

    customer_id: str
    customer_hash: str
    erased_at_ms: int
    topic: str
    tables: list[str] | None

    def __repr__(self) -> str:  # never the customer id
        return f"Erasure({self.customer_hash[:16]}, {self.erased_at_ms}, {self.topic})"


@dataclass(frozen=True, slots=True)
class Refused:
    """A record the database refused: the buffered entry and why (class and SQLSTATE only:
    PostgreSQL's message may quote the row, i.e. customer data)."""

    entry: Entry
    table: str
    error_class: str
    sqlstate: str

    @property
    def message(self) -> str:
        return (
            f"PostgreSQL refused the row for table {self.table}: "
            f"{self.error_class} (SQLSTATE {self.sqlstate})"
        )


class PostgresSink:
    """Batches records and writes them to PostgreSQL idempotently; `add()` then `flush()`.

    `flush()` writes every buffered record in ONE transaction and clears the
    buffer only after the commit. Each table's rows are COPYed straight into
    the table inside a savepoint; when PostgreSQL refuses them (a key already
    there, after a redelivery; a NUL in a text) that savepoint is rolled back
    and the rows, NULs replaced, go through a staging table and
    `INSERT ... ON CONFLICT DO NOTHING`, so a redelivered record never becomes
    a second row; while batches keep holding stored keys, they go that way
    directly. When `flush()` raises, nothing of the batch is committed and
    the buffer is kept, so calling it again retries the same records.
    It never commits anything to Kafka; the caller does that after a flush.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        name: str = SINK_NAME,
        migrate: bool = True,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.conninfo = conninfo
        self.name = name
        self._migrate = migrate
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._buffers: Batch = {t.name: {} for t in TABLES}
        self._copy_sql = {t.name: t.copy_sql() for t in TABLES}
        self._stage_copy_sql = {t.name: t.copy_sql(staged=True) for t in TABLES}
        self._insert_sql = {t.name: t.insert_sql() for t in TABLES}
        #: Tables whose last batch held keys already stored: their next batch skips the COPY.
        self._through_staging: set[str] = set()
        #: Erasure markers met since the last flush, in order (run before the batch's rows).
        self._erasures: list[Erasure] = []
        #: Whether the database has the current status columns (migration 008), per connection.
        self._derives_status = True
        #: Whether it has the table of actions whose statuses came first (migration 010).
        self._waits = True

    def add(
        self,
        record: Record,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        """Buffer one record (a duplicate key in the same batch is kept once).

        Its row is built when the batch is written, while PostgreSQL works on the rows before it.
        """
        spec, key = table_of(record)
        self._buffers[spec.name][key] = (record, topic, partition, offset)

    def erase(
        self, customer_id: str, erased_at_ms: int, topic: str, tables: list[str] | None
    ) -> None:
        """An erasure marker of `topic`: the customer's records of that topic buffered before
        it are dropped, and the next write deletes their stored rows of that topic first."""
        for rows in self._buffers.values():
            gone = [
                key
                for key, (record, entry_topic, _, _) in rows.items()
                if entry_topic == topic and record.customer_id == customer_id
            ]
            for key in gone:
                del rows[key]
        self._erasures.append(
            Erasure(customer_id, keyed_customer_hash(customer_id), erased_at_ms, topic, tables)
        )

    def detach_erasures(self) -> list[Erasure]:
        """Hand the erasures met over (with `detach`'s batch); none left here."""
        erasures, self._erasures = self._erasures, []
        return erasures

    @property
    def pending(self) -> int:
        """Records buffered and not yet durable."""
        return sum(len(rows) for rows in self._buffers.values()) + len(self._erasures)

    def clear(self) -> None:
        """Drop the buffer (the records will be redelivered from the last committed offsets)."""
        for rows in self._buffers.values():
            rows.clear()
        self._erasures.clear()

    def connect(self) -> psycopg.Connection[Any]:
        """The open connection, (re)connecting and migrating as needed."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._close_connection()
        if self._migrate:
            apply_migrations(self.conninfo)
            self._migrate = False
        conn = psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s))
        )
        # COPY finds its dumpers by type oid, and for bytea that is psycopg's Python-level
        # DB-API `Binary` dumper; the C dumper of `bytes` costs a fraction per value.
        conn.adapters.register_dumper(None, psycopg.adapters.get_dumper(bytes, PyFormat.BINARY))
        try:
            for spec in TABLES:
                conn.execute(spec.stage_ddl())
            found = conn.execute(_HAS_STATUS_VIEW).fetchone()
            self._derives_status = bool(found and found[0])
            self._waits = bool(found and found[1])
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def flush(self, *, refused: list[Refused] | None = None) -> dict[str, int]:
        """Write the buffer in one transaction; return the rows inserted per table (new ones only).

        Raises `psycopg.Error` when the database refused or is unreachable;
        the buffer is then kept for the next call. With `refused`, see `write`.
        """
        inserted = self.write(self._buffers, refused=refused, erasures=self._erasures)
        self.clear()
        return inserted

    def detach(self) -> Batch:
        """Hand the buffer over (to `write`, maybe in another thread); empty the buffer."""
        batch, self._buffers = self._buffers, {t.name: {} for t in TABLES}
        return batch

    def write(
        self,
        batch: Batch,
        *,
        refused: list[Refused] | None = None,
        erasures: list[Erasure] | None = None,
    ) -> dict[str, int]:
        """Write `batch` in one transaction; the rows inserted per table. Nothing else may use
        this sink's connection meanwhile. Raises `psycopg.Error`, the batch then uncommitted.
        `erasures` (the markers met while the batch was read) run first, in the same
        transaction.

        With `refused` (emptied first), a batch holding a row PostgreSQL refuses for what
        it holds (`refuses_record`) is split in halves, each written in its own transaction,
        down to that one record, which is appended to `refused`; everything else is written.
        Only outages (and, without `refused`, refused rows) raise.
        """
        if refused is not None:
            refused.clear()
        if not any(batch.values()) and not erasures:
            return {}
        started = time.perf_counter()
        inserted: dict[str, int] = {}
        changed: list[WorkChange] = []
        try:
            try:
                conn = self.connect()
                with conn.transaction(), conn.cursor() as cur:
                    self._erase(conn, erasures)
                    for spec in TABLES:
                        entries = batch[spec.name]
                        if entries:
                            inserted[spec.name] = self._write_table(
                                conn, cur, spec, entries.values()
                            )
                    if self._derives_status:
                        changed = _derive_status(cur, self._touched_actions(cur, batch))
            except psycopg.Error as exc:
                if refused is None or not refuses_record(exc):
                    raise
                log.warning("PostgreSQL refused a row (%s): splitting the batch", exc.sqlstate)
                if erasures:  # before any row of the batch, as in one transaction
                    with conn.transaction():
                        self._erase(conn, erasures)
                inserted = {
                    spec.name: self._write_split(spec, list(batch[spec.name].values()), refused)
                    for spec in TABLES
                    if batch[spec.name]
                }
                if self._derives_status:
                    with conn.transaction(), conn.cursor() as cur:
                        changed = _derive_status(cur, self._touched_actions(cur, batch))
        except psycopg.Error:
            SINK_ERRORS.labels(self.name).inc()
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self._close_connection()
            raise
        SINK_BATCH_DURATION.labels(self.name).observe(time.perf_counter() - started)
        for table, count in inserted.items():
            SINK_ROWS.labels(self.name, table).inc(count)
        for destination, to_acknowledge, to_done in changed:
            destination = destination if destination in DESTINATIONS else "other"
            if to_acknowledge is not None:
                ACTION_TIME_TO_ACKNOWLEDGE.labels(destination).observe(max(0.0, to_acknowledge))
            if to_done is not None:
                ACTION_TIME_TO_DONE.labels(destination).observe(max(0.0, to_done))
        return inserted

    def count_work(self) -> dict[str, tuple[int, int]]:
        """Per destination, the actions not done nor lapsed and those of them overdue; sets
        the gauges (every known destination, 0 where none). Nothing else may use the
        connection meanwhile."""
        conn = self.connect()
        rows = conn.execute(_COUNT_WORK).fetchall()
        counts = {str(d): (int(n), int(late)) for d, n, late in rows}
        for destination in sorted({*DESTINATIONS, *counts}):
            label = destination if destination in DESTINATIONS else "other"
            unfinished, overdue = counts.get(destination, (0, 0))
            ACTIONS_OPEN.labels(label).set(unfinished)
            ACTIONS_OVERDUE.labels(label).set(overdue)
        return counts

    def _erase(self, conn: psycopg.Connection[Any], erasures: list[Erasure] | None) -> None:
        """Inside the batch's transaction: each erasure's rows deleted and the erasure recorded."""
        for erasure in erasures or ():
            deleted = erase_topic_rows(
                conn,
                erasure.customer_id,
                erasure.tables,
                erasure.topic,
                erasure.customer_hash,
                erasure.erased_at_ms,
            )
            log.info(
                "erasure of customer %s… from %s: %d rows deleted",
                erasure.customer_hash[:16],
                erasure.topic,
                sum(deleted.values()),
            )
        if erasures and self._waits:
            conn.execute(_WAITING_ERASED)

    def _touched_actions(self, cur: psycopg.Cursor[Any], batch: Batch) -> list[str]:
        """Inside the batch's transaction, once its rows are written: the actions whose
        current status is derived. Those of its statuses (the ones whose action row is not
        there yet wait in `action_status_waiting`) and the waiting ones whose row has landed."""
        ids = {entry[0].action_id for entry in batch[ACTION_STATUS_HISTORY.name].values()}
        if not self._waits:  # before migration 010: every action of the batch is looked up
            ids.update(entry[0].action_id for entry in batch[ACTIONS.name].values())
            return sorted(ids)
        if ids:
            cur.execute(_WAIT, (sorted(ids),))
        elif not batch[ACTIONS.name]:  # events or decisions alone: the next actions look
            return []
        cur.execute(_LANDED)
        ids.update(str(row[0]) for row in cur.fetchall())
        return sorted(ids)

    def _write_split(self, spec: TableSpec, entries: list[Entry], refused: list[Refused]) -> int:
        """Write `entries` of one table in their own transaction; when PostgreSQL refuses a
        row, bisect until the refused records are alone (added to `refused`). Rows inserted."""
        try:
            conn = self.connect()
            with conn.transaction(), conn.cursor() as cur:
                return self._write_table(conn, cur, spec, entries)
        except psycopg.Error as exc:
            if not refuses_record(exc):
                raise
            if len(entries) == 1:
                refused.append(
                    Refused(entries[0], spec.name, type(exc).__name__, exc.sqlstate or "")
                )
                return 0
        half = len(entries) // 2
        return self._write_split(spec, entries[:half], refused) + self._write_split(
            spec, entries[half:], refused
        )

    def _write_table(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        spec: TableSpec,
        entries: Collection[Entry],
    ) -> int:
        """One table's rows, inside the batch's transaction; the rows inserted."""
        row = spec.row
        if spec.name not in self._through_staging:
            try:
                # In a savepoint: a refused COPY leaves the rest of the batch's transaction usable.
                with conn.transaction(), cur.copy(self._copy_sql[spec.name]) as copy:
                    copy.set_types(spec.copy_types)
                    write_row = copy.write_row
                    for record, topic, partition, offset in entries:
                        write_row(row(record, topic, partition, offset))
                return len(entries)
            except _CAREFUL_WAY as exc:
                log.info("%s: %s; writing this batch through staging", spec.name, exc.sqlstate)
        with cur.copy(self._stage_copy_sql[spec.name]) as copy:
            copy.set_types(spec.copy_types)
            for record, topic, partition, offset in entries:
                copy.write_row(row(without_nul(record), topic, partition, offset))
        cur.execute(self._insert_sql[spec.name])
        inserted = max(cur.rowcount, 0)
        # Redeliveries come in runs (everything after the committed offsets is read again):
        # while a batch still holds keys already stored, the next one goes this way directly.
        if inserted < len(entries):
            self._through_staging.add(spec.name)
        else:
            self._through_staging.discard(spec.name)
        return inserted

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Close the connection; buffered rows that were not flushed are dropped."""
        self._close_connection()

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _derive_status(cur: psycopg.Cursor[Any], action_ids: list[str]) -> list[WorkChange]:
    """Inside the batch's transaction: the current status columns of these actions from their
    history; what changed (for the histograms, observed once committed)."""
    if not action_ids:
        return []
    cur.execute(_NEWS, (action_ids,))
    action_ids = [row[0] for row in cur.fetchall()]
    if not action_ids:
        return []
    cur.execute(_DERIVE_STATUS, (action_ids,))
    return [(str(d), ack, done) for d, ack, done in cur.fetchall()]


def fetch_actions(conninfo: str, customer_id: str | None = None) -> list[dict[str, Any]]:
    """Actions stored in PostgreSQL (all, or one customer's), oldest first, as dicts."""
    query = "SELECT * FROM actions"
    params: tuple[Any, ...] = ()
    if customer_id is not None:
        query += " WHERE customer_id = %s"
        params = (customer_id,)
    query += " ORDER BY triggered_at, action_id"
    with (
        psycopg.connect(conninfo) as conn,
        conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
    ):
        return cur.execute(query, params).fetchall()


# --------------------------------------------------------------------------- in the consume loop


def sink_topics(settings: Settings) -> list[str]:
    """Every topic the PostgreSQL sink reads: each action topic, decisions, interactions,
    action-status."""
    topics = settings.topics
    return [*topics.actions.values(), topics.decisions, topics.interactions, topics.action_status]


def run_postgres_sink(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    topics: list[str] | None = None,
    max_backoff_s: float = 5.0,
) -> None:
    """Consume actions, decisions and interactions into PostgreSQL until `stop` is set (or SIGTERM).

    Blocks. Batches up to `settings.sinks.sink_batch_size` records or
    `settings.sinks.sink_batch_timeout_s` seconds; commits the database
    transaction, then the Kafka offsets of the batch. While the database is
    down it retries with capped exponential backoff, pauses its partitions once
    the next batch is due, and commits no offset past what is durable. Serves
    Prometheus metrics on `settings.metrics.metrics_port` when it is set.
    """
    if not settings.database.database_url:
        raise SinkConfigError("no database configured (set MOMENTS_DATABASE_URL)")
    stop = stop if stop is not None else threading.Event()
    routes, refused_topics = _routes(settings, topics or sink_topics(settings))
    writer = BatchWriter(
        settings, settings.database.database_url, stop, refused_topics, max_backoff_s
    )
    log.info("PostgreSQL sink reading %s", ", ".join(routes))
    run_sink(ConsumeLoop(settings, settings.sinks.sink_group, routes, writer, stop))


def _routes(settings: Settings, topics: list[str]) -> tuple[dict[str, Route], dict[str, str]]:
    """Per topic, how to decode it and where undecodable records go (on `interactions`:
    nowhere, the worker dead-letters them), and the dead-letter topic of the records
    PostgreSQL refuses (events too: the worker took those)."""
    registry = settings.kafka.schema_registry_url
    names = settings.topics
    routes: dict[str, Route] = {}
    refused: dict[str, str] = {}
    for topic in topics:
        if topic == names.interactions:
            routes[topic] = Route(codec_for(InteractionEvent, registry).decode, None)
            refused[topic] = names.interactions_dlq
        elif topic == names.decisions:
            routes[topic] = Route(codec_for(Decision, registry).decode, names.actions_dlq)
            refused[topic] = names.actions_dlq
        elif topic in names.actions.values():
            routes[topic] = Route(codec_for(ActionEvent, registry).decode, names.actions_dlq)
            refused[topic] = names.actions_dlq
        elif topic == names.action_status:
            routes[topic] = Route(codec_for(ActionStatus, registry).decode, names.actions_dlq)
            refused[topic] = names.actions_dlq
        else:
            raise SinkConfigError(
                f"topic {topic!r} is none of the action topics, decisions, interactions"
                " or action-status"
            )
    return routes, refused


@dataclass(slots=True)
class _InFlight:
    """A batch handed to the writer thread, with the offsets of the records it covers."""

    rows: Batch
    offsets: dict[TP, list[int]]
    erasures: list[Erasure] = field(default_factory=list)
    #: Set when the batch must not wait out an outage (a rebalance, a stop): a failed write
    #: drops it, and its records are read again from the committed offsets.
    give_up: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None


class BatchWriter:
    """The PostgreSQL sink's effect in the consume loop: batches, written by a writer thread.

    Pipelined one batch ahead: while batch k is written (and retried while the
    database is away), batch k+1 is consumed and decoded; when k+1 is due before
    k is durable, the loop pauses the partitions. A batch's records are reported
    durable after its database commit; a record PostgreSQL refuses
    (`refuses_record`) once its dead letter is acknowledged. A rebalance or a
    stop writes what was read once more, without waiting out an outage
    (eager rebalancing revokes every partition, so the whole batch goes).
    """

    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        stop: threading.Event,
        refused_topics: dict[str, str],
        max_backoff_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.max_backoff_s = max_backoff_s
        self._refused_topics = refused_topics
        self.sink = PostgresSink(conninfo, name=SINK_NAME, migrate=False)
        self._offsets: dict[TP, list[int]] = {}
        self._records = 0
        self._started: float | None = None
        self._inflight: _InFlight | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._progress = Progress()
        self._dead_letters: DeadLetters | None = None
        #: When the writer thread last counted the work for the gauges (monotonic).
        self._work_counted = float("-inf")

    def start(self, progress: Progress, dead_letters: DeadLetters) -> bool:
        self._progress, self._dead_letters = progress, dead_letters
        migrate = lambda: apply_migrations(self.sink.conninfo)  # noqa: E731
        if not retry_until("apply migrations", migrate, self.stop.is_set, _OUTAGES):
            return False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-sink-writer")
        return True

    def take(self, record: Any, message: Message) -> None:
        topic, partition, offset = str(message.topic()), message.partition(), message.offset()
        self.sink.add(record, topic=topic, partition=partition, offset=offset)
        self._track(topic, partition, offset)

    def forget(self, customer_id: str, erased_at_ms: int, message: Message) -> None:
        """An erasure marker: into the batch, in order (`PostgresSink.erase`)."""
        topic = str(message.topic())
        topics = self.settings.topics
        tables: list[str] | None = None  # interactions: every customer table
        if topic == topics.decisions:
            tables = [DECISION_TABLE]
        elif topic in topics.actions.values():
            tables = [ACTION_TABLE]
        elif topic == topics.action_status:
            tables = [STATUS_TABLE]
        self.sink.erase(customer_id, erased_at_ms, topic, tables)
        self._track(topic, message.partition(), message.offset())

    def _track(self, topic: str, partition: int | None, offset: int | None) -> None:
        offsets = self._offsets.get((topic, partition or 0))
        if offsets is None:
            offsets = self._offsets[(topic, partition or 0)] = []
        offsets.append(offset or 0)
        self._records += 1
        if self._started is None:
            self._started = time.monotonic()

    def tick(self) -> None:
        batch = self._inflight
        if batch is not None and batch.future is not None and batch.future.done():
            self._finish(batch)
        if self._inflight is None and self._due():
            self._ship()

    def room(self) -> int:
        return max(1, min(10_000, self.settings.sinks.sink_batch_size - self._records))

    def poll_timeout(self) -> float:
        timeout = POLL_S
        if self._started is not None and not self._due():
            due_in = self._started + self.settings.sinks.sink_batch_timeout_s - time.monotonic()
            timeout = min(timeout, max(0.0, due_in))
        if self._inflight is not None:
            timeout = min(timeout, _INFLIGHT_CHECK_S)
        return timeout

    def held(self, assigned: Collection[TP], paused: Collection[TP]) -> set[TP]:
        """Every partition while the next batch is due and the one before is not durable."""
        return set(assigned) if self._inflight is not None and self._due() else set()

    def revoke(self, partitions: Collection[TP]) -> None:
        self._write_all()

    def close(self) -> None:
        try:
            self._write_all()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)  # no write may outlive the connection
            self.sink.close()

    # -- batches

    def _due(self) -> bool:
        if self._started is None:
            return False
        return (
            self._records >= self.settings.sinks.sink_batch_size
            or time.monotonic() - self._started >= self.settings.sinks.sink_batch_timeout_s
        )

    def _write_all(self) -> None:
        """The batch in flight, then the current one, each without waiting out an outage."""
        if self._inflight is not None:
            self._inflight.give_up.set()
            self._finish(self._inflight)
        self._ship(give_up=True)
        if self._inflight is not None:
            self._finish(self._inflight)

    def _ship(self, *, give_up: bool = False) -> None:
        """Hand the current batch to the writer thread (nothing else is in flight)."""
        if not self._offsets or self._writer is None:
            return
        batch = _InFlight(self.sink.detach(), self._offsets, self.sink.detach_erasures())
        if give_up:
            batch.give_up.set()
        self._offsets, self._records, self._started = {}, 0, None
        batch.future = self._writer.submit(self._write, batch)
        self._inflight = batch

    def _finish(self, batch: _InFlight) -> None:
        assert batch.future is not None
        try:
            batch.future.result()  # a bug in the writer stops the sink here
        finally:
            self._inflight = None

    def _write(self, batch: _InFlight) -> None:
        """In the writer thread: write until durable (or given up), then report the records."""
        refused: list[Refused] = []
        if not retry_until(
            "write the batch to PostgreSQL",
            lambda: self.sink.write(batch.rows, refused=refused, erasures=batch.erasures),
            lambda: self.stop.is_set() or batch.give_up.is_set(),
            _OUTAGES,
            self.max_backoff_s,
        ):
            return
        if time.monotonic() - self._work_counted >= WORK_GAUGES_S:
            self._work_counted = time.monotonic()
            try:
                self.sink.count_work()
            except psycopg.Error as exc:  # the gauges wait for the next batch
                log.warning("cannot count open actions: %s", type(exc).__name__)
        late = {(str(r.entry[1]), r.entry[2], r.entry[3]) for r in refused}
        for r in refused:
            self._dead_letter(r)
        for tp, offsets in batch.offsets.items():
            if late:
                offsets = [o for o in offsets if (tp[0], tp[1], o) not in late]
            self._progress.done(tp, offsets)

    def _dead_letter(self, refused: Refused) -> None:
        """A record PostgreSQL refused, re-encoded (the batch holds decoded records), to the
        dead-letter topic of its topic; reported durable once the letter is acknowledged."""
        assert self._dead_letters is not None
        record, topic, partition, offset = refused.entry
        tp, progress = (str(topic), int(partition or 0)), self._progress
        codec = codec_for(type(record), self.settings.kafka.schema_registry_url)
        self._dead_letters.send(
            self._refused_topics[tp[0]],
            record.customer_id.encode(),
            codec.encode(record, validate=False),
            None,
            ("store", refused.error_class, refused.message),
            (tp[0], tp[1], int(offset or 0)),
            on_acked=lambda: progress.done(tp, (offset or 0,)),
        )

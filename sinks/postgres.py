"""The PostgreSQL sink: actions, decisions and interaction events from Kafka into tables.

Three parts, each usable alone:

- `apply_migrations(conninfo)` applies the versioned SQL files in
  `sinks/migrations/` once each (table `schema_version`), under an advisory
  lock so that sinks starting together do not race.
- `PostgresSink` buffers records (`add`) and writes them in one transaction
  (`flush`): a binary COPY straight into each table; only when PostgreSQL
  refuses it (a key already there after a redelivery, text it cannot hold)
  does that table's batch go through a staging table and
  `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, so a redelivered record never
  becomes a second row. A failed flush keeps its buffer for the retry.
- `run_postgres_sink(settings)` is the consumer loop: decode, batch, write,
  commit the database transaction and only then the Kafka offsets. A writer
  thread writes batch k while batch k+1 is consumed and decoded (one ahead).

It must never commit a Kafka offset past a row that is not durable, never skip
a record silently (undecodable actions and decisions go to `actions.dlq`,
database outages are waited out), and never build SQL from values: values
travel by COPY or as parameters. On `interactions` it stores exactly the
events the worker applies: records the worker refuses (undecodable, invalid,
oversized, tombstones) are left to the worker, which owns `interactions.dlq`,
so each poison record is dead-lettered once; control records (idle ticks,
erasures: `schemas.wire.classify`) are skipped too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

import orjson
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from psycopg import sql
from psycopg.adapt import PyFormat

from moments.metrics import (
    DLQ_RECORDS,
    SINK_BATCH_DURATION,
    SINK_ERRORS,
    SINK_ROWS,
    serve_metrics,
)
from moments.settings import Settings
from schemas.codec import DecodeError, SchemaValidationError, codec_for
from schemas.records import ActionEvent, Decision, InteractionEvent
from schemas.wire import RecordKind, classify, error_headers
from sinks.consume import consumer_config, is_error_event, report_lag, stop_on_signals

log = logging.getLogger(__name__)

SINK_NAME = "postgres"
Record = ActionEvent | Decision | InteractionEvent
R = TypeVar("R", ActionEvent, Decision, InteractionEvent)

# "moments" in ASCII: the advisory lock every migrating process takes.
MIGRATION_LOCK_KEY = 0x6D6F6D656E7473
_STOP_CHECK_S = 0.5
# How often the loop looks whether the batch being written is durable (to commit its offsets).
_INFLIGHT_CHECK_S = 0.05
_MIGRATION_FILE = re.compile(r"^(\d+)_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is misnamed or duplicated, or its SQL failed (names the file)."""


class SinkConfigError(ValueError):
    """The sink cannot run with these settings (names what is wrong)."""


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file: applied once, in one transaction, in version order."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in `directory` (default: the package's `sinks/migrations/`), by version.

    File names are `NNN_name.sql`; any other `.sql` file or a version used twice
    is a `MigrationError` naming the file.
    """
    folder = directory if directory is not None else resources.files("sinks") / "migrations"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: migration files are named NNN_snake_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"{entry.name}: version {version} is also used by {found[version].name}"
            )
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def apply_migrations(conninfo: str, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply every migration not yet recorded in `schema_version`; return the versions applied.

    Each migration runs in its own transaction together with its
    `schema_version` row. A session-level advisory lock serialises concurrent
    callers: the second waits, then finds nothing left to do.
    """
    pending = list(migrations) if migrations is not None else load_migrations()
    applied_now: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(_SCHEMA_VERSION_DDL)
            rows = conn.execute("SELECT version, checksum FROM schema_version").fetchall()
            done: dict[int, str] = {int(v): str(c) for v, c in rows}
            for migration in pending:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning(
                            "migration %s changed after it was applied; not applied again",
                            migration.name,
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_version (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.errors.OperationalError:
                    raise
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.name}: {exc}".strip()) from exc
                log.info("applied migration %s", migration.name)
                applied_now.append(migration.version)
        finally:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


# --------------------------------------------------------------------------- tables and rows


# A binary COPY field is only bytes: the server reads them with the column type's receive
# function and never sees the type psycopg was told. So values are built here in their wire
# form and sent with psycopg's C dumpers: a timestamptz as int8 microseconds since 2000-01-01
# (the bytes timestamptz_recv reads), a text[] or jsonb as bytea holding their binary form.
# No Python dumper runs per value, and no datetime object is made per row.
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in microseconds since 1970
_TEXT_OID = 25
# An array's header: dimensions, has-nulls flag, element type oid; then length, lower bound.
_ARRAY_HEADER = struct.Struct(">iiiii")
_INT4 = struct.Struct(">i").pack
_EMPTY_TEXT_ARRAY = struct.pack(">iii", 0, 0, _TEXT_OID)
_ONE_TEXT_HEADER = _ARRAY_HEADER.pack(1, 0, _TEXT_OID, 1, 1)
_JSONB_VERSION = b"\x01"


@dataclass(frozen=True, slots=True)
class Column:
    """A column the sink writes: its SQL type (table and staging table) and its COPY wire type."""

    name: str
    stage_type: str
    copy_type: str = ""

    @property
    def wire_type(self) -> str:
        return self.copy_type or self.stage_type


Row = tuple[Any, ...]
#: One buffered record: the record and where it came from (topic, partition, offset).
Entry = tuple[Any, str | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A target table: its key (duplicates dropped), the columns and how a record becomes a row."""

    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    row: Callable[[Any, str | None, int | None, int | None], Row]

    @property
    def stage(self) -> str:
        return f"_stage_{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def copy_types(self) -> list[str]:
        """The types to give psycopg's `copy.set_types` for rows of `row()`."""
        return [c.wire_type for c in self.columns]

    def stage_ddl(self) -> sql.Composed:
        """A session-local staging table, emptied at every commit (the target holds constraints)."""
        return sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ({columns}) ON COMMIT DELETE ROWS"
        ).format(
            stage=sql.Identifier(self.stage),
            columns=sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.stage_type))
                for c in self.columns
            ),
        )

    def copy_sql(self, *, staged: bool = False) -> sql.Composed:
        """COPY into the table itself, or into its staging table."""
        return sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)").format(
            table=sql.Identifier(self.stage if staged else self.name),
            columns=sql.SQL(", ").join(map(sql.Identifier, self.column_names)),
        )

    def insert_sql(self) -> sql.Composed:
        """From the staging table into the table, dropping rows whose key is already there."""
        columns = sql.SQL(", ").join(map(sql.Identifier, self.column_names))
        return sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage}"
            " ON CONFLICT ({key}) DO NOTHING"
        ).format(
            table=sql.Identifier(self.name),
            columns=columns,
            stage=sql.Identifier(self.stage),
            key=sql.SQL(", ").join(map(sql.Identifier, self.key)),
        )


def text_array_binary(values: list[str]) -> bytes:
    """A one-dimensional text[] in PostgreSQL's binary format (what array_recv reads)."""
    if len(values) == 1:  # most evidence lists hold one event
        data = values[0].encode()
        return _ONE_TEXT_HEADER + _INT4(len(data)) + data
    if not values:
        return _EMPTY_TEXT_ARRAY
    parts = [_ARRAY_HEADER.pack(1, 0, _TEXT_OID, len(values), 1)]
    for value in values:
        data = value.encode()
        parts += (_INT4(len(data)), data)
    return b"".join(parts)


def jsonb_binary(value: dict[str, str]) -> bytes:
    """A jsonb in PostgreSQL's binary format (version byte + JSON text), dumped by orjson."""
    try:
        return _JSONB_VERSION + orjson.dumps(value)
    except TypeError:  # what orjson refuses (e.g. non-string keys) json.dumps may still take
        return _JSONB_VERSION + json.dumps(value).encode()


def timestamptz_wire(epoch_ms: int | None) -> int | None:
    """Epoch milliseconds as the int8 a binary timestamptz is (microseconds since 2000).

    The row builders inline this arithmetic (a call per timestamp shows at 50k rows/s).
    """
    return None if epoch_ms is None else epoch_ms * 1000 - _PG_EPOCH_US


def without_nul(record: R) -> R:
    """`record` with every NUL character (which PostgreSQL text cannot hold) made U+FFFD.

    Only for records PostgreSQL refused: the common record has none, and scanning
    every field of every record would cost more than the rest of its row.
    """
    changes = {}
    for name in record.__dataclass_fields__:
        value = getattr(record, name)
        clean = _without_nul(value)
        if clean != value:
            changes[name] = clean
    return replace(record, **changes) if changes else record


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def action_row(a: ActionEvent, topic: str | None, partition: int | None, offset: int | None) -> Row:
    """The `actions` row of an action, in `ACTIONS.columns` order, as COPY wire values."""
    due_by = a.due_by
    return (
        a.action_id,
        a.customer_id,
        a.rule,
        a.action,
        a.rule_version,
        a.destination,
        a.priority,
        a.reason,
        text_array_binary(a.evidence),
        a.channel_hint,
        a.triggered_at * 1000 - _PG_EPOCH_US,
        None if due_by is None else due_by * 1000 - _PG_EPOCH_US,
        jsonb_binary(a.details),
        topic,
        partition,
        offset,
    )


def decision_row(d: Decision, topic: str | None, partition: int | None, offset: int | None) -> Row:
    """The `decisions` row of a decision, in `DECISIONS.columns` order, as COPY wire values."""
    return (
        d.decision_id,
        d.customer_id,
        d.rule,
        d.rule_version,
        d.outcome,
        d.reason,
        d.action_id,
        text_array_binary(d.evidence),
        d.decided_at * 1000 - _PG_EPOCH_US,
        topic,
        partition,
        offset,
        d.blocked_by,
    )


def event_row(
    e: InteractionEvent, topic: str | None, partition: int | None, offset: int | None
) -> Row:
    """The `interaction_events` row of an event, in `INTERACTION_EVENTS.columns` order."""
    return (
        e.event_id,
        e.customer_id,
        e.channel,
        e.type,
        e.occurred_at * 1000 - _PG_EPOCH_US,
        e.source,
        e.product,
        e.reference,
        e.amount,
        e.currency,
        e.due_date,
        e.customer_since,
        e.text,
        jsonb_binary(e.attributes),
        topic,
        partition,
        offset,
    )


_KAFKA_COLUMNS = (
    Column("kafka_topic", "text"),
    Column("kafka_partition", "int4"),
    Column("kafka_offset", "int8"),
)
_TIMESTAMPTZ = ("timestamptz", "int8")
_TEXT_ARRAY = ("text[]", "bytea")
_JSONB = ("jsonb", "bytea")

ACTIONS = TableSpec(
    "actions",
    ("action_id",),
    (
        Column("action_id", "text"),
        Column("customer_id", "text"),
        Column("rule", "text"),
        Column("action", "text"),
        Column("rule_version", "int4"),
        Column("destination", "text"),
        Column("priority", "int4"),
        Column("reason", "text"),
        Column("evidence", *_TEXT_ARRAY),
        Column("channel_hint", "text"),
        Column("triggered_at", *_TIMESTAMPTZ),
        Column("due_by", *_TIMESTAMPTZ),
        Column("details", *_JSONB),
        *_KAFKA_COLUMNS,
    ),
    action_row,
)
DECISIONS = TableSpec(
    "decisions",
    ("decision_id",),
    (
        Column("decision_id", "text"),
        Column("customer_id", "text"),
        Column("rule", "text"),
        Column("rule_version", "int4"),
        Column("outcome", "text"),
        Column("reason", "text"),
        Column("action_id", "text"),
        Column("evidence", *_TEXT_ARRAY),
        Column("decided_at", *_TIMESTAMPTZ),
        *_KAFKA_COLUMNS,
        Column("blocked_by", "text"),  # migration 004
    ),
    decision_row,
)
INTERACTION_EVENTS = TableSpec(
    "interaction_events",
    ("customer_id", "event_id"),
    (
        Column("event_id", "text"),
        Column("customer_id", "text"),
        Column("channel", "text"),
        Column("type", "text"),
        Column("occurred_at", *_TIMESTAMPTZ),
        Column("source", "text"),
        Column("product", "text"),
        Column("reference", "text"),
        Column("amount", "float8"),
        Column("currency", "text"),
        Column("due_date", "date"),
        Column("customer_since", "date"),
        Column("text", "text"),
        Column("attributes", *_JSONB),
        *_KAFKA_COLUMNS,
    ),
    event_row,
)
TABLES: tuple[TableSpec, ...] = (INTERACTION_EVENTS, DECISIONS, ACTIONS)

#: Records of one batch per table name, one per key.
Batch = dict[str, dict[tuple[str, ...], Entry]]


def table_of(record: Record) -> tuple[TableSpec, tuple[str, ...]]:
    """The table a record goes to and its key there."""
    if isinstance(record, ActionEvent):
        return ACTIONS, (record.customer_id, record.action_id)
    if isinstance(record, Decision):
        return DECISIONS, (record.customer_id, record.decision_id)
    if isinstance(record, InteractionEvent):
        return INTERACTION_EVENTS, (record.customer_id, record.event_id)
    raise TypeError(f"the PostgreSQL sink writes no {type(record).__name__}")


def record_row(
    record: Record,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> tuple[TableSpec, tuple[str, ...], Row]:
    """Table, key and row of any record the sink writes."""
    spec, key = table_of(record)
    return spec, key, spec.row(record, topic, partition, offset)


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

    @property
    def pending(self) -> int:
        """Records buffered and not yet durable."""
        return sum(len(rows) for rows in self._buffers.values())

    def clear(self) -> None:
        """Drop the buffer (the records will be redelivered from the last committed offsets)."""
        for rows in self._buffers.values():
            rows.clear()

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
        inserted = self.write(self._buffers, refused=refused)
        self.clear()
        return inserted

    def detach(self) -> Batch:
        """Hand the buffer over (to `write`, maybe in another thread); empty the buffer."""
        batch, self._buffers = self._buffers, {t.name: {} for t in TABLES}
        return batch

    def write(self, batch: Batch, *, refused: list[Refused] | None = None) -> dict[str, int]:
        """Write `batch` in one transaction; the rows inserted per table. Nothing else may use
        this sink's connection meanwhile. Raises `psycopg.Error`, the batch then uncommitted.

        With `refused` (emptied first), a batch holding a row PostgreSQL refuses for what
        it holds (`refuses_record`) is split in halves, each written in its own transaction,
        down to that one record, which is appended to `refused`; everything else is written.
        Only outages (and, without `refused`, refused rows) raise.
        """
        if refused is not None:
            refused.clear()
        if not any(batch.values()):
            return {}
        started = time.perf_counter()
        inserted: dict[str, int] = {}
        try:
            try:
                conn = self.connect()
                with conn.transaction(), conn.cursor() as cur:
                    for spec in TABLES:
                        entries = batch[spec.name]
                        if entries:
                            inserted[spec.name] = self._write_table(
                                conn, cur, spec, entries.values()
                            )
            except psycopg.Error as exc:
                if refused is None or not refuses_record(exc):
                    raise
                log.warning("PostgreSQL refused a row (%s): splitting the batch", exc.sqlstate)
                inserted = {
                    spec.name: self._write_split(spec, list(batch[spec.name].values()), refused)
                    for spec in TABLES
                    if batch[spec.name]
                }
        except psycopg.Error:
            SINK_ERRORS.labels(self.name).inc()
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self._close_connection()
            raise
        SINK_BATCH_DURATION.labels(self.name).observe(time.perf_counter() - started)
        for table, count in inserted.items():
            SINK_ROWS.labels(self.name, table).inc(count)
        return inserted

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


# --------------------------------------------------------------------------- the consumer loop


def sink_topics(settings: Settings) -> list[str]:
    """Every topic the PostgreSQL sink reads: each action topic, decisions, interactions."""
    topics = settings.topics
    return [*topics.actions.values(), topics.decisions, topics.interactions]


def run_postgres_sink(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    topics: list[str] | None = None,
    max_backoff_s: float = 5.0,
) -> None:
    """Consume actions, decisions and interactions into PostgreSQL until `stop` is set (or SIGTERM).

    Blocks. Batches up to `settings.sink_batch_size` records or
    `settings.sink_batch_timeout_s` seconds; commits the database
    transaction, then synchronously the Kafka offsets of the batch. While the
    database is down it retries with capped exponential backoff, consuming
    nothing new, and commits no offset. Serves Prometheus metrics on
    `settings.metrics_port` when it is set.
    """
    if not settings.database_url:
        raise SinkConfigError("no database configured (set MOMENTS_DATABASE_URL)")
    stop = stop if stop is not None else threading.Event()
    loop = _SinkLoop(settings, settings.database_url, stop, topics, max_backoff_s)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    with stop_on_signals(stop):
        loop.run()


class _Drop(Exception):
    """A batch cannot be written now and is dropped (it will be redelivered)."""


class DeadLettersPending(RuntimeError):
    """Dead letters of the batch are not acknowledged yet: its offsets must wait."""


@dataclass(slots=True)
class _DeadLetter:
    """An undecodable record on its way to its dead-letter topic: original bytes, error headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    acked: bool = False
    error: KafkaError | None = None


@dataclass(slots=True)
class _InFlight:
    """A batch handed to the writer thread, with the offsets and dead letters it covers."""

    rows: Batch
    offsets: dict[tuple[str, int], int]
    dead_letters: list[_DeadLetter]
    future: Future[dict[str, int]] | None = None
    discarded: bool = False
    #: Records PostgreSQL refused (filled by the write): dead-lettered before the commit.
    refused: list[Refused] = field(default_factory=list)


class _SinkLoop:
    """State of one running sink: consumer, DLQ producer, buffer and the offsets it covers."""

    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        stop: threading.Event,
        topics: list[str] | None,
        max_backoff_s: float,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.max_backoff_s = max_backoff_s
        self.topics = topics or sink_topics(settings)
        self._control_topic = settings.topics.interactions
        self._decoders: dict[str, Callable[[bytes], Record]] = {}
        self._dlq_topic: dict[str, str] = {}
        #: Dead-letter topic of a record PostgreSQL refuses (events too: the worker took them).
        self._refused_topic: dict[str, str] = {}
        registry = settings.schema_registry_url
        names = settings.topics
        for topic in self.topics:
            if topic == names.interactions:
                self._decoders[topic] = codec_for(InteractionEvent, registry).decode
                self._refused_topic[topic] = names.interactions_dlq
            elif topic == names.decisions:
                self._decoders[topic] = codec_for(Decision, registry).decode
                self._dlq_topic[topic] = self._refused_topic[topic] = names.actions_dlq
            elif topic in names.actions.values():
                self._decoders[topic] = codec_for(ActionEvent, registry).decode
                self._dlq_topic[topic] = self._refused_topic[topic] = names.actions_dlq
            else:
                raise SinkConfigError(
                    f"topic {topic!r} is none of the action topics, decisions or interactions"
                )
        self.sink = PostgresSink(conninfo, name=SINK_NAME, migrate=False)
        self.consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._dead_letters: list[_DeadLetter] = []
        self._offsets: dict[tuple[str, int], int] = {}
        # One batch at a time is written by the writer thread while the next one is decoded.
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: _InFlight | None = None
        self._batch_records = 0
        self._batch_started: float | None = None
        self._retrying = False

    # -- lifecycle

    def run(self) -> None:
        if not self._retry("apply migrations", lambda: apply_migrations(self.sink.conninfo)):
            return
        session_ms = int(self.settings.broker_session_timeout_s * 1000)
        self.consumer = Consumer(
            consumer_config(
                self.settings,
                self.settings.sink_group,
                self._on_stats,
                # A group join takes about half the session timeout on Tansu.
                **{
                    "heartbeat.interval.ms": max(100, min(3000, session_ms // 3)),
                    "enable.auto.offset.store": False,
                },
            )
        )
        self.consumer.subscribe(self.topics, on_revoke=self._on_revoke)
        log.info("PostgreSQL sink reading %s", ", ".join(self.topics))
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-sink-writer")
        try:
            while not self.stop.is_set():
                self._consume_once()
                if self._batch_due():
                    self._ship_batch()
                elif self._inflight_done():
                    self._finish_inflight()  # its offsets now, not only when the next batch ships
            self._ship_batch()
            self._finish_inflight()
        finally:
            self._writer.shutdown(wait=True)  # no write may outlive the connection
            with contextlib.suppress(KafkaException, RuntimeError):
                self.consumer.close()
            if self._producer is not None:
                self._producer.flush(10)
            self.sink.close()

    def _consume_once(self) -> None:
        assert self.consumer is not None
        # At most half a second inside librdkafka, so a stop (or a signal) is seen promptly.
        timeout = _STOP_CHECK_S
        if self._batch_started is not None:
            due = self._batch_started + self.settings.sink_batch_timeout_s - time.monotonic()
            timeout = min(timeout, max(0.0, due))
        if self._inflight is not None:
            timeout = min(timeout, _INFLIGHT_CHECK_S)
        room = max(1, min(10_000, self.settings.sink_batch_size - self._batch_records))
        for message in self.consumer.consume(num_messages=room, timeout=timeout):
            self._take(message)

    def _inflight_done(self) -> bool:
        batch = self._inflight
        return batch is not None and batch.future is not None and batch.future.done()

    def _batch_due(self) -> bool:
        if self._batch_started is None:
            return False
        return (
            self._batch_records >= self.settings.sink_batch_size
            or time.monotonic() - self._batch_started >= self.settings.sink_batch_timeout_s
        )

    # -- records

    def _take(self, message: Message) -> None:
        if is_error_event(message):
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return
        self._offsets[(topic, partition)] = offset
        self._batch_records += 1
        if self._batch_started is None:
            self._batch_started = time.monotonic()
        value = message.value()
        events = topic == self._control_topic
        if (
            events
            and classify(message.headers(), value, self.settings.max_event_bytes)
            is not RecordKind.EVENT
        ):
            # A control record, or an event the worker refuses (it owns `interactions.dlq`):
            # the timeline holds exactly the events the engine saw. Committed with the batch.
            return
        try:
            if value is None:
                raise DecodeError("empty message (tombstone)")
            record = self._decoders[topic](value)
        except (DecodeError, SchemaValidationError) as exc:
            if events:
                log.debug(
                    "%s[%s]@%s skipped (the worker dead-letters it): %s",
                    topic,
                    partition,
                    offset,
                    type(exc).__name__,
                )
                return
            self._dead_letter(message, exc)
            return
        self.sink.add(record, topic=topic, partition=partition, offset=offset)

    def _dead_letter(self, message: Message, exc: Exception) -> None:
        stage = str(getattr(exc, "stage", "decode"))
        topic = str(message.topic())
        self._dead_letters.append(
            self._letter(
                self._dlq_topic[topic],
                message.key(),
                message.value(),
                (stage, type(exc).__name__, str(exc)),
                (topic, message.partition(), message.offset()),
            )
        )

    def _dead_letter_refused(self, batch: _InFlight) -> None:
        """The records PostgreSQL refused in `batch` to their dead-letter topics (re-encoded:
        the batch holds decoded records), as dead letters the batch's commit waits for."""
        for refused in batch.refused:
            record, topic, partition, offset = refused.entry
            topic = str(topic)
            codec = codec_for(type(record), self.settings.schema_registry_url)
            batch.dead_letters.append(
                self._letter(
                    self._refused_topic[topic],
                    record.customer_id.encode(),
                    codec.encode(record, validate=False),
                    ("store", refused.error_class, refused.message),
                    (topic, partition, offset),
                )
            )
        batch.refused.clear()

    def _letter(
        self,
        dlq_topic: str,
        key: bytes | None,
        value: bytes | None,
        error: tuple[str, str, str],
        source: tuple[str, int | None, int | None],
    ) -> _DeadLetter:
        """Send a dead letter with its `moments.error.*` headers (stage, class, message, where)."""
        stage, error_class, message = error
        topic, partition, offset = source
        letter = _DeadLetter(
            topic=dlq_topic,
            key=key,
            value=value,
            headers=list(error_headers(stage, error_class, message, source)),
        )
        # The message stays in the headers: it may quote the record's values.
        log.warning("%s[%s]@%s to %s: %s", topic, partition, offset, dlq_topic, error_class)
        self._send(letter)
        DLQ_RECORDS.labels(stage).inc()
        return letter

    def _send(self, letter: _DeadLetter) -> None:
        if self._producer is None:
            self._producer = Producer(
                self.settings.kafka_config(**{"enable.idempotence": True, "linger.ms": 5})
            )

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            letter.acked = err is None
            letter.error = err

        letter.acked, letter.error = False, None
        self._producer.produce(
            letter.topic,
            key=letter.key,
            value=letter.value,
            headers=letter.headers,
            on_delivery=delivered,
        )
        self._producer.poll(0)

    def _flush_dead_letters(self, letters: list[_DeadLetter]) -> None:
        """Wait for a batch's dead letters to be acknowledged; re-send any that failed."""
        if not letters or self._producer is None:
            return
        self._producer.flush(10)
        for letter in letters:
            if letter.error is not None:
                log.warning(
                    "dead letter to %s failed (%s), sending again", letter.topic, letter.error
                )
                self._send(letter)
        waiting = sum(not letter.acked for letter in letters)
        if waiting:
            raise DeadLettersPending(f"{waiting} dead letters not acknowledged by the broker")
        letters.clear()

    # -- commit

    def _ship_batch(self) -> None:
        """Finish the batch in flight, then hand the current one to the writer thread.

        Pipelined one batch ahead: while batch k is written, batch k+1 is consumed
        and decoded; k's offsets are committed before k+1 is written, so the
        committed offsets only ever follow durable rows, in order.
        """
        if not self._finish_inflight() or not self._offsets:
            return
        assert self._writer is not None
        batch = _InFlight(self.sink.detach(), dict(self._offsets), list(self._dead_letters))
        self._reset_batch()
        batch.future = self._writer.submit(self.sink.write, batch.rows, refused=batch.refused)
        self._inflight = batch

    def _finish_inflight(self) -> bool:
        """Database commit, dead letters acknowledged, then the Kafka offsets: in this order.

        Waits for the writer; a failed write is retried here until it succeeds
        (True) or `stop` is set (False: nothing of the batch committed to Kafka).
        """
        batch = self._inflight
        if batch is None:
            return True
        assert batch.future is not None
        try:
            batch.future.result()
            written = True
        except psycopg.Error as exc:
            log.warning("writing a batch to PostgreSQL failed, retrying: %s", exc)
            written = False

        def discarded() -> bool:  # a rebalance dropped the batch while we retried
            return batch.discarded

        if not written and not self._retry(
            "write the batch to PostgreSQL",
            lambda: self.sink.write(batch.rows, refused=batch.refused),
            pause=True,
            discarded=discarded,
        ):
            return False
        if not batch.discarded:
            self._dead_letter_refused(batch)
        if not batch.discarded and not self._retry(
            "deliver dead letters",
            lambda: self._flush_dead_letters(batch.dead_letters),
            pause=True,
            discarded=discarded,
        ):
            return False
        self._inflight = None
        if not batch.discarded:
            self._commit_offsets(batch.offsets)
        return True

    def _commit_offsets(self, batch_offsets: dict[tuple[str, int], int]) -> None:
        assert self.consumer is not None
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in sorted(batch_offsets.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are durable; a redelivery of these offsets is dropped by the keys.
            log.warning("committing offsets failed (records will be redelivered): %s", exc)

    def _reset_batch(self) -> None:
        self._dead_letters.clear()
        self._offsets.clear()
        self._batch_records = 0
        self._batch_started = None

    def _retry(
        self,
        what: str,
        attempt: Callable[[], object],
        *,
        pause: bool = False,
        discarded: Callable[[], bool] | None = None,
    ) -> bool:
        """Call `attempt` until it succeeds (True) or `stop` is set (False); capped backoff.

        With `pause`, the assigned partitions are paused while retrying, so the
        consumer stays in its group without taking more records than it holds.
        When `discarded()` turns true (a rebalance dropped the batch) it stops: True.
        """
        backoff = 0.1
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    attempt()
                    return True
                except (psycopg.Error, KafkaException, OSError, DeadLettersPending) as exc:
                    if self.stop.is_set():
                        log.warning(
                            "stopping without being able to %s (%s); offsets not committed, "
                            "the records will be redelivered",
                            what,
                            exc,
                        )
                        return False
                    log.warning("cannot %s, retrying in %.1f s: %s", what, backoff, exc)
                if pause and self.consumer is not None:
                    # (Re)pause: a rebalance while we wait hands out unpaused partitions.
                    assignment = self.consumer.assignment()
                    if assignment and assignment != paused:
                        self.consumer.pause(assignment)
                        paused = assignment
                self._wait(backoff)
                if discarded is not None and discarded():
                    return True  # the batch was discarded by a rebalance: nothing left to write
                backoff = min(backoff * 2, self.max_backoff_s)
        finally:
            if paused and self.consumer is not None:
                with contextlib.suppress(KafkaException):
                    self.consumer.resume(self.consumer.assignment())

    def _wait(self, seconds: float) -> None:
        """Sleep, but keep serving the consumer (group heartbeats, rebalances) while paused."""
        deadline = time.monotonic() + seconds
        self._retrying = True
        try:
            while not self.stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if self.consumer is None:
                    self.stop.wait(left)
                    continue
                # Paused partitions deliver nothing new; a record already fetched is simply
                # added to the batch (its offset is committed only with the batch).
                for message in self.consumer.consume(
                    num_messages=100, timeout=min(left, _STOP_CHECK_S)
                ):
                    self._take(message)
        finally:
            self._retrying = False

    # -- consumer callbacks

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions go: commit what the database lets us commit now, else drop it.

        First the batch in flight (waiting for the writer), then the current one.
        Dropping is safe: nothing of it was committed to Kafka, so whoever gets
        the partitions (us included) reads them again from the committed offsets.
        """
        batch, self._inflight = self._inflight, None
        if batch is None and not self._offsets:
            return
        try:
            if self._retrying:
                raise _Drop("a write is being retried")
            if batch is not None:
                assert batch.future is not None
                batch.future.result()  # the writer is idle from here on
                self._dead_letter_refused(batch)
                self._flush_dead_letters(batch.dead_letters)
                self._commit_offsets(batch.offsets)
            if self._offsets:
                current = _InFlight({}, {}, self._dead_letters)
                self.sink.flush(refused=current.refused)
                self._dead_letter_refused(current)
                self._flush_dead_letters(self._dead_letters)
                self._commit_offsets(self._offsets)
                self._reset_batch()
            return
        except (_Drop, psycopg.Error, KafkaException, DeadLettersPending) as exc:
            log.warning("partitions revoked with an unwritten batch (%s): dropping it", exc)
        if batch is not None:
            batch.discarded = True
        self.sink.clear()
        self._reset_batch()

    def _on_stats(self, stats_json: str) -> None:
        report_lag(stats_json, self.settings.sink_group)

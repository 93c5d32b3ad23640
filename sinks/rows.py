"""How records become PostgreSQL rows: the tables the sink writes and their COPY wire form.

`TableSpec` describes a target table (key, columns, row builder, the SQL to
COPY into it or through its staging table); `ACTIONS`, `DECISIONS`,
`INTERACTION_EVENTS` and `ACTION_STATUS_HISTORY` are the four the sink fills,
`record_row` maps any record to its table, key and row. Pure: no connection is opened here, and SQL
is composed from identifiers only, never from values.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson
from psycopg import sql

from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent

Record = ActionEvent | Decision | InteractionEvent | ActionStatus
R = TypeVar("R", ActionEvent, Decision, InteractionEvent, ActionStatus)


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


def status_row(
    s: ActionStatus, topic: str | None, partition: int | None, offset: int | None
) -> Row:
    """The `action_status_history` row of a status change, in `ACTION_STATUS_HISTORY.columns`
    order (`event_key`: the event id, '' for a change no event made)."""
    return (
        s.action_id,
        s.customer_id,
        s.rule,
        s.destination,
        s.status,
        s.owner,
        s.resolution,
        s.at * 1000 - _PG_EPOCH_US,
        s.event_id,
        s.event_id or "",
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
#: Migration 008 (docs/design.md 12): one row per change of an action's status.
ACTION_STATUS_HISTORY = TableSpec(
    "action_status_history",
    ("action_id", "status", "at", "event_key"),
    (
        Column("action_id", "text"),
        Column("customer_id", "text"),
        Column("rule", "text"),
        Column("destination", "text"),
        Column("status", "text"),
        Column("owner", "text"),
        Column("resolution", "text"),
        Column("at", *_TIMESTAMPTZ),
        Column("event_id", "text"),
        Column("event_key", "text"),
        *_KAFKA_COLUMNS,
    ),
    status_row,
)
TABLES: tuple[TableSpec, ...] = (INTERACTION_EVENTS, DECISIONS, ACTIONS, ACTION_STATUS_HISTORY)

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
    if isinstance(record, ActionStatus):
        key = (record.action_id, record.status, str(record.at), record.event_id or "")
        return ACTION_STATUS_HISTORY, key
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

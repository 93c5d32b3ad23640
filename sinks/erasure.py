"""Erasing one customer from PostgreSQL: every row of a table, or what one topic brought.

`erase_topic_rows(conn, customer_id, tables, topic, ...)` is what the
PostgreSQL sink runs when it meets an erasure marker (docs/design.md 10.1), in
the transaction of its batch: the customer's rows that came from that topic
(or from no topic: written by hand), and records the completed erasure in
`erasures` (keyed hash, erasure time, rows removed). `erase_customer` deletes
every row of a customer at once (no ordering against the sink: kept for
tools and tests).

The tables are found, not listed: every base table of the schema with a
`customer_id` column (actions, decisions, interaction_events,
action_status_history today, and any a later migration adds), so a new
table cannot be forgotten by the erasure.
Views (the customer timeline) read those tables and hold nothing of their
own. All deletes commit together or not at all. Statements are composed with
`psycopg.sql`; the customer id is always a parameter, and nothing here logs
it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.types.json
from psycopg import sql

_CUSTOMER_TABLES = """
SELECT c.table_name
FROM information_schema.columns c
JOIN information_schema.tables t
  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = current_schema() AND c.column_name = 'customer_id'
  AND t.table_type = 'BASE TABLE'
ORDER BY c.table_name
"""


def customer_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every base table of the current schema with a `customer_id` column, sorted."""
    return [row[0] for row in conn.execute(_CUSTOMER_TABLES).fetchall()]


#: The table each kind of topic fills (the sink reads them; docs/design.md 7).
ACTION_TABLE = "actions"
DECISION_TABLE = "decisions"
EVENT_TABLE = "interaction_events"
#: Filled from `action-status` (docs/design.md 12), deleted by that topic's marker.
STATUS_TABLE = "action_status_history"

_RECORD_ERASURE = """
INSERT INTO erasures (customer_hash, erased_at_ms, topic, removed)
VALUES (%s, %s, %s, %s)
ON CONFLICT (customer_hash, erased_at_ms, topic) DO NOTHING
"""


def erase_topic_rows(
    conn: psycopg.Connection[Any],
    customer_id: str,
    tables: list[str] | None,
    topic: str,
    customer_hash: str,
    erased_at_ms: int,
) -> dict[str, int]:
    """Inside the caller's transaction: delete the customer's rows of `tables` that came from
    `topic` (or from no topic); `tables` None: every customer table but the four the sink
    fills per topic, wholly (what an erasure record on `interactions` also removes). Then
    record the erasure (once: a redelivered marker deletes nothing and records nothing new).
    Returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    if tables is None:
        per_topic = {ACTION_TABLE, DECISION_TABLE, EVENT_TABLE, STATUS_TABLE}
        for table in customer_tables(conn):
            if table not in per_topic:
                cursor = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE customer_id = %s").format(sql.Identifier(table)),
                    (customer_id,),
                )
                deleted[table] = cursor.rowcount
        tables = [EVENT_TABLE]
    for table in tables:
        cursor = conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE customer_id = %s"
                " AND (kafka_topic = %s OR kafka_topic IS NULL)"
            ).format(sql.Identifier(table)),
            (customer_id, topic),
        )
        deleted[table] = deleted.get(table, 0) + cursor.rowcount
    conn.execute(
        _RECORD_ERASURE, (customer_hash, erased_at_ms, topic, psycopg.types.json.Jsonb(deleted))
    )
    return deleted


def erasure_records(
    conninfo: str, customer_hash: str, erased_at_ms: int
) -> dict[str, dict[str, int]]:
    """The sink's recorded erasures of one erasure: topic -> rows removed per table."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT topic, removed FROM erasures WHERE customer_hash = %s AND erased_at_ms = %s",
            (customer_hash, erased_at_ms),
        ).fetchall()
    return {
        str(topic): {str(k): int(v) for k, v in dict(removed).items()} for topic, removed in rows
    }


def erase_customer(conninfo: str, customer_id: str) -> dict[str, int]:
    """Delete every row of CUSTOMER_ID in one transaction; rows deleted per table."""
    deleted: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn, conn.transaction():
        for table in customer_tables(conn):
            cursor = conn.execute(
                sql.SQL("DELETE FROM {} WHERE customer_id = %s").format(sql.Identifier(table)),
                (customer_id,),
            )
            deleted[table] = cursor.rowcount
    return deleted

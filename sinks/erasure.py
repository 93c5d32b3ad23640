"""Erasing one customer from PostgreSQL (`moments forget`): every row, one transaction.

The tables are found, not listed: every base table of the schema with a
`customer_id` column (actions, decisions, interaction_events today, and any a
later migration adds), so a new table cannot be forgotten by the erasure.
Views (the customer timeline) read those tables and hold nothing of their
own. All deletes commit together or not at all. Statements are composed with
`psycopg.sql`; the customer id is always a parameter, and nothing here logs
it.
"""

from __future__ import annotations

from typing import Any

import psycopg
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

"""A customer's relationship strength, read from the `customer_relationship*` views.

The ledger of docs/design.md 5.9 as the engine saw it on each action it fired:
positives, negatives and their balance over the ledger window, now (on the latest
action) and over time. Used by the read API (`GET /v1/customers/{id}/relationship`)
and `moments timeline`. Read-only: it never writes to the database.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from sinks.timeline import MAX_LIMIT, iso_utc

# The latest `limit` points of the history, returned oldest first.
_HISTORY = """
SELECT * FROM (
    SELECT at, action_id, rule, positives, negatives, balance
    FROM customer_relationship_history
    WHERE customer_id = %(customer_id)s
    ORDER BY at DESC, action_id DESC
    LIMIT %(limit)s
) latest
ORDER BY at, action_id
"""


def query_relationship(
    conn: psycopg.Connection[Any], customer_id: str, limit: int = 200
) -> dict[str, Any] | None:
    """`{"customer_id", "at", "positives", "negatives", "balance", "in_deficit", "history"}`
    (history: the latest `limit` points, oldest first); None for a customer with no action."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_HISTORY, {"customer_id": customer_id, "limit": limit})
        rows = cur.fetchall()
    if not rows:
        return None
    history = [
        {
            "at": iso_utc(row["at"]),
            "action_id": row["action_id"],
            "rule": row["rule"],
            "positives": row["positives"],
            "negatives": row["negatives"],
            "balance": row["balance"],
        }
        for row in rows
    ]
    now = history[-1]
    balance = now["balance"]
    return {
        "customer_id": customer_id,
        "at": now["at"],
        "positives": now["positives"],
        "negatives": now["negatives"],
        "balance": balance,
        "in_deficit": balance is not None and balance < 0,
        "history": history,
    }


def customer_relationship(
    conninfo: str, customer_id: str, limit: int = 200
) -> dict[str, Any] | None:
    """`query_relationship` over a new connection."""
    with psycopg.connect(conninfo) as conn:
        return query_relationship(conn, customer_id, limit)


def relationship_line(relationship: dict[str, Any]) -> str:
    """One line for people: the current positives, negatives and balance."""
    balance = relationship["balance"]
    counts = ""
    if relationship["positives"] is not None and relationship["negatives"] is not None:
        counts = f"{relationship['positives']} positive, {relationship['negatives']} negative; "
    state = "in deficit" if relationship["in_deficit"] else "healthy"
    signed = "unknown" if balance is None else f"{balance:+d}"
    return f"Relationship strength on {relationship['at'][:10]}: {counts}balance {signed} ({state})"

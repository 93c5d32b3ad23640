"""One customer's story in time order, read from the `customer_timeline` view.

Events from every channel, the engine's decisions and the actions it fired,
with the relationship balance where an action carries it. Used by
`moments timeline` (a rich table) and by the read API (JSON). Read-only: it
never writes to the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from rich.markup import escape
from rich.table import Table
from rich.text import Text

#: Columns of each timeline entry, in this order (the view's columns).
TIMELINE_COLUMNS = (
    "customer_id",
    "at",
    "kind",
    "id",
    "channel",
    "name",
    "summary",
    "source",
    "rule",
    "destination",
    "priority",
    "outcome",
    "reference",
    "relationship_balance",
)

# The most recent entries, returned oldest first; at equal times an event comes before the
# decision it caused and the decision before its action.
_QUERY = sql.SQL("""
SELECT * FROM (
    SELECT {columns},
           CASE kind WHEN 'event' THEN 0 WHEN 'decision' THEN 1 ELSE 2 END AS kind_rank
    FROM customer_timeline
    WHERE customer_id = %(customer_id)s
    ORDER BY at DESC, kind_rank DESC, id DESC
    LIMIT %(limit)s
) latest
ORDER BY at, kind_rank, id
""").format(columns=sql.SQL(", ").join(map(sql.Identifier, TIMELINE_COLUMNS)))

MAX_LIMIT = 10_000


def iso_utc(at: datetime) -> str:
    """A timestamp as ISO-8601 UTC with milliseconds, the JSON form used everywhere."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def _json_number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def query_timeline(
    conn: psycopg.Connection[Any], customer_id: str, limit: int = 200
) -> list[dict[str, Any]]:
    """The customer's latest `limit` timeline entries, oldest first, as JSON-ready dicts."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_QUERY, {"customer_id": customer_id, "limit": limit})
        rows = cur.fetchall()
    entries: list[dict[str, Any]] = []
    for row in rows:
        entry = {name: row[name] for name in TIMELINE_COLUMNS}
        entry["at"] = iso_utc(row["at"])
        entry["relationship_balance"] = _json_number(row["relationship_balance"])
        entries.append(entry)
    return entries


def customer_timeline(conninfo: str, customer_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The customer's latest `limit` events, decisions and actions, oldest first.

    Each entry has the keys of `TIMELINE_COLUMNS`; `at` is an ISO-8601 UTC
    string, `relationship_balance` a number or None.
    """
    with psycopg.connect(conninfo) as conn:
        return query_timeline(conn, customer_id, limit)


_KIND_STYLE = {"event": "cyan", "decision": "dim", "action": "bold green"}


def timeline_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    """Timeline entries as a rich table: time, kind, channel, what happened, balance."""
    customer = rows[0]["customer_id"] if rows else ""
    # Customer text is shown as text, never read as rich markup (`[/b]`, `[link=...]`).
    table = Table(title=title or f"Timeline of customer {escape(str(customer))}", show_lines=False)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("channel", no_wrap=True)
    table.add_column("what", overflow="fold")
    table.add_column("balance", justify="right", no_wrap=True)
    for row in rows:
        at = str(row["at"]).replace("T", " ")[:19]
        kind = str(row["kind"])
        balance = row.get("relationship_balance")
        table.add_row(
            at,
            f"[{_KIND_STYLE.get(kind, '')}]{kind}[/]" if kind in _KIND_STYLE else kind,
            Text(str(row.get("channel") or "")),
            Text(str(row.get("summary") or "")),
            "" if balance is None else f"{balance:+g}",
        )
    return table

"""One customer's story in time order, read from the `customer_timeline` view.

Events from every channel, the engine's decisions and the actions it fired,
with the relationship balance where an action carries it. Used by
`moments timeline` (a rich table) and by the read API (JSON). Read-only: it
never writes to the database.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from rich.table import Table

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

_KIND_RANK = sql.SQL("CASE kind WHEN 'event' THEN 0 WHEN 'decision' THEN 1 ELSE 2 END")

# The most recent entries (before the cursor, if any), returned oldest first; at equal times an
# event comes before the decision it caused and the decision before its action.
_QUERY = sql.SQL("""
SELECT * FROM (
    SELECT {columns}, {rank} AS kind_rank
    FROM customer_timeline
    WHERE customer_id = %(customer_id)s
      AND (%(before_at)s::timestamptz IS NULL
           OR (at, {rank}, id) < (%(before_at)s::timestamptz, %(before_rank)s, %(before_id)s))
    ORDER BY at DESC, kind_rank DESC, id DESC
    LIMIT %(limit)s
) latest
ORDER BY at, kind_rank, id
""").format(columns=sql.SQL(", ").join(map(sql.Identifier, TIMELINE_COLUMNS)), rank=_KIND_RANK)

MAX_LIMIT = 10_000


def iso_utc(at: datetime) -> str:
    """A timestamp as ISO-8601 UTC with milliseconds, the JSON form used everywhere."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def _json_number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


class BadCursor(ValueError):
    """A `before` cursor that is neither one this API handed out nor an ISO-8601 time."""


def page_cursor(at: str, kind: str, entry_id: str) -> str:
    """The opaque cursor of an entry: the next page holds the entries strictly before it."""
    raw = json.dumps([at, _KINDS.index(kind) if kind in _KINDS else 2, entry_id])
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def parse_cursor(text: str) -> tuple[datetime, int, str]:
    """(at, kind rank, id) of a cursor; an ISO-8601 time means everything before that time."""
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        if at.tzinfo is None:
            raise BadCursor("a time needs its UTC offset, e.g. 2026-01-02T03:04:05Z")
        return at, -1, ""  # rank -1 sorts before every entry at that time: strictly before it
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at_text, rank, entry_id = json.loads(raw)
        return datetime.fromisoformat(at_text), int(rank), str(entry_id)
    except (ValueError, TypeError) as exc:
        raise BadCursor("not a cursor from a previous page nor an ISO-8601 time") from exc


_KINDS = ("event", "decision", "action")


def query_timeline(
    conn: psycopg.Connection[Any],
    customer_id: str,
    limit: int = 200,
    before: tuple[datetime, int, str] | None = None,
) -> list[dict[str, Any]]:
    """The customer's latest `limit` timeline entries (before the cursor `before`, if any),
    oldest first, as JSON-ready dicts."""
    entries: list[dict[str, Any]] = []
    for row in _page(conn, _QUERY, customer_id, limit, before):
        entry = {name: row[name] for name in TIMELINE_COLUMNS}
        entry["at"] = iso_utc(row["at"])
        entry["relationship_balance"] = _json_number(row["relationship_balance"])
        entries.append(entry)
    return entries


def _page(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    customer_id: str,
    limit: int,
    before: tuple[datetime, int, str] | None,
) -> list[dict[str, Any]]:
    """Rows of a page query: `limit` checked, the cursor's parts as parameters."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    at, rank, entry_id = before if before is not None else (None, 0, "")
    params = {
        "customer_id": customer_id,
        "limit": limit,
        "before_at": at,
        "before_rank": rank,
        "before_id": entry_id,  # "" for a plain time: every row at that time sorts after it
    }
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


#: Columns of each decision in the trace, in this order; `blocked_by` where the table has it.
DECISION_COLUMNS = (
    "decision_id",
    "rule",
    "rule_version",
    "outcome",
    "reason",
    "action_id",
    "blocked_by",
    "evidence",
    "decided_at",
)

_HAS_BLOCKED_BY = """
SELECT EXISTS (
    SELECT 1 FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'decisions'
      AND column_name = 'blocked_by'
)
"""


def query_decisions(
    conn: psycopg.Connection[Any],
    customer_id: str,
    limit: int = 200,
    before: tuple[datetime, int, str] | None = None,
) -> list[dict[str, Any]]:
    """The customer's latest `limit` decisions (before the cursor, if any), oldest first.

    `blocked_by` is read where the table has the column (migration 004), else None.
    """
    row = conn.execute(_HAS_BLOCKED_BY).fetchone()
    blocked_by = sql.Identifier("blocked_by") if row and row[0] else sql.SQL("NULL::text")
    query = sql.SQL("""
SELECT * FROM (
    SELECT decision_id, rule, rule_version, outcome, reason, action_id,
           {blocked_by} AS blocked_by, evidence, decided_at
    FROM decisions
    WHERE customer_id = %(customer_id)s
      AND (%(before_at)s::timestamptz IS NULL
           OR (decided_at, decision_id) < (%(before_at)s::timestamptz, %(before_id)s))
    ORDER BY decided_at DESC, decision_id DESC
    LIMIT %(limit)s
) latest
ORDER BY decided_at, decision_id
""").format(blocked_by=blocked_by)
    decisions: list[dict[str, Any]] = []
    for found in _page(conn, query, customer_id, limit, before):
        decision = {name: found[name] for name in DECISION_COLUMNS}
        decision["evidence"] = list(found["evidence"] or [])
        decision["decided_at"] = iso_utc(found["decided_at"])
        decisions.append(decision)
    return decisions


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
    table = Table(title=title or f"Timeline of customer {customer}", show_lines=False)
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
            str(row.get("channel") or ""),
            str(row.get("summary") or ""),
            "" if balance is None else f"{balance:+g}",
        )
    return table

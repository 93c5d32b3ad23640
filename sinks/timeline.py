"""One customer's story in time order, read from the `customer_timeline` view.

Events from every channel, the engine's decisions and the actions it fired,
with the relationship balance where an action carries it, and each action's
status, owner and lateness (docs/design.md 12: `overdue`, and `late_s`, the
seconds past due_by it was done), with a `status` entry when it went overdue
or lapsed. Used by
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
    "status",
    "owner",
    "due_by",
    "overdue",
    "late_s",
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
        entry["due_by"] = None if row["due_by"] is None else iso_utc(row["due_by"])
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


#: Columns of each action the read API lists, in this order (docs/design.md 12), then
#: `overdue` (past due_by and not done) and `late_s` (seconds past due_by it was done).
ACTION_COLUMNS = (
    "action_id",
    "rule",
    "action",
    "destination",
    "priority",
    "reason",
    "channel_hint",
    "triggered_at",
    "due_by",
    "status",
    "owner",
    "acknowledged_at",
    "done_at",
    "resolution",
    "overdue_at",
)
_ACTION_TIMES = ("triggered_at", "due_by", "acknowledged_at", "done_at", "overdue_at")
#: The statuses `query_actions` filters by; `overdue` is every action past due and not done.
ACTION_STATUS_FILTERS = ("open", "acknowledged", "reassigned", "overdue", "done", "lapsed")
_OVERDUE = sql.SQL(
    "(overdue_at IS NOT NULL AND done_at IS NULL AND status IS DISTINCT FROM 'lapsed')"
)


def query_actions(
    conn: psycopg.Connection[Any],
    customer_id: str,
    limit: int = 200,
    before: tuple[datetime, int, str] | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The customer's latest `limit` actions (before the cursor, if any; with `status`, only
    those: `overdue` means past due and not done, whatever the latest change), oldest
    first, each with its status, owner, `overdue` and `late_s`."""
    if status is not None and status not in ACTION_STATUS_FILTERS:
        raise ValueError(f"status must be one of {', '.join(ACTION_STATUS_FILTERS)}")
    only: sql.Composable
    if status is None:
        only = sql.SQL("TRUE")
    elif status == "overdue":
        only = _OVERDUE
    else:
        only = sql.SQL("status = {}").format(sql.Literal(status))
    query = sql.SQL("""
SELECT * FROM (
    SELECT {columns}, {overdue} AS overdue,
           CASE WHEN done_at IS NOT NULL AND due_by IS NOT NULL
                THEN greatest(0, floor(extract(epoch FROM done_at - due_by)))::bigint
           END AS late_s
    FROM actions
    WHERE customer_id = %(customer_id)s AND {only}
      AND (%(before_at)s::timestamptz IS NULL
           OR (triggered_at, action_id) < (%(before_at)s::timestamptz, %(before_id)s))
    ORDER BY triggered_at DESC, action_id DESC
    LIMIT %(limit)s
) latest
ORDER BY triggered_at, action_id
""").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, ACTION_COLUMNS)), overdue=_OVERDUE, only=only
    )
    actions: list[dict[str, Any]] = []
    for found in _page(conn, query, customer_id, limit, before):
        action = {name: found[name] for name in (*ACTION_COLUMNS, "overdue", "late_s")}
        for name in _ACTION_TIMES:
            action[name] = None if found[name] is None else iso_utc(found[name])
        actions.append(action)
    return actions


def customer_timeline(conninfo: str, customer_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The customer's latest `limit` events, decisions and actions, oldest first.

    Each entry has the keys of `TIMELINE_COLUMNS`; `at` is an ISO-8601 UTC
    string, `relationship_balance` a number or None.
    """
    with psycopg.connect(conninfo) as conn:
        return query_timeline(conn, customer_id, limit)


_KIND_STYLE = {
    "event": "cyan",
    "decision": "dim",
    "action": "bold green",
    "status": "yellow",
}
#: Decisions an agent should notice: waiting for the contact cap, or never sent (expired).
_OUTCOME_STYLE = {"deferred": "yellow", "held_out": "magenta"}


def lateness(seconds: int) -> str:
    """Seconds past due as a short span: "40 min", "5 h", "2 d 3 h"."""
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} h"
    return f"{hours // 24} d {hours % 24} h" if hours % 24 else f"{hours // 24} d"


def work_state(row: dict[str, Any]) -> str:
    """An action entry's status, owner and lateness in words (docs/design.md 12), e.g.
    "done by bo, 2 h late" or "acknowledged by ana, overdue"; "" for other entries."""
    status = row.get("status")
    if row.get("kind") != "action" or not status:
        return ""
    text = str(status)
    if row.get("owner"):
        text += f" by {row['owner']}" if status == "done" else f" ({row['owner']})"
    late = row.get("late_s")
    if status == "done" and late is not None:
        text += f", {lateness(int(late))} late" if late > 0 else ", on time"
    elif row.get("overdue") and status != "overdue":
        text += ", overdue"
    return text


def timeline_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    """Timeline entries as a rich table: time, kind, channel, what happened, the action's
    status (owner, lateness), balance."""
    customer = rows[0]["customer_id"] if rows else ""
    # Customer text is shown as text, never read as rich markup (`[/b]`, `[link=...]`).
    table = Table(title=title or f"Timeline of customer {escape(str(customer))}", show_lines=False)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("channel", no_wrap=True)
    table.add_column("what", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("balance", justify="right", no_wrap=True)
    for row in rows:
        at = str(row["at"]).replace("T", " ")[:19]
        kind = str(row["kind"])
        balance = row.get("relationship_balance")
        summary = str(row.get("summary") or "")
        style = _OUTCOME_STYLE.get(str(row.get("outcome")))
        if kind == "decision" and summary.endswith("(expired)"):
            style = "red"
        table.add_row(
            at,
            f"[{_KIND_STYLE.get(kind, '')}]{kind}[/]" if kind in _KIND_STYLE else kind,
            Text(str(row.get("channel") or "")),
            Text(summary, style=style or ""),
            Text(work_state(row), style="red" if row.get("overdue") else ""),
            "" if balance is None else f"{balance:+g}",
        )
    return table

"""What the desk reads from PostgreSQL: a destination's queue, one customer, one action.

Read-only, like the read API: the desk changes an action only by publishing a
status event (docs/design.md 12), never by writing here. The queue query is the
one the indexes of migration 009 serve (`actions_desk_queue`, `actions_desk_mine`):
keep its WHERE and ORDER BY in step with them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TypeVar

import psycopg
from psycopg.rows import dict_row

from schemas.records import (
    STATUS_ACKNOWLEDGED,
    STATUS_OPEN,
    STATUS_OVERDUE,
    STATUS_REASSIGNED,
)
from sinks.pool import ReadPool

#: The statuses of work still to do: the queue's rows (the partial indexes' predicate).
UNFINISHED: Final = (STATUS_OPEN, STATUS_ACKNOWLEDGED, STATUS_REASSIGNED, STATUS_OVERDUE)
#: The span of the balance chart.
BALANCE_DAYS: Final = 90

T = TypeVar("T")


class DeskSource(Protocol):
    """Where the desk reads (PostgreSQL in production, lists in unit tests)."""

    def queue(
        self, destination: str, owner: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]: ...
    def queue_counts(self, destination: str, owner: str | None) -> dict[str, int]: ...
    def action(self, action_id: str) -> dict[str, Any] | None: ...
    def customer(self, customer_id: str) -> dict[str, Any]: ...
    def open(self) -> None: ...
    def close(self) -> None: ...


_STATUS_LIST = "('open', 'acknowledged', 'reassigned', 'overdue')"

# Overdue first, then priority (higher first), then due_by (none last), then the id: the
# order of the indexes of migration 009, so a page is an index range scan.
_QUEUE = f"""
SELECT action_id, customer_id, rule, action, priority, reason, due_by, triggered_at,
       status, owner, overdue_at
FROM actions
WHERE destination = %(destination)s AND status IN {_STATUS_LIST}
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
ORDER BY (overdue_at IS NULL), priority DESC, due_by, action_id
LIMIT %(limit)s OFFSET %(offset)s
"""

_COUNTS = f"""
SELECT count(*) AS open, count(*) FILTER (WHERE overdue_at IS NOT NULL) AS overdue
FROM actions
WHERE destination = %(destination)s AND status IN {_STATUS_LIST}
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
"""

_ACTION = """
SELECT action_id, customer_id, rule, action, destination, priority, reason, due_by,
       triggered_at, status, owner, resolution, done_at, overdue_at
FROM actions WHERE action_id = %(action_id)s
"""

_TIMELINE = """
SELECT * FROM (
    SELECT at, kind, id, channel, name, summary, rule, destination, priority, outcome,
           reference, status, owner, due_by, overdue
    FROM customer_timeline
    WHERE customer_id = %(customer_id)s
    ORDER BY at DESC, id DESC
    LIMIT %(limit)s
) latest
ORDER BY at, id
"""

_DECISIONS = """
SELECT decision_id, rule, outcome, reason, action_id, blocked_by, decided_at
FROM decisions
WHERE customer_id = %(customer_id)s
ORDER BY decided_at DESC, decision_id DESC
LIMIT %(limit)s
"""

_CUSTOMER_ACTIONS = f"""
SELECT action_id, rule, action, destination, priority, reason, due_by, triggered_at,
       status, owner, overdue_at
FROM actions
WHERE customer_id = %(customer_id)s AND status IN {_STATUS_LIST}
ORDER BY (overdue_at IS NULL), priority DESC, due_by, action_id
LIMIT 50
"""

# Products held: the latest opening or closing event of each product.
_PRODUCTS = """
SELECT DISTINCT ON (product) product, type, occurred_at
FROM interaction_events
WHERE customer_id = %(customer_id)s AND product IS NOT NULL
  AND type IN ('account_opened', 'account_closed')
ORDER BY product, occurred_at DESC
"""

_PREFERENCES = """
SELECT attributes, occurred_at
FROM interaction_events
WHERE customer_id = %(customer_id)s AND type = 'contact_preferences_changed'
ORDER BY occurred_at DESC
LIMIT 1
"""

_BALANCE = """
WITH latest AS (
    SELECT max(at) AS at FROM customer_relationship_history WHERE customer_id = %(customer_id)s
)
SELECT h.at, h.balance
FROM customer_relationship_history h, latest
WHERE h.customer_id = %(customer_id)s AND h.balance IS NOT NULL
  AND h.at > latest.at - %(span)s::interval
ORDER BY h.at, h.action_id
"""

TIMELINE_LIMIT: Final = 100
DECISION_LIMIT: Final = 50


def read_customer(conn: psycopg.Connection[Any], customer_id: str) -> dict[str, Any]:
    """Everything the customer page shows, as plain dicts (empty lists for a stranger)."""
    params: dict[str, Any] = {
        "customer_id": customer_id,
        "limit": TIMELINE_LIMIT,
        "span": timedelta(days=BALANCE_DAYS),
    }
    with conn.cursor(row_factory=dict_row) as cur:
        timeline = cur.execute(_TIMELINE, params).fetchall()
        decisions = cur.execute(_DECISIONS, {**params, "limit": DECISION_LIMIT}).fetchall()
        actions = cur.execute(_CUSTOMER_ACTIONS, params).fetchall()
        products = cur.execute(_PRODUCTS, params).fetchall()
        preferences = cur.execute(_PREFERENCES, params).fetchone()
        balance = cur.execute(_BALANCE, params).fetchall()
    decisions.reverse()  # oldest first, like the timeline
    return {
        "timeline": timeline,
        "decisions": decisions,
        "actions": actions,
        "products": [
            {"product": row["product"], "since": row["occurred_at"]}
            for row in products
            if row["type"] == "account_opened"
        ],
        "preferences": dict(preferences["attributes"]) if preferences else {},
        "preferences_at": preferences["occurred_at"] if preferences else None,
        "owners": sorted({row["owner"] for row in actions if row["owner"]}),
        "balance": [(row["at"], int(row["balance"])) for row in balance],
    }


class PostgresDesk(ReadPool):
    """The desk's reads through a small psycopg pool of its own."""

    def queue(
        self, destination: str, owner: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        params = {"destination": destination, "owner": owner, "limit": limit, "offset": offset}

        def read(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(_QUEUE, params).fetchall()

        return self.read(read)

    def queue_counts(self, destination: str, owner: str | None) -> dict[str, int]:
        params = {"destination": destination, "owner": owner}

        def read(conn: psycopg.Connection[Any]) -> dict[str, int]:
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(_COUNTS, params).fetchone()
            return {"open": int(row["open"]), "overdue": int(row["overdue"])} if row else {}

        return self.read(read)

    def action(self, action_id: str) -> dict[str, Any] | None:
        def read(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(_ACTION, {"action_id": action_id}).fetchone()

        return self.read(read)

    def customer(self, customer_id: str) -> dict[str, Any]:
        return self.read(lambda conn: read_customer(conn, customer_id))


def due_text(due_by: datetime | None, overdue_at: datetime | None, now: datetime) -> str:
    """ "due in 3 h", "overdue by 2 d" or "no due time", from DUE_BY and NOW."""
    if due_by is None:
        return "overdue" if overdue_at is not None else "no due time"
    seconds = (due_by - now).total_seconds()
    span = _span(abs(seconds))
    if seconds < 0 or overdue_at is not None:
        return f"overdue by {span}" if seconds < 0 else "overdue"
    return f"due in {span}"


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} d"

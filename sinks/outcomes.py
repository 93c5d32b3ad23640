"""The rows `moments report uplift --database` needs, read from the PostgreSQL sink's tables.

`fired` / `held_out` decisions of the given rules, the interaction events of the
given types and the rules' actions with their done times, as plain tuples (times in
epoch milliseconds). Read-only, streamed with
server-side cursors so a large history never sits in memory twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

_DECISIONS = """
SELECT customer_id, rule, outcome,
       (extract(epoch FROM decided_at) * 1000)::bigint, decision_id
FROM decisions
WHERE outcome IN ('fired', 'held_out') AND rule = ANY(%(rules)s)
"""

_EVENTS = """
SELECT customer_id, type, (extract(epoch FROM occurred_at) * 1000)::bigint,
       channel, attributes->>'submitted_by'
FROM interaction_events
WHERE type = ANY(%(types)s)
"""


_ACTIONS = """
SELECT customer_id, rule, (extract(epoch FROM triggered_at) * 1000)::bigint,
       (extract(epoch FROM done_at) * 1000)::bigint
FROM actions
WHERE rule = ANY(%(rules)s)
"""


def _stream(conn: psycopg.Connection[Any], name: str, query: str, params: dict[str, Any]) -> Any:
    with conn.cursor(name=name) as cur:
        cur.itersize = 10_000
        cur.execute(query, params)
        yield from cur


def decision_rows(
    conn: psycopg.Connection[Any], rules: list[str]
) -> Iterator[tuple[str, str, str, int, str]]:
    """(customer_id, rule, outcome, decided_at ms, decision_id) of fired / held_out decisions."""
    return _stream(conn, "uplift_decisions", _DECISIONS, {"rules": rules})  # type: ignore[no-any-return]


def event_rows(
    conn: psycopg.Connection[Any], types: list[str]
) -> Iterator[tuple[str, str, int, str, str | None]]:
    """(customer_id, type, occurred_at ms, channel, attributes.submitted_by) of the
    interaction events of these types."""
    return _stream(conn, "uplift_events", _EVENTS, {"types": types})  # type: ignore[no-any-return]


def action_rows(
    conn: psycopg.Connection[Any], rules: list[str]
) -> Iterator[tuple[str, str, int, int | None]]:
    """(customer_id, rule, triggered_at ms, done_at ms or None) of the actions of these
    rules (docs/design.md 12: done_at is set only by a `done` before the action lapsed)."""
    return _stream(conn, "uplift_actions", _ACTIONS, {"rules": rules})  # type: ignore[no-any-return]

"""Action statuses in PostgreSQL (docs/design.md 12): history rows and the current status.

The same rows whichever the sink met first, the action or its statuses (and in
any batching); a redelivered status is one row; erasure markers of
`action-status` delete the history; the histograms are observed once; the
gauges count what is not done; the timeline view shows status, owner and
lateness. `PostgresSink` against a real PostgreSQL (no broker).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import psycopg

from common.metrics import (
    ACTION_TIME_TO_ACKNOWLEDGE,
    ACTION_TIME_TO_DONE,
    ACTIONS_OPEN,
    ACTIONS_OVERDUE,
)
from common.privacy import keyed_customer_hash
from schemas.records import ActionEvent, ActionStatus
from sinks.erasure import STATUS_TABLE
from sinks.migrate import apply_migrations, load_migrations
from sinks.postgres import PostgresSink
from sinks.timeline import query_actions, query_timeline
from tests.support.erasure import another_database

T0 = 1_767_323_045_000  # 2026-01-02T03:04:05Z
HOUR = 3_600_000
STATUS_TOPIC = "action-status"


def fired(n: int, customer: str = "c-1", destination: str = "care") -> ActionEvent:
    return ActionEvent(
        action_id=f"a-{n}",
        customer_id=customer,
        rule="case_follow_up",
        action="case_follow_up",
        rule_version=1,
        destination=destination,
        priority=60,
        reason="A case waits for an answer.",
        evidence=[f"e-{n}"],
        channel_hint="call",
        triggered_at=T0,
        due_by=T0 + 24 * HOUR,
    )


def change(
    n: int,
    status: str,
    at: int,
    *,
    owner: str | None = None,
    resolution: str | None = None,
    event_id: str | None = None,
    customer: str = "c-1",
    destination: str = "care",
) -> ActionStatus:
    return ActionStatus(
        action_id=f"a-{n}",
        customer_id=customer,
        rule="case_follow_up",
        destination=destination,
        status=status,
        owner=owner,
        resolution=resolution,
        at=at,
        event_id=event_id,
    )


def story(n: int = 1) -> list[ActionStatus]:
    """Opened, acknowledged by ana, overdue, reassigned to bo, done 2 h late."""
    return [
        change(n, "open", T0),
        change(n, "acknowledged", T0 + HOUR, owner="ana", event_id=f"ack-{n}"),
        change(n, "overdue", T0 + 24 * HOUR, owner="ana"),
        change(n, "reassigned", T0 + 25 * HOUR, owner="bo", event_id=f"re-{n}"),
        change(n, "done", T0 + 26 * HOUR, owner="bo", resolution="completed", event_id=f"d-{n}"),
    ]


CURRENT = (
    "SELECT status, owner, acknowledged_at, done_at, resolution, overdue_at"
    " FROM actions WHERE action_id = %s"
)


def current(database: str, action_id: str = "a-1") -> tuple[Any, ...] | None:
    with psycopg.connect(database) as conn:
        return conn.execute(CURRENT, (action_id,)).fetchone()


def deliver(sink: PostgresSink, batches: Sequence[Sequence[ActionEvent | ActionStatus]]) -> None:
    """Each batch flushed on its own; statuses from `action-status` at rising offsets."""
    offset = itertools.count()
    for batch in batches:
        for record in batch:
            if isinstance(record, ActionStatus):
                sink.add(record, topic=STATUS_TOPIC, partition=0, offset=next(offset))
            else:
                sink.add(record, topic="actions.care", partition=0, offset=0)
        sink.flush()


def test_the_current_status_is_the_same_whichever_topic_comes_first(postgres: Any) -> None:
    statuses: list[ActionEvent | ActionStatus] = list(story())
    orders: dict[str, list[list[ActionEvent | ActionStatus]]] = {
        "action first": [[fired(1)], statuses],
        "statuses first": [statuses, [fired(1)]],
        "one batch": [[*statuses, fired(1)]],
        "action in between": [statuses[:2], [fired(1)], statuses[2:]],
        "one by one, action last": [[s] for s in statuses] + [[fired(1)]],
    }
    seen = {}
    for name, batches in orders.items():
        with another_database(postgres.url) as database, PostgresSink(database) as sink:
            deliver(sink, batches)
            seen[name] = current(database)
            with psycopg.connect(database) as conn:
                history = conn.execute(
                    "SELECT count(*) FROM action_status_history WHERE action_id = 'a-1'"
                ).fetchone()
            assert history == (5,), name
    expected = seen["action first"]
    assert expected is not None
    status, owner, acknowledged_at, done_at, resolution, overdue_at = expected
    assert (status, owner, resolution) == ("done", "bo", "completed")
    assert int(acknowledged_at.timestamp() * 1000) == T0 + HOUR
    assert int(done_at.timestamp() * 1000) == T0 + 26 * HOUR
    assert int(overdue_at.timestamp() * 1000) == T0 + 24 * HOUR
    assert all(row == expected for row in seen.values()), seen


def test_a_redelivered_status_is_one_row_and_changes_nothing(database: str) -> None:
    with PostgresSink(database) as sink:
        deliver(sink, [[fired(1), *story()[:2]]])
        before = current(database)
        deliver(sink, [story()[:2], [fired(1)]])
        with psycopg.connect(database) as conn:
            rows = conn.execute("SELECT count(*) FROM action_status_history").fetchone()
    assert rows == (2,)
    assert current(database) == before
    assert before is not None and before[:2] == ("acknowledged", "ana")


def test_an_action_without_statuses_is_open_and_older_rows_unknown(database: str) -> None:
    with PostgresSink(database) as sink:
        deliver(sink, [[fired(1)]])
        assert current(database) == ("open", None, None, None, None, None)
        deliver(sink, [[change(1, "open", T0), change(1, "lapsed", T0 + 720 * HOUR)]])
        assert current(database) == ("lapsed", None, None, None, None, None)


def waiting(database: str) -> list[str]:
    """The actions whose statuses came first and whose row has not landed (migration 010)."""
    with psycopg.connect(database) as conn:
        return [
            r[0] for r in conn.execute("SELECT action_id FROM action_status_waiting ORDER BY 1")
        ]


def test_statuses_before_their_action_wait_until_any_writer_lands_it(database: str) -> None:
    with PostgresSink(database) as sink:
        deliver(sink, [[*story(1), *story(2)[:1]]])  # a-2 is only open: nothing to derive
        assert waiting(database) == ["a-1"]
        # Another writer's row, committed while the statuses were written (its transaction
        # saw nothing waiting): this sink's next batch of actions derives it, whichever.
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO actions (action_id, customer_id, rule, action, rule_version,"
                " destination, priority, reason, evidence, channel_hint, triggered_at)"
                " VALUES ('a-1', 'c-1', 'r', 'r', 1, 'care', 60, '', '{}', 'call', now())"
            )
        assert current(database) == ("open", None, None, None, None, None)
        deliver(sink, [[fired(3)]])
    assert waiting(database) == []
    landed = current(database)
    assert landed is not None and landed[:2] == ("done", "bo")
    assert current(database, "a-3") == ("open", None, None, None, None, None)


def test_statuses_waiting_before_migration_010_are_carried_over(database: str) -> None:
    apply_migrations(database, [m for m in load_migrations() if m.version < 10])
    with PostgresSink(database, migrate=False) as sink:  # a sink of a database before 010
        deliver(sink, [story(1), story(2), [fired(2)]])  # a-2 looked up as it lands
    second = current(database, "a-2")
    assert second is not None and second[:2] == ("done", "bo")
    apply_migrations(database)
    assert waiting(database) == ["a-1"]
    with PostgresSink(database) as sink:
        deliver(sink, [[fired(1)]])
    landed = current(database)
    assert waiting(database) == [] and landed is not None and landed[:2] == ("done", "bo")


def test_an_erased_history_leaves_nothing_waiting(database: str) -> None:
    with PostgresSink(database) as sink:
        deliver(sink, [story(1), [change(9, "overdue", T0, customer="c-2")]])
        assert waiting(database) == ["a-1", "a-9"]
        sink.erase("c-1", T0 + 30 * HOUR, STATUS_TOPIC, [STATUS_TABLE])
        sink.flush()
    assert waiting(database) == ["a-9"]


def test_the_histograms_are_observed_once_and_the_gauges_count_unfinished_work(
    database: str,
) -> None:
    def observed(histogram: Any) -> float:
        return float(histogram.labels("crm")._sum.get())

    acknowledged_before = observed(ACTION_TIME_TO_ACKNOWLEDGE)
    done_before = observed(ACTION_TIME_TO_DONE)
    with PostgresSink(database) as sink:
        crm = {"destination": "crm"}
        deliver(sink, [[change(1, "acknowledged", T0 + HOUR, owner="ana", event_id="x", **crm)]])
        assert observed(ACTION_TIME_TO_ACKNOWLEDGE) == acknowledged_before  # no action yet
        action = fired(1, destination="crm")
        late = fired(2, destination="crm")
        deliver(sink, [[action, late, change(2, "overdue", T0 + 24 * HOUR, **crm)]])
        assert observed(ACTION_TIME_TO_ACKNOWLEDGE) - acknowledged_before == 3600
        assert sink.count_work()["crm"] == (2, 1)
        assert ACTIONS_OPEN.labels("crm")._value.get() == 2
        assert ACTIONS_OVERDUE.labels("crm")._value.get() == 1
        assert ACTIONS_OPEN.labels("care")._value.get() == 0
        done = change(1, "done", T0 + 3 * HOUR, resolution="unreachable", event_id="y", **crm)
        deliver(sink, [[done], [done, action]])  # and redelivered
        assert observed(ACTION_TIME_TO_DONE) - done_before == 3 * 3600
        assert observed(ACTION_TIME_TO_ACKNOWLEDGE) - acknowledged_before == 3600
        assert sink.count_work()["crm"] == (1, 1)


def test_the_status_marker_deletes_the_history_and_the_customer_may_come_back(
    database: str,
) -> None:
    with PostgresSink(database) as sink:
        deliver(sink, [[fired(1), *story()], [change(9, "open", T0, customer="c-2")]])
        sink.erase("c-1", T0 + 30 * HOUR, STATUS_TOPIC, [STATUS_TABLE])
        back = change(3, "open", T0 + 31 * HOUR)
        sink.add(back, topic=STATUS_TOPIC, partition=0, offset=99)
        sink.flush()
    with psycopg.connect(database) as conn:
        left = conn.execute(
            "SELECT customer_id, action_id FROM action_status_history ORDER BY 1, 2"
        ).fetchall()
        recorded = conn.execute(
            "SELECT removed FROM erasures WHERE customer_hash = %s AND topic = %s",
            (keyed_customer_hash("c-1"), STATUS_TOPIC),
        ).fetchone()
    assert left == [("c-1", "a-3"), ("c-2", "a-9")]
    assert recorded == ({STATUS_TABLE: 5},)


def test_the_timeline_shows_status_owner_and_lateness(database: str) -> None:
    with PostgresSink(database) as sink:
        deliver(sink, [[fired(1), *story(), fired(2), change(2, "overdue", T0 + 24 * HOUR)]])
    with psycopg.connect(database) as conn:
        entries = query_timeline(conn, "c-1")
    actions = {e["id"]: e for e in entries if e["kind"] == "action"}
    assert actions["a-1"]["status"] == "done"
    assert actions["a-1"]["owner"] == "bo"
    assert actions["a-1"]["late_s"] == 2 * 3600
    assert actions["a-1"]["overdue"] is False
    assert actions["a-2"]["status"] == "overdue"
    assert actions["a-2"]["overdue"] is True
    assert actions["a-2"]["late_s"] is None
    changes = [(e["id"], e["status"]) for e in entries if e["kind"] == "status"]
    assert changes == [("a-1:overdue", "overdue"), ("a-2:overdue", "overdue")]


def test_the_actions_read_filters_by_status_and_says_overdue(database: str) -> None:
    with PostgresSink(database) as sink:
        deliver(
            sink,
            [
                [fired(1), *story()],
                [fired(2), change(2, "open", T0), change(2, "overdue", T0 + 24 * HOUR)],
                [fired(3), change(3, "acknowledged", T0, owner="cy", event_id="ack-3")],
            ],
        )
    with psycopg.connect(database) as conn:
        every = query_actions(conn, "c-1")
        overdue = query_actions(conn, "c-1", status="overdue")
        acknowledged = query_actions(conn, "c-1", status="acknowledged")
        done = query_actions(conn, "c-1", status="done")
    assert [(a["action_id"], a["status"], a["overdue"]) for a in every] == [
        ("a-1", "done", False),
        ("a-2", "overdue", True),
        ("a-3", "acknowledged", False),
    ]
    assert [a["action_id"] for a in overdue] == ["a-2"]
    assert [(a["action_id"], a["owner"]) for a in acknowledged] == [("a-3", "cy")]
    assert done[0]["resolution"] == "completed" and done[0]["late_s"] == 2 * 3600
    assert done[0]["done_at"] == "2026-01-03T05:04:05.000+00:00"

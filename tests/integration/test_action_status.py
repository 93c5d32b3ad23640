"""Actions that get done, end to end (docs/design.md 12): worker, both sinks, the collector's
status route, the read API and `moments replay --status-out` agree on every status.

One interactions partition, so one watermark. Three customers give feedback
(`route_feedback` fires on arrival, due 5 days later): the first action is
acknowledged over HTTP (`POST /v1/actions/{id}/status`), the third is done over
HTTP, and an event six days on moves the watermark past the second's due_by: it
goes overdue and its `when_overdue` escalation fires to care. The first one's
feedback came three days later, so it is acknowledged, not overdue. PostgreSQL,
the read API and the webhook receiver then show the same statuses the worker
wrote to `action-status`, and replaying the same events writes the same records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.settings import Settings
from common.topics import ensure_topics
from producers.collector import collector_in_thread, collector_publisher, create_app
from producers.publisher import Publisher
from schemas.codec import codec_for, to_json_dict, to_json_line
from schemas.records import ActionStatus, InteractionEvent
from sinks.api import PostgresCustomers, build_app
from sinks.postgres import apply_migrations, run_postgres_sink
from sinks.webhook import run_webhook_sink
from tests.support.erasure import Receiver, webhook_receiver
from tests.support.timing import wait_for
from tests.support.worker_process import (
    WAIT_S,
    TopicReader,
    actions_in,
    clock_event,
    event,
    headers_of,
    running_worker,
)

SECRET = "status-webhook-secret"
H = 3_600_000
DAY = 24 * H
ACKED, LATE, DONE = "CUST-STATUS-ACKED", "CUST-STATUS-LATE", "CUST-STATUS-DONE"


@contextmanager
def in_thread(run: Callable[..., None], settings: Settings) -> Iterator[None]:
    """A sink's run function in a thread until the block ends (it must stop cleanly)."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            run(settings, stop=stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, name=run.__name__, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), f"{run.__name__} did not stop"
    assert not failures, failures


def statuses_in(reader: TopicReader, topic: str) -> list[ActionStatus]:
    codec = codec_for(ActionStatus)
    return [
        codec.decode(m.value() or b"")
        for m in reader.messages
        if m.topic() == topic and "moments.control" not in headers_of(m)
    ]


def by_action(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """Each action's (status, owner) changes, in order."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for record in records:
        found.setdefault(record["action_id"], []).append((record["status"], record["owner"]))
    return found


def test_statuses_agree_everywhere(settings: Settings, database: str, tmp_path: Path) -> None:
    settings = settings.replace(
        topic_prefix="s" + settings.kafka.topic_prefix,
        interactions_partitions=1,
        database_url=database,
        idle_tick_s=3600.0,  # the test's events move the clock, nothing else
        worker_store="memory://",
        data_dir=tmp_path / "data",
    )
    ensure_topics(settings)
    apply_migrations(database)
    topics = settings.topics
    t0 = int(time.time() * 1000) - 30 * DAY
    reader = TopicReader(
        settings, [topics.action("feedback"), topics.action("care"), topics.action_status]
    )
    try:
        worker_statuses = run_the_stack(settings, database, tmp_path, reader, t0)
    finally:
        reader.close()

    # `moments replay --status-out` on the same events writes the same records.
    events_file, status_file = tmp_path / "events.jsonl", tmp_path / "statuses.jsonl"
    events_file.write_text(
        # three feedbacks, two statuses, the clock
        "".join(to_json_line(e) + "\n" for e in events_of(settings, 6)),
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "moments",
            "replay",
            str(events_file),
            "--actions-out",
            str(tmp_path / "actions.jsonl"),
            "--status-out",
            str(status_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    replayed = [json.loads(line) for line in status_file.read_text().splitlines()]
    assert replayed == [to_json_dict(s) for s in worker_statuses]
    assert status_file.read_text(encoding="utf-8") == "".join(  # byte for byte
        to_json_line(s) + "\n" for s in worker_statuses
    )


def run_the_stack(
    settings: Settings, database: str, tmp_path: Path, reader: TopicReader, t0: int
) -> list[ActionStatus]:
    """Worker, sinks, collector: the three actions' statuses as every part shows them (each
    checked against what the worker wrote to `action-status`, which is returned)."""
    topics = settings.topics

    def fired_for(customer: str) -> str:
        found = [a for a in actions_in(reader.messages, topics.action("feedback"))]
        return next(a.action_id for a in found if a.customer_id == customer)

    with (
        webhook_receiver(SECRET) as receiver,
        in_thread(run_postgres_sink, settings),
        in_thread(run_webhook_sink, webhook_settings(settings, receiver)),
        running_worker(settings, tmp_path / "worker.log") as worker,
        collector_publisher(settings) as collector_out,
        collector_in_thread(create_app(settings, collector_out, insecure=True)) as collector,
    ):
        with Publisher(settings) as publisher:
            for customer, at in ((LATE, t0), (DONE, t0), (ACKED, t0 + 3 * DAY)):
                publisher.publish(
                    event(customer, "feedback_given", at, channel="web", text="Nice app.")
                )
        reader.poll_until(
            lambda ms: len(actions_in(ms, topics.action("feedback"))) == 3, worker, WAIT_S
        )
        acked, late, done = fired_for(ACKED), fired_for(LATE), fired_for(DONE)
        answers = [
            httpx.post(
                f"{collector}/v1/actions/{action_id}/status",
                json={"customer_id": customer, "occurred_at": iso(at), **body},
                timeout=30,
            )
            for action_id, customer, at, body in (
                (acked, ACKED, t0 + 3 * DAY + H, {"status": "acknowledged", "owner": "ana"}),
                (done, DONE, t0 + 3 * DAY + 2 * H, {"status": "done", "resolution": "completed"}),
            )
        ]
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        with Publisher(settings) as publisher:  # past the late one's due_by and the lateness
            publisher.publish(clock_event(LATE, t0 + 6 * DAY))
        reader.poll_until(
            lambda ms: (
                {"acknowledged", "done", "overdue"}
                <= {s.status for s in statuses_in(reader, topics.action_status)}
            ),
            worker,
            WAIT_S,
        )
        reader.drain()
        worker_statuses = statuses_in(reader, topics.action_status)
        escalations = actions_in(reader.messages, topics.action("care"))
        expected = by_action([to_json_dict(s) for s in worker_statuses])

        # What the worker said, and the escalation of the late one.
        assert expected[acked] == [("open", None), ("acknowledged", "ana")]
        assert expected[done] == [("open", None), ("done", None)]
        assert [s for s, _ in expected[late]] == ["open", "overdue"]
        (escalation,) = escalations
        assert escalation.action == "escalate_to_team_lead" and late in escalation.evidence

        # PostgreSQL: the history is the topic's, and each action's current status.
        def stored() -> dict[str, list[tuple[str, Any]]]:
            with psycopg.connect(database) as conn:
                rows = conn.execute(
                    "SELECT action_id, status, owner FROM action_status_history"
                    " ORDER BY kafka_partition, kafka_offset"
                ).fetchall()
            return by_action([{"action_id": a, "status": s, "owner": o} for a, s, o in rows])

        wait_for(lambda: stored() == expected, WAIT_S, "the status history in PostgreSQL")
        with psycopg.connect(database) as conn:
            current = dict(
                (row[0], row[1:])
                for row in conn.execute(
                    "SELECT action_id, status, owner, resolution, overdue_at IS NOT NULL"
                    " FROM actions WHERE action_id = ANY(%s)",
                    ([acked, late, done],),
                ).fetchall()
            )
        assert current == {
            acked: ("acknowledged", "ana", None, False),
            late: ("overdue", None, None, True),
            done: ("done", None, "completed", False),
        }

        # The read API says the same.
        api = build_app(PostgresCustomers(database))
        with TestClient(api) as client:
            overdue = client.get(f"/v1/customers/{LATE}/actions?status=overdue").json()
            mine = client.get(f"/v1/customers/{ACKED}/actions").json()
            finished = client.get(f"/v1/customers/{DONE}/actions?status=done").json()
        assert [(a["action_id"], a["overdue"]) for a in overdue["actions"]] == [(late, True)]
        assert [(a["action_id"], a["status"], a["owner"]) for a in mine["actions"]] == [
            (acked, "acknowledged", "ana")
        ]
        assert [(a["action_id"], a["resolution"]) for a in finished["actions"]] == [
            (done, "completed")
        ]

        # The webhook receiver got every change of the routed destinations, signed.
        def delivered() -> dict[str, list[tuple[str, Any]]]:
            seen = [e["data"] for _, e in receiver.seen() if e["type"] == "moments.action.status"]
            return by_action(seen)

        wait_for(lambda: delivered() == expected, WAIT_S, "the status CloudEvents")
        assert receiver.bad_signatures == 0
    return worker_statuses


def webhook_settings(settings: Settings, receiver: Receiver) -> Settings:
    return settings.replace(
        webhook_secret=SecretStr(SECRET),
        webhook_urls={d: receiver.url(d) for d in ("care", "feedback")},
        webhook_allow_http=True,  # the local receiver speaks plain http
        webhook_group=f"{settings.sinks.sink_group}-webhook",
    )


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def events_of(settings: Settings, count: int) -> list[InteractionEvent]:
    """The first `count` events on `interactions`, in offset order (one partition)."""
    reader = TopicReader(settings, [settings.topics.interactions])
    codec = codec_for(InteractionEvent)
    found: list[InteractionEvent] = []

    def read() -> bool:
        for message in reader.consumer.consume(100, timeout=0.5):
            if message.error() is not None or not message.value():
                continue
            if "moments.control" not in headers_of(message):
                found.append(codec.decode(message.value() or b""))
        return len(found) >= count

    try:
        wait_for(read, WAIT_S, f"{count} events on interactions")
    finally:
        reader.close()
    return found

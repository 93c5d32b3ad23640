"""The PostgreSQL sink against a real Tansu broker and real PostgreSQL.

Exactly one row per record under redelivery, offsets committed only after
the rows exist, dead letters for undecodable records, and a database outage
waited out without losing anything. Every test writes to a database of its
own (CREATE DATABASE), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from common.metrics import SINK_ERRORS, SINK_ROWS
from common.settings import Settings
from moments.stack import EmbeddedPostgres
from schemas.codec import codec_for
from schemas.records import ActionEvent, Decision, InteractionEvent
from sinks.postgres import (
    TABLES,
    PostgresSink,
    Refused,
    apply_migrations,
    load_migrations,
    run_postgres_sink,
)
from tests.support.timing import wait_for

T0 = 1_767_323_045_000  # 2026-01-02T03:04:05Z


def action(n: int, customer: str | None = None) -> ActionEvent:
    return ActionEvent(
        action_id=f"act-{n:05d}",
        customer_id=customer or f"cust-{n % 7}",
        rule="life_event_check_in",
        action="life_event_check_in",
        rule_version=1,
        destination="care",
        priority=80,
        reason="The customer asked to cancel.",
        evidence=[f"evt-{n:05d}"] + (['odd "quoted", {braced} \\ NULL'] if n % 10 == 3 else []),
        channel_hint="call",
        triggered_at=T0 + n * 1001,
        due_by=T0 + n * 1001 + 86_400_000 if n % 2 else None,
        details={"relationship_balance": str(n % 3 - 1)},
    )


def as_utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def produce(settings: Settings, topic: str, values: list[tuple[str, bytes]]) -> dict[int, int]:
    """Produce (key, value) pairs; return the end offset (last offset + 1) per partition."""
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True}))
    ends: dict[int, int] = {}
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for key, value in values:
        producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not failures
    return ends


def produce_actions(settings: Settings, actions: list[ActionEvent]) -> dict[int, int]:
    codec = codec_for(ActionEvent)
    values = [(a.customer_id, codec.encode(a)) for a in actions]
    return produce(settings, settings.topics.action("care"), values)


def count(conninfo: str, query: str, *params: Any) -> int:
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            row = conn.execute(query, params).fetchone()
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return -1  # database down, or the sink has not migrated it yet
    assert row is not None
    return int(row[0])


def committed(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    """The sink group's committed offset per partition (-1001 = none)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": settings.sinks.sink_group}))
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}


def offsets_reach(settings: Settings, topic: str, ends: dict[int, int]) -> Callable[[], bool]:
    def check() -> bool:
        now = committed(settings, topic, max(ends, default=0) + 1)
        return all(now.get(p, -1) >= end for p, end in ends.items())

    return check


@contextmanager
def running_sink(settings: Settings, **kwargs: Any) -> Iterator[threading.Thread]:
    """`run_postgres_sink` in a thread; stopped (and checked to have stopped cleanly) on exit."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_postgres_sink(settings, stop=stop, **kwargs)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="postgres-sink", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the sink did not stop within 30 s"
    assert not errors, f"the sink failed: {errors[0]!r}"


def rows_written(table: str) -> float:
    return SINK_ROWS.labels("postgres", table)._value.get()


def test_actions_land_exactly_once_even_when_redelivered(settings: Settings, database: str) -> None:
    settings = settings.replace(database_url=database, sink_batch_size=40)
    topic = settings.topics.action("care")
    actions = [action(n) for n in range(120)]
    written_before = rows_written("actions")
    with running_sink(settings):
        first = produce_actions(settings, actions)
        wait_for(lambda: count(database, "SELECT count(*) FROM actions") == 120, 60, "120 rows")
        wait_for(offsets_reach(settings, topic, first), 30, "offsets committed")
        assert count(database, "SELECT count(*) FROM actions") == 120

        # The same records again, as a producer retry or a replay would deliver them.
        ends = produce_actions(settings, actions)
        wait_for(offsets_reach(settings, topic, ends), 60, "the redelivery to be committed")
        assert count(database, "SELECT count(*) FROM actions") == 120
        assert count(database, "SELECT count(DISTINCT action_id) FROM actions") == 120
    assert rows_written("actions") - written_before == 120
    with psycopg.connect(database) as conn:
        stored = conn.execute(
            "SELECT action_id, evidence, triggered_at, due_by, details FROM actions"
            " ORDER BY action_id"
        ).fetchall()
    assert stored == [
        (a.action_id, a.evidence, as_utc(a.triggered_at), as_utc(a.due_by), a.details)
        for a in actions
    ]
    # The first delivery's rows stay: their offsets are below the redelivered ones.
    with psycopg.connect(database) as conn:
        highest: dict[int, int] = dict(
            conn.execute(
                "SELECT kafka_partition, max(kafka_offset) FROM actions GROUP BY 1"
            ).fetchall()
        )
    assert {p: o + 1 for p, o in highest.items()} == first
    assert (
        count(
            database,
            "SELECT count(*) FROM actions WHERE triggered_at = %s::timestamptz"
            " AND details->>'relationship_balance' = '-1' AND evidence = ARRAY['evt-00000']",
            "2026-01-02T03:04:05Z",
        )
        == 1
    )

    # A restarted sink resumes from the committed offsets: nothing is written again.
    with running_sink(settings):
        produce_actions(settings, [action(500)])
        wait_for(lambda: count(database, "SELECT count(*) FROM actions") == 121, 60, "row 121")
    assert rows_written("actions") - written_before == 121


def test_decisions_events_and_dead_letters(settings: Settings, database: str) -> None:
    settings = settings.replace(database_url=database)
    topics = settings.topics
    decision = Decision(
        decision_id="dec-1",
        customer_id="cust-1",
        rule="life_event_check_in",
        rule_version=1,
        outcome="suppressed",
        reason="cool_down",
        action_id=None,
        evidence=["evt-1"],
        decided_at=T0,
    )
    event = InteractionEvent(
        event_id="evt-1",
        customer_id="cust-1",
        channel="call",
        type="cancellation_requested",
        occurred_at=T0,
        source="ivr",
        amount=42.5,
        currency="EUR",
        attributes={"queue": "retention"},
    )
    with running_sink(settings):
        produce(settings, topics.decisions, [("cust-1", codec_for(Decision).encode(decision))])
        produce(
            settings, topics.interactions, [("cust-1", codec_for(InteractionEvent).encode(event))]
        )
        bad_action = produce(settings, topics.action("care"), [("cust-2", b"not avro at all")])
        # Events the worker refuses (it dead-letters them): not stored, not dead-lettered twice.
        oversized = replace(event, event_id="evt-big", text="x" * settings.engine.max_event_bytes)
        bad_event = produce(
            settings,
            topics.interactions,
            [
                ("cust-3", b"\xc3\x01garbage"),
                ("cust-1", codec_for(InteractionEvent).encode(oversized)),
            ],
        )
        produce_actions(settings, [action(1, "cust-1")])
        wait_for(
            lambda: (
                count(database, "SELECT count(*) FROM actions") == 1
                and count(database, "SELECT count(*) FROM decisions") == 1
                and count(database, "SELECT count(*) FROM interaction_events") == 1
            ),
            60,
            "one row in each table",
        )
        wait_for(
            offsets_reach(settings, topics.action("care"), bad_action),
            30,
            "offsets past the undecodable action",
        )
        wait_for(
            offsets_reach(settings, topics.interactions, bad_event),
            30,
            "offsets past the events the worker refuses",
        )
    assert (
        count(
            database,
            "SELECT count(*) FROM interaction_events WHERE amount = 42.5"
            " AND attributes->>'queue' = 'retention' AND kafka_topic = %s",
            topics.interactions,
        )
        == 1
    )

    assert count(database, "SELECT count(*) FROM interaction_events") == 1
    assert dlq_record_count(settings, topics.interactions_dlq) == 0
    letters = read_all(settings, [topics.actions_dlq], expected=1)
    (letter,) = letters
    assert letter["value"] == b"not avro at all"
    headers = letter["headers"]
    assert headers["moments.error.stage"] == b"decode"
    assert headers["moments.error.topic"] == topics.action("care").encode()
    ((partition, end),) = bad_action.items()
    assert headers["moments.error.partition"] == str(partition).encode()
    assert headers["moments.error.offset"] == str(end - 1).encode()
    assert b"unknown wire format" in headers["moments.error.message"]


def test_new_rows_are_copied_straight_in_and_redelivered_batches_go_through_staging(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    def refused() -> int:  # COPYs PostgreSQL refused for a key already stored
        return caplog.text.count("actions: 23505; writing this batch through staging")

    batches = [
        (range(50), 50),  # all new: copied straight in
        (range(40, 60), 10),  # ten stored, ten new: the COPY is refused, staging drops ten
        (range(55, 70), 10),  # redelivery goes on: straight to staging, no refused COPY
        (range(70, 80), 10),  # all new, still through staging (the last batch held stored keys)
        (range(75, 90), 10),  # the last batch held none: a COPY again, refused again
    ]
    refusals = []
    with PostgresSink(database) as sink, caplog.at_level("INFO", logger="sinks.postgres"):
        for number, (numbers, new) in enumerate(batches):
            for n in numbers:
                sink.add(action(n), topic="t", partition=0, offset=number)
            assert sink.flush() == {"actions": new}
            refusals.append(refused())
    assert refusals == [0, 1, 1, 1, 2]
    with psycopg.connect(database) as conn:
        stored = conn.execute(
            "SELECT action_id, customer_id, evidence, triggered_at, due_by, details, kafka_offset"
            " FROM actions ORDER BY action_id"
        ).fetchall()
    first_batch = {
        n: number for number, (numbers, _) in reversed(list(enumerate(batches))) for n in numbers
    }
    assert stored == [
        (
            a.action_id,
            a.customer_id,
            a.evidence,
            as_utc(a.triggered_at),
            as_utc(a.due_by),
            a.details,
            first_batch[n],  # a redelivered row keeps its first delivery
        )
        for n, a in ((n, action(n)) for n in range(90))
    ]


def test_text_postgres_cannot_hold_is_replaced_and_the_rest_of_the_batch_lands(
    database: str,
) -> None:
    nul = "\x00"
    with PostgresSink(database) as sink:
        sink.add(action(1))
        sink.add(replace(action(2), reason=f"a{nul}b", evidence=[f"e{nul}", ""], due_by=None))
        sink.add(replace(action(3), details={f"k{nul}": f"v{nul}"}))
        sink.add(replace(action(4), evidence=[]))
        sink.add(
            InteractionEvent(
                event_id="evt-1",
                customer_id="cust-1",
                channel="email",
                type="feedback_given",
                occurred_at=T0,
                text=f"hello{nul}",
                due_date=date(2026, 1, 31),
                customer_since=date(1999, 12, 31),
            )
        )
        assert sink.flush() == {"actions": 4, "interaction_events": 1}
    with psycopg.connect(database) as conn:
        rows = {
            row[0]: row[1:]
            for row in conn.execute("SELECT action_id, reason, evidence, details FROM actions")
        }
        event = conn.execute(
            "SELECT text, due_date, customer_since, occurred_at FROM interaction_events"
        ).fetchone()
    assert rows["act-00002"] == ("a\ufffdb", ["e\ufffd", ""], {"relationship_balance": "1"})
    assert rows["act-00003"][2] == {"k\ufffd": "v\ufffd"}
    assert rows["act-00004"][1] == []
    assert rows["act-00001"][0] == "The customer asked to cancel."
    assert event == ("hello\ufffd", date(2026, 1, 31), date(1999, 12, 31), as_utc(T0))


def test_an_action_without_a_channel_hint_lands_once_the_upgrade_has_run(database: str) -> None:
    """A database made while channel_hint was NOT NULL (migrations up to 005) refuses an action
    without one; after migration 006 it lands, copied straight in or through staging, the old
    rows keep their channel, and the timeline shows the action without a channel."""
    assert apply_migrations(database, [m for m in load_migrations() if m.version < 6])
    no_channel = [replace(action(n), channel_hint=None) for n in (2, 3)]
    with PostgresSink(database, migrate=False) as sink:
        sink.add(action(1))
        assert sink.flush() == {"actions": 1}
        sink.add(no_channel[0])
        with pytest.raises(psycopg.errors.NotNullViolation):
            sink.write(sink.detach())
    assert apply_migrations(database)[:1] == [6]  # and any migration after it
    with PostgresSink(database, migrate=False) as sink:
        sink.add(no_channel[0])
        assert sink.flush() == {"actions": 1}  # copied straight in
        for record in (action(1), no_channel[0], no_channel[1]):
            sink.add(record)
        assert sink.flush() == {"actions": 1}  # holds stored keys: through staging
    with psycopg.connect(database) as conn:
        stored = conn.execute("SELECT action_id, channel_hint FROM actions ORDER BY 1").fetchall()
        timeline = conn.execute(
            "SELECT id, channel FROM customer_timeline WHERE kind = 'action' ORDER BY id"
        ).fetchall()
    assert stored == [("act-00001", "call"), ("act-00002", None), ("act-00003", None)]
    assert timeline == stored


def unindexable_id(chars: int = 3000) -> str:
    """An id too large for a btree index row even compressed (SQLSTATE 54000)."""
    return secrets.token_urlsafe(chars)[:chars]


def test_a_row_the_database_refuses_is_split_out_and_the_rest_lands(database: str) -> None:
    huge = unindexable_id()
    with PostgresSink(database) as sink:
        for n in range(40):
            sink.add(action(n, customer=huge if n == 17 else None))
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            sink.write(sink.detach())  # without `refused`, a refused row fails the batch
        for n in range(40):
            sink.add(action(n, customer=huge if n == 17 else None))
        refused: list[Refused] = []
        assert sink.flush(refused=refused) == {"actions": 39}
    assert [(r.entry[0].action_id, r.sqlstate, r.table) for r in refused] == [
        ("act-00017", "54000", "actions")
    ]
    assert huge not in refused[0].message
    with psycopg.connect(database) as conn:
        stored = conn.execute("SELECT count(*) FROM actions").fetchone()
    assert stored == (39,)


def test_keys_are_the_ids_and_only_the_timeline_indexes_remain(database: str) -> None:
    apply_migrations(database)
    with psycopg.connect(database) as conn:
        indexes = conn.execute(
            "SELECT t.relname, array_agg(a.attname ORDER BY k.ord)"
            " FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
            " WHERE t.relname = ANY(%s) AND i.indisunique GROUP BY i.indexrelid, t.relname",
            ([spec.name for spec in TABLES],),
        ).fetchall()
        all_indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = ANY(%s)",
            ([spec.name for spec in TABLES],),
        ).fetchone()
    assert sorted(indexes) == [
        ("action_status_history", ["action_id", "status", "at", "event_key"]),
        ("actions", ["action_id"]),
        ("decisions", ["decision_id"]),
        ("interaction_events", ["customer_id", "event_id"]),
    ]
    assert sorted(indexes) == sorted((spec.name, list(spec.key)) for spec in TABLES)
    # + (customer_id, time) on actions, decisions and the status history, and the desk's two
    # queues of unfinished actions (migration 009); interaction_events' key serves the timeline
    assert all_indexes == (len(TABLES) + 5,)


def dlq_record_count(settings: Settings, topic: str) -> int:
    """Records ever written to TOPIC (high minus low watermark, summed over partitions)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": f"count-{uuid.uuid4().hex[:8]}"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()


def read_all(settings: Settings, topics: list[str], expected: int) -> list[dict[str, Any]]:
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
    )
    found: list[dict[str, Any]] = []
    try:
        consumer.subscribe(topics)
        deadline = time.monotonic() + 30
        while len(found) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            found.append(
                {"topic": msg.topic(), "value": msg.value(), "headers": dict(msg.headers() or [])}
            )
    finally:
        consumer.close()
    assert len(found) == expected, f"expected {expected} dead letters, found {len(found)}"
    return found


def test_concurrent_starts_apply_each_migration_once(database: str) -> None:
    results: list[list[int]] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait(10)
        results.append(apply_migrations(database))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    applied = sorted(v for result in results for v in result)
    assert len(results) == 4
    versions = [m.version for m in load_migrations()]
    assert applied == versions
    assert count(database, "SELECT count(*) FROM schema_version") == len(versions)
    assert apply_migrations(database) == []


@pytest.fixture
def own_postgres_dir() -> Iterator[Path]:
    """A data directory right under /tmp, where pgserver's server user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="moments-pg-down-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_sink_waits_out_a_stopped_database_and_loses_nothing(
    settings: Settings, own_postgres_dir: Path
) -> None:
    server = EmbeddedPostgres(data_dir=own_postgres_dir)
    url = server.start()
    try:
        settings = settings.replace(database_url=url, sink_batch_size=25)
        topic = settings.topics.action("care")
        errors_before = SINK_ERRORS.labels("postgres")._value.get()
        with running_sink(settings, max_backoff_s=1.0):
            first = produce_actions(settings, [action(n) for n in range(40)])
            wait_for(lambda: count(url, "SELECT count(*) FROM actions") == 40, 60, "40 rows")
            wait_for(offsets_reach(settings, topic, first), 30, "first offsets committed")

            server.stop()
            ends = produce_actions(settings, [action(n) for n in range(40, 100)])
            wait_for(
                lambda: SINK_ERRORS.labels("postgres")._value.get() >= errors_before + 4,
                60,
                "the sink to fail and retry against the stopped database",
            )
            # Nothing of the second lot is durable, so none of its offsets may be committed.
            now = committed(settings, topic, settings.kafka.action_partitions)
            assert {p: o for p, o in now.items() if o >= 0} == first

            assert server.start() == url
            wait_for(lambda: count(url, "SELECT count(*) FROM actions") == 100, 60, "100 rows")
            wait_for(offsets_reach(settings, topic, ends), 30, "all offsets committed")
        assert count(url, "SELECT count(DISTINCT action_id) FROM actions") == 100
    finally:
        server.stop()


def test_sigterm_stops_the_sink_cleanly_when_it_is_the_main_loop(
    settings: Settings, database: str
) -> None:
    env = {
        **os.environ,
        "MOMENTS_BOOTSTRAP": str(settings.kafka.bootstrap),
        "MOMENTS_DATABASE_URL": database,
        "MOMENTS_TOPIC_PREFIX": settings.kafka.topic_prefix,
        "MOMENTS_SINK_GROUP": settings.sinks.sink_group,
        "MOMENTS_BROKER_SESSION_TIMEOUT_S": "6",
        "MOMENTS_SINK_BATCH_SIZE": "2",
        "MOMENTS_SINK_BATCH_TIMEOUT_S": "60",  # a lone record waits: only the stop flushes it
    }
    code = "from common.settings import Settings; from sinks.postgres import run_postgres_sink; "
    code += "run_postgres_sink(Settings())"
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        produce_actions(settings, [action(1, "cust-1"), action(2, "cust-1")])
        wait_for(lambda: count(database, "SELECT count(*) FROM actions") == 2, 60, "a full batch")
        ends = produce_actions(settings, [action(3, "cust-1")])
        time.sleep(1.0)  # consumed, but its batch is not due for 60 s
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
    finally:
        process.kill()
    assert count(database, "SELECT count(*) FROM actions") == 3
    assert offsets_reach(settings, settings.topics.action("care"), ends)()

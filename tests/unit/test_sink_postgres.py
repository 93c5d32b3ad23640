"""The PostgreSQL sink without a database: its buffer, its topics, its settings."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

import sinks.postgres
from common.settings import Settings
from sinks.consume import Offsets, Progress
from sinks.postgres import (
    BatchWriter,
    PostgresSink,
    SinkConfigError,
    run_postgres_sink,
    sink_topics,
)
from tests.support.sinks import ACTION, DECISION, EVENT, FakeLetters, FakeMessage

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"


def test_a_batch_keeps_one_row_per_key_and_connects_only_to_flush() -> None:
    sink = PostgresSink("postgresql://nobody@127.0.0.1:1/none")
    sink.add(ACTION, topic="t", partition=0, offset=1)
    sink.add(ACTION, topic="t", partition=0, offset=2)  # redelivered within the batch
    sink.add(DECISION)
    sink.add(EVENT)
    assert sink.pending == 3
    sink.clear()
    assert sink.pending == 0
    assert sink.flush() == {}  # nothing to write: no connection attempted


def test_the_sink_reads_every_action_topic_decisions_interactions_and_statuses() -> None:
    settings = Settings(topic_prefix="p.")
    assert sink_topics(settings) == [
        "p.actions.care",
        "p.actions.billing",
        "p.actions.crm",
        "p.actions.feedback",
        "p.actions.recognition",
        "p.decisions",
        "p.interactions",
        "p.action-status",
    ]


def test_running_without_a_database_or_with_an_unknown_topic_is_a_clear_error() -> None:
    with pytest.raises(SinkConfigError, match="MOMENTS_DATABASE_URL"):
        run_postgres_sink(Settings(bootstrap="127.0.0.1:1"))
    settings = Settings(bootstrap="127.0.0.1:1", database_url="postgresql://x@127.0.0.1:1/x")
    with pytest.raises(SinkConfigError, match="'orders'"):
        run_postgres_sink(settings, topics=["orders"])


def test_a_batch_the_database_does_not_take_is_never_reported_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sinks.postgres, "apply_migrations", lambda conninfo: [])
    settings = Settings(bootstrap="127.0.0.1:1", database_url=NOWHERE, sink_batch_size=1)
    writer = BatchWriter(settings, NOWHERE, threading.Event(), {}, max_backoff_s=0.1)
    progress, offsets, tp = Progress(), Offsets(), ("actions.care", 0)
    assert writer.start(progress, FakeLetters())  # type: ignore[arg-type]
    try:
        for n in (5, 6):
            offsets.take(tp, n)
            action = replace(ACTION, action_id=f"a-{n}")
            writer.take(action, FakeMessage(tp[0], n, b""))  # type: ignore[arg-type]
            if n == 5:
                assert writer.held([tp], set()) == set()
                writer.tick()  # due: to the writer thread, which retries the unreachable database
        # The next batch is due before the one in flight is durable: every partition waits.
        assert writer.held([tp], set()) == {tp}
        writer.revoke([tp])  # neither can be written now: both dropped, to be read again
    finally:
        writer.close()
    progress.drain(offsets)
    assert offsets.committable() == {} and progress.error is None

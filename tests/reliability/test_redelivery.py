"""Redelivery beyond the dedupe horizon: the window kill -9 can open, reproduced on purpose.

The worker sends a partition's changelog (its new state) before it commits
the input offsets, so a kill -9 between the two leaves the state ahead of the
committed offsets: every event since the last commit is delivered again to a
state that already holds it. The engine recognises a repeated event by its id
only within `dedupe_horizon_s` of event time (7 days), so when the redelivered
stretch spans more event time than that (a backlog of history, a simulation
published fast: the kill test publishes 80 days in about 90 s), the older
events are applied a second time: ledger entries doubled, windows counting
an event twice, different actions.

This test opens that window deterministically: a worker processes 30
simulated days and stops cleanly; a second worker, of a new group (no
committed offsets), gets a copy of the first one's changelog, so it recovers
the whole state and is then delivered every event again: what the crash
leaves behind, made as wide as possible. Everything must still equal the
oracle: the worker skips every record at or below the offset its recovered
state covers (stored with the state, per partition), instead of relying on
the time-bounded dedupe of event ids.
"""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common.settings import Settings
from producers.simulator import simulate
from tests.reliability.harness import Figures, PacedProducer, process_settings
from tests.reliability.pipeline import Pipeline, expected_outputs, state_differences
from tests.reliability.verifier import verify, wire_records
from tests.support.kafka import read_topic
from tests.support.worker_state import changelog_topic, read_worker_state


def copy_changelog(source: Settings, target: Settings) -> int:
    """Give TARGET's worker the state SOURCE's worker left: its changelog, record for record."""
    records = read_topic(source, [changelog_topic(source)], quiet_s=1.0)
    admin = AdminClient(target.kafka_config())
    name = changelog_topic(target)
    partitions = target.kafka.interactions_partitions
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)
    producer = Producer(target.kafka_config(**{"enable.idempotence": True}))
    for message in sorted(records, key=lambda m: (m.partition() or 0, m.offset() or 0)):
        producer.produce(
            name, key=message.key(), value=message.value(), partition=message.partition() or 0
        )
    assert producer.flush(30) == 0
    return len(records)


def test_events_redelivered_to_a_state_that_holds_them_change_nothing(
    settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    settings = process_settings(settings, tmp_path, database_url=database)
    events = list(simulate(400, 30, seed=17))
    records = wire_records(settings, events)
    first = Pipeline(settings, tmp_path / "logs")
    # The second worker: a new group (no committed offsets) whose changelog already holds
    # everything the first one applied, so every event is delivered again to a state that
    # holds it: the state a kill -9 between changelog and offset commit leaves, made whole.
    again = settings.replace(worker_app_id=settings.worker.worker_app_id + "-again")
    second = Pipeline(again, tmp_path / "logs-again")
    try:
        first.start_sink()
        producer = PacedProducer(settings, records, rate=5000, compression="lz4").start()
        producer.join()
        ends = {p: o for (_, p), o in producer.ends.items()}
        first.start_worker()
        first.wait_worker_past(ends, timeout_s=120)
        assert first.fleet.stop("worker") == 0
        copied = copy_changelog(settings, again)
        second.start_worker()
        second.wait_worker_past(ends, timeout_s=120)
        second.fleet.stop("worker")
        final = read_worker_state(again)
        expected = expected_outputs(settings, events, final)
        first.wait_rows(database, len(expected.actions), expected.decisions_count, 60)
        first.fleet.stop("sink")
    finally:
        first.close()
        second.close()
    verdict = verify(expected.actions, expected.decisions, database)
    state_problems = state_differences(expected.state, final.engine)
    figures.update(
        events=len(events),
        **{"events redelivered": len(events), "changelog records copied": copied},
        **verdict.figures(),
        **{"state keys differing": len(state_problems)},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert verdict.ok, verdict.summary()
    assert not state_problems, state_problems[:10]

"""The Faust worker on a real Tansu broker: actions, decisions, dead letters, state, idle ticks.

Each test runs `python -m processors.worker` as a child process (as `moments
worker` does) with the test's settings, publishes through the publisher SDK,
and reads the output topics with a plain confluent-kafka consumer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer

from common.settings import Settings
from producers.publisher import Publisher
from schemas.records import ActionEvent
from tests.support.worker_process import (
    WAIT_S,
    TopicReader,
    actions_in,
    clock_event,
    decisions_in,
    event,
    headers_of,
    running_worker,
)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: life_event_check_in gathers the cancellations of an hour and decides once the watermark
#: (max occurred_at - 5 min) passes the hour's end: a later event of the customer this much
#: after a cancellation settles it.
SETTLED_MS = 2 * HOUR_MS
ERROR_HEADERS = {
    "moments.error.stage",
    "moments.error.class",
    "moments.error.message",
    "moments.error.topic",
    "moments.error.partition",
    "moments.error.offset",
}


def test_cancellation_fires_care_action_and_poison_goes_to_dlq(
    settings: Settings, tmp_path: Path
) -> None:
    topics = settings.topics
    now = int(time.time() * 1000)
    # In the past, so the events that settle them are not dated ahead of the broker's clock.
    at = now - SETTLED_MS
    reader = TopicReader(
        settings, [topics.action("care"), topics.decisions, topics.interactions_dlq]
    )
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with Publisher(settings) as publisher:
            cancellation = event("ann", "cancellation_requested", at, product="gas")
            publisher.publish(cancellation)
        # Poison with the key of a customer whose good event follows on the same partition.
        producer = Producer(settings.kafka_config(partitioner="murmur2_random"))
        producer.produce(topics.interactions, key=b"bob", value=b"not avro at all")
        producer.produce(topics.interactions, key=b"bob", value=None)
        oversized = b"\xc3\x01" + b"x" * (settings.engine.max_event_bytes + 1)
        producer.produce(topics.interactions, key=b"bob", value=oversized)
        assert producer.flush(10) == 0
        with Publisher(settings) as publisher:
            publisher.publish(event("bob", "cancellation_requested", at + 1))
            for customer in ("ann", "bob"):
                publisher.publish(clock_event(customer, at + SETTLED_MS))

        def care_actions_for_both(messages: list[Message]) -> bool:
            actions = actions_in(messages, topics.action("care"))
            return {a.customer_id for a in actions} >= {"ann", "bob"}

        reader.poll_until(care_actions_for_both, worker, WAIT_S)
        messages = reader.drain()
        worker.check_alive()

    actions = [a for a in actions_in(messages, topics.action("care"))]
    ann_actions = [a for a in actions if a.customer_id == "ann"]
    assert len(ann_actions) == 1
    action = ann_actions[0]
    assert isinstance(action, ActionEvent)
    # A gathered action's time is the end of its gathering hour; the cancellation is its evidence.
    assert (action.rule, action.destination, action.triggered_at) == (
        "life_event_check_in",
        "care",
        at + HOUR_MS,
    )
    assert (action.evidence, action.details["products"]) == ([cancellation.event_id], "gas")
    decisions = decisions_in(messages, topics.decisions)
    fired = [d for d in decisions if d.customer_id == "ann" and d.outcome == "fired"]
    assert len(fired) == 1 and fired[0].action_id == action.action_id

    dead = [m for m in messages if m.topic() == topics.interactions_dlq]
    by_stage: dict[str, list[Message]] = {}
    for message in dead:
        headers = headers_of(message)
        assert headers.keys() >= ERROR_HEADERS, headers
        assert headers["moments.error.topic"] == topics.interactions.encode()
        assert message.key() == b"bob"
        by_stage.setdefault(headers["moments.error.stage"].decode(), []).append(message)
    garbage = [m for m in dead if m.value() == b"not avro at all"]
    assert len(garbage) == 1
    garbage_headers = headers_of(garbage[0])
    assert garbage_headers["moments.error.stage"] == b"decode"
    assert garbage_headers["moments.error.class"] == b"DecodeError"
    assert int(garbage_headers["moments.error.offset"]) >= 0
    assert [m.value() for m in by_stage.get("size", [])] == [oversized]
    assert [m.value() for m in by_stage["decode"] if m.value() is None] == [None]
    assert len(dead) == 3


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_cool_down_survives_a_restart(settings: Settings, tmp_path: Path, store: str) -> None:
    # No idle ticks, and a burst of customers: customer state then sits in the changelog's
    # last (multi-record) batches, which Tansu's high watermark hides from recovery unless
    # the worker fences the changelog first. memory:// rebuilds from the changelog alone;
    # rocksdb:// (production, via rocksdict) reopens its local store and catches up.
    settings = settings.replace(idle_tick_s=3600.0, worker_store=store)
    topics = settings.topics
    customers = [f"cust-{i:03d}" for i in range(40)]
    now = int(time.time() * 1000)
    # Each cancellation is decided once a later event of its customer settles it (the hour
    # it gathers, plus the allowed lateness); both rounds stay in the past.
    first_at, second_at = now - DAY_MS, now - SETTLED_MS
    log = tmp_path / "worker.log"
    reader = TopicReader(settings, [topics.action("care"), topics.decisions])

    def decided(count: int) -> Callable[[list[Message]], bool]:
        return lambda ms: len(decisions_in(ms, topics.decisions)) >= count

    with running_worker(settings, log) as worker:
        with Publisher(settings) as publisher:
            for customer in customers:
                publisher.publish(event(customer, "cancellation_requested", first_at))
            # After all of them: a timer set behind the watermark waits for it to move again.
            for customer in customers:
                publisher.publish(clock_event(customer, first_at + SETTLED_MS))
        reader.poll_until(decided(len(customers)), worker, WAIT_S)
        assert worker.stop() == 0, worker.log_tail()  # SIGTERM stops it cleanly

    with running_worker(settings, log) as worker:
        with Publisher(settings) as publisher:
            for customer in customers:
                publisher.publish(
                    event(customer, "cancellation_requested", second_at, channel="email")
                )
            for customer in customers:
                publisher.publish(clock_event(customer, second_at + SETTLED_MS))
        reader.poll_until(decided(2 * len(customers)), worker, WAIT_S)
        messages = reader.drain()

    decisions = decisions_in(messages, topics.decisions)
    # decided at the end of each gathering hour
    first = [d for d in decisions if d.decided_at == first_at + HOUR_MS]
    second = [d for d in decisions if d.decided_at == second_at + HOUR_MS]
    assert {d.outcome for d in first} == {"fired"} and len(first) == len(customers)
    assert sorted((d.outcome, d.reason) for d in second) == [("suppressed", "cool_down")] * len(
        customers
    )
    assert len(actions_in(messages, topics.action("care"))) == len(customers)


def test_idle_partition_fires_absence_timer(settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "quick.yaml"
    rules.write_text(
        """
name: idle-tick-test
rules:
  - id: case_unresolved
    version: 1
    description: A case still open 3 seconds later.
    when:
      kind: absence
      first: {type: dispute_opened}
      missing: {type: dispute_resolved}
      within: 3s
      correlate: reference
    action: case_unresolved
    destination: care
    priority: 90
    class: service
    reason: The case {reference} is still unresolved after {within}.
"""
    )
    settings = settings.replace(rules_path=rules, allowed_lateness_s=1.0, idle_tick_s=0.5)
    topics = settings.topics
    reader = TopicReader(settings, [topics.action("care")])
    with running_worker(settings, tmp_path / "worker.log") as worker:
        opened_at = int(time.time() * 1000)
        with Publisher(settings) as publisher:
            publisher.publish(event("dora", "dispute_opened", opened_at, reference="D-1"))
        reader.poll_until(
            lambda ms: bool(actions_in(ms, topics.action("care"))),
            worker,
            WAIT_S,
        )
        elapsed_s = time.time() - opened_at / 1000
    (action,) = actions_in(reader.messages, topics.action("care"))
    assert isinstance(action, ActionEvent)
    assert (action.rule, action.customer_id) == ("case_unresolved", "dora")
    assert action.triggered_at == opened_at + 3_000  # a timer action's time is its deadline
    assert elapsed_s >= 3.0 + 1.0  # the deadline plus the allowed lateness, on the wall clock

"""The Faust worker on a real Tansu broker: actions, decisions, dead letters, state, idle ticks.

Each test runs `python -m processors.worker` as a child process (as `moments
worker` does) with the test's settings, publishes through the publisher SDK,
and reads the output topics with a plain confluent-kafka consumer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from common.settings import Settings
from producers.publisher import Publisher
from schemas.codec import codec_for
from schemas.records import ActionEvent, Decision, InteractionEvent

WAIT_S = 60.0
DAY_MS = 86_400_000
ERROR_HEADERS = {
    "moments.error.stage",
    "moments.error.class",
    "moments.error.message",
    "moments.error.topic",
    "moments.error.partition",
    "moments.error.offset",
}


class WorkerProcess:
    """`python -m processors.worker` in a child process, its output in a log file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings.model_copy(update={"data_dir": log_path.parent / "data"})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.settings.as_env()}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "processors.worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code (SIGKILL if it does not stop in time)."""
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            raise

    def check_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log_tail()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "worker log tail:\n" + "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_worker(settings: Settings, log_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, log_path)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


class TopicReader:
    """Reads every partition of some topics from the beginning (assign, no group join)."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
        )
        metadata = self.consumer.list_topics(timeout=10)
        self.consumer.assign(
            [
                TopicPartition(topic, partition, OFFSET_BEGINNING)
                for topic in topics
                for partition in metadata.topics[topic].partitions
            ]
        )
        self.messages: list[Message] = []

    def poll_until(
        self, done: Callable[[list[Message]], bool], worker: WorkerProcess, timeout_s: float
    ) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while not done(self.messages):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s:.0f} s; {worker.log_tail()}")
            worker.check_alive()
            for message in self.consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    self.messages.append(message)
        return self.messages

    def drain(self, quiet_s: float = 2.0) -> list[Message]:
        """Read on until nothing arrived for `quiet_s`."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            batch = [m for m in self.consumer.consume(500, timeout=0.5) if m.error() is None]
            if batch:
                self.messages.extend(batch)
                last = time.monotonic()
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def event(customer: str, event_type: str, occurred_at: int, **fields: object) -> InteractionEvent:
    return InteractionEvent(
        event_id=uuid.uuid4().hex,
        customer_id=customer,
        channel=str(fields.pop("channel", "call")),
        type=event_type,
        occurred_at=occurred_at,
        source="test",
        **fields,  # type: ignore[arg-type]
    )


def actions_in(messages: list[Message], topic: str) -> list[ActionEvent]:
    codec = codec_for(ActionEvent)
    return [codec.decode(_value(m)) for m in messages if m.topic() == topic]


def decisions_in(messages: list[Message], topic: str) -> list[Decision]:
    codec = codec_for(Decision)
    return [codec.decode(_value(m)) for m in messages if m.topic() == topic]


def headers_of(message: Message) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for header in message.headers() or []:
        name, value = header[0], header[1]
        found[str(name)] = value if isinstance(value, bytes) else str(value or "").encode()
    return found


def _value(message: Message) -> bytes:
    value = message.value()
    assert isinstance(value, bytes)
    return value


def test_cancellation_fires_care_action_and_poison_goes_to_dlq(
    settings: Settings, tmp_path: Path
) -> None:
    topics = settings.topics
    now = int(time.time() * 1000)
    reader = TopicReader(
        settings, [topics.action("care"), topics.decisions, topics.interactions_dlq]
    )
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with Publisher(settings) as publisher:
            publisher.publish(event("ann", "cancellation_requested", now, product="gas"))
        # Poison with the key of a customer whose good event follows on the same partition.
        producer = Producer(settings.kafka_config(partitioner="murmur2_random"))
        producer.produce(topics.interactions, key=b"bob", value=b"not avro at all")
        producer.produce(topics.interactions, key=b"bob", value=None)
        oversized = b"\xc3\x01" + b"x" * (settings.max_event_bytes + 1)
        producer.produce(topics.interactions, key=b"bob", value=oversized)
        assert producer.flush(10) == 0
        with Publisher(settings) as publisher:
            publisher.publish(event("bob", "cancellation_requested", now + 1))

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
    assert (action.rule, action.destination, action.triggered_at) == (
        "life_event_check_in",
        "care",
        now,
    )
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
    settings = settings.model_copy(update={"idle_tick_s": 3600.0, "worker_store": store})
    topics = settings.topics
    customers = [f"cust-{i:03d}" for i in range(40)]
    now = int(time.time() * 1000)
    log = tmp_path / "worker.log"
    reader = TopicReader(settings, [topics.action("care"), topics.decisions])

    def decided(count: int) -> Callable[[list[Message]], bool]:
        return lambda ms: len(decisions_in(ms, topics.decisions)) >= count

    with running_worker(settings, log) as worker:
        with Publisher(settings) as publisher:
            for customer in customers:
                publisher.publish(event(customer, "cancellation_requested", now - DAY_MS))
        reader.poll_until(decided(len(customers)), worker, WAIT_S)
        assert worker.stop() == 0, worker.log_tail()  # SIGTERM stops it cleanly

    with running_worker(settings, log) as worker:
        with Publisher(settings) as publisher:
            for customer in customers:
                publisher.publish(event(customer, "cancellation_requested", now, channel="email"))
        reader.poll_until(decided(2 * len(customers)), worker, WAIT_S)
        messages = reader.drain()

    decisions = decisions_in(messages, topics.decisions)
    first = [d for d in decisions if d.decided_at == now - DAY_MS]
    second = [d for d in decisions if d.decided_at == now]
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
    settings = settings.model_copy(
        update={"rules_path": rules, "allowed_lateness_s": 1.0, "idle_tick_s": 0.5}
    )
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

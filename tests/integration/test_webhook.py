"""Webhook sink against a real broker and a local HTTP receiver.

The receiver (http.server in a thread) verifies every signature with the
documented helper (its own URL and the keys of its destination: `care` signs
with a rotated key of its own, the others with the default secret), answers
from a per-action script (500 then 200, 400, ...) and records what arrived in
order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import SecretStr

from common.settings import Settings
from schemas.codec import codec_for
from schemas.records import ActionEvent
from sinks.signing import SignatureError, verify_signature
from sinks.webhook import RetryPolicy, run_webhook_sink
from tests.support.http import serving_posts
from tests.support.timing import wait_for

SECRET = "integration-secret"
#: `care` has its own keys, newest first (a rotation in progress); the others use SECRET.
CARE_KEYS = [("care-2026-07", "care-secret-new"), ("care-2026-01", "care-secret-old")]
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=0.2, timeout_s=5.0)


@dataclass
class Receiver:
    """What the local webhook receiver saw, and how it answers each action id."""

    script: dict[str, list[int]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    delivered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (path, event)
    bad_signatures: list[str] = field(default_factory=list)
    key_ids: dict[str, set[str]] = field(default_factory=dict)  # destination → key ids seen
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def url(self, destination: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{destination}?token=T0KEN"

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        destination = path.split("?")[0].rsplit("/", 1)[-1]
        keys: str | dict[str, str] = dict(CARE_KEYS) if destination == "care" else SECRET
        try:
            verify_signature(keys, body, headers, url=self.url(destination))
        except SignatureError as exc:
            with self.lock:
                self.bad_signatures.append(str(exc))
            return 401
        event = json.loads(body)
        with self.lock:
            key_id = next(v for k, v in headers.items() if k.lower() == "x-moments-key-id")
            self.key_ids.setdefault(destination, set()).add(key_id)
            n = self.attempts.get(event["id"], 0)
            self.attempts[event["id"]] = n + 1
            plan = self.script.get(event["id"], [])
            status = plan[n] if n < len(plan) else 200
            if 200 <= status < 300:
                self.delivered.append((path.split("?")[0], event))
        return status

    def delivered_ids(self) -> set[str]:
        with self.lock:
            return {event["id"] for _, event in self.delivered}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    with serving_posts(state.answer) as port:
        state.port = port
        yield state


def an_action(n: int, customer: str, destination: str = "care") -> ActionEvent:
    return ActionEvent(
        action_id=f"act-{destination}-{customer}-{n:03d}",
        customer_id=customer,
        rule="case_follow_up",
        action="case_follow_up",
        rule_version=1,
        destination=destination,
        priority=70,
        reason="A complaint was filed; a human follows up.",
        evidence=[f"e-{customer}-{n}"],
        channel_hint="email",
        triggered_at=1_767_225_600_000 + n * 1000,
        details={},
    )


def produce(
    settings: Settings, records: list[tuple[str, str, bytes]]
) -> dict[tuple[str, int], int]:
    """Produce (topic, key, value) records; return the next offset per partition."""
    producer = Producer(settings.kafka_config(**{"partitioner": "murmur2_random", "linger.ms": 0}))
    ends: dict[tuple[str, int], int] = {}
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            key = (msg.topic(), msg.partition())
            ends[key] = max(ends.get(key, 0), msg.offset() + 1)

    for topic, key, value in records:
        producer.produce(topic, key=key.encode(), value=value, on_delivery=report)
    assert producer.flush(30) == 0 and not errors
    return ends


@pytest.fixture
def run_sink(settings: Settings) -> Iterator[Callable[[Settings], None]]:
    """Start the webhook sink in a thread; stop it (and surface its errors) after the test."""
    started: list[tuple[threading.Thread, threading.Event]] = []
    failures: list[BaseException] = []

    def start(sink_settings: Settings) -> None:
        stop = threading.Event()

        def target() -> None:
            try:
                run_webhook_sink(sink_settings, stop=stop, policy=FAST)
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        started.append((thread, stop))

    yield start
    for thread, stop in started:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the webhook sink did not stop within 60 s"
    assert not failures, failures


def sink_settings(settings: Settings, receiver: Receiver, *destinations: str) -> Settings:
    return settings.replace(
        webhook_secret=SecretStr(SECRET),
        webhook_secrets={"care": [(k, SecretStr(v)) for k, v in CARE_KEYS]},
        webhook_urls={d: receiver.url(d) for d in destinations},
        webhook_allow_http=True,  # the local receiver speaks plain http
        webhook_group=f"{settings.sinks.sink_group}-webhook",
    )


def committed(settings: Settings, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    consumer = Consumer(settings.kafka_config(**{"group.id": settings.sinks.webhook_group}))
    try:
        result = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in result}
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str, count: int, timeout_s: float) -> list[Any]:
    """The first `count` records of a topic (every partition, from the start)."""
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"{topic}-reader", "enable.auto.commit": False})
    )
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(msg)
    finally:
        consumer.close()
    return records


def test_signed_cloudevents_in_customer_order_with_retries_on_500(
    settings: Settings, receiver: Receiver, run_sink: Callable[[Settings], None]
) -> None:
    codec = codec_for(ActionEvent)
    customers = ["ann", "bob", "cy", "dee"]
    actions = [
        an_action(n, customer, destination)
        for n in range(8)
        for customer in customers
        for destination in ("care", "billing")
    ]
    # Some actions fail with 500 (once or twice) before they succeed.
    for action in actions[::5]:
        receiver.script[action.action_id] = [500, 500]
    ends = produce(
        settings,
        [(settings.topics.action(a.destination), a.customer_id, codec.encode(a)) for a in actions],
    )
    s = sink_settings(settings, receiver, "care", "billing")
    run_sink(s)

    wanted = {a.action_id for a in actions}
    wait_for(lambda: wanted <= receiver.delivered_ids(), 60, "every action delivered")
    assert not receiver.bad_signatures
    assert receiver.key_ids == {"care": {"care-2026-07"}, "billing": {"default"}}

    # Retried ones took three attempts and were delivered once.
    for action in actions[::5]:
        assert receiver.attempts[action.action_id] == 3

    # Per customer and destination, the receiver saw the actions in the order produced.
    with receiver.lock:
        firsts: dict[str, tuple[str, dict[str, Any]]] = {}
        for path, event in receiver.delivered:
            firsts.setdefault(event["id"], (path, event))  # dicts keep arrival order
    for destination in ("care", "billing"):
        for customer in customers:
            seen = [
                event["id"]
                for path, event in firsts.values()
                if path == f"/hooks/{destination}" and event["subject"] == customer
            ]
            produced = [
                a.action_id
                for a in actions
                if a.destination == destination and a.customer_id == customer
            ]
            assert seen == produced

    # The CloudEvent carries the action as data.
    path, event = firsts[actions[0].action_id]
    assert path == "/hooks/care"
    assert event["type"] == "moments.action.case_follow_up"
    assert event["source"] == "moments/case_follow_up"
    assert event["data"]["action_id"] == actions[0].action_id
    assert event["time"] == "2026-01-01T00:00:00.000+00:00"

    # Offsets are committed up to the end once everything is delivered.
    wait_for(lambda: committed(s, list(ends)) == ends, 20, "offsets committed to the end")


def test_400_and_undecodable_records_go_to_the_dlq_with_error_headers(
    settings: Settings, receiver: Receiver, run_sink: Callable[[Settings], None]
) -> None:
    codec = codec_for(ActionEvent)
    rejected = an_action(1, "eve")
    after = an_action(2, "eve")
    receiver.script[rejected.action_id] = [400]
    topic = settings.topics.action("care")
    rejected_bytes = codec.encode(rejected)
    ends = produce(
        settings,
        [
            (topic, "eve", rejected_bytes),
            (topic, "eve", b"\x01not avro"),
            (topic, "eve", codec.encode(after)),
        ],
    )
    s = sink_settings(settings, receiver, "care")
    run_sink(s)

    wait_for(lambda: after.action_id in receiver.delivered_ids(), 60, "the next action")
    assert receiver.attempts[rejected.action_id] == 1  # a 400 is not retried
    assert rejected.action_id not in receiver.delivered_ids()

    dead = read_all(settings, settings.topics.actions_dlq, 2, 30)
    assert len(dead) == 2
    by_stage = {dict(m.headers())["moments.error.stage"].decode(): m for m in dead}
    assert set(by_stage) == {"webhook", "decode"}

    webhook = by_stage["webhook"]
    headers = {k: v.decode() for k, v in webhook.headers()}
    assert webhook.value() == rejected_bytes
    assert webhook.key() == b"eve"
    assert headers["moments.error.class"] == "HTTPStatusError"
    assert "400" in headers["moments.error.message"]
    assert "T0KEN" not in headers["moments.error.message"]
    assert headers["moments.error.topic"] == topic
    assert headers["moments.error.http_status"] == "400"
    partition, offset = (
        int(headers["moments.error.partition"]),
        int(headers["moments.error.offset"]),
    )
    assert ends[(topic, partition)] == offset + 3  # the first of the three records

    undecodable = by_stage["decode"]
    assert undecodable.value() == b"\x01not avro"
    decode_headers = {k: v.decode() for k, v in undecodable.headers()}
    assert decode_headers["moments.error.class"] == "DecodeError"
    assert decode_headers["moments.error.offset"] == str(offset + 1)

    wait_for(lambda: committed(s, list(ends)) == ends, 20, "offsets committed past the DLQ")


def test_an_action_in_retry_when_the_sink_stops_is_delivered_after_restart(
    settings: Settings, receiver: Receiver, run_sink: Callable[[Settings], None]
) -> None:
    codec = codec_for(ActionEvent)
    first, stuck = an_action(1, "fay"), an_action(2, "fay")
    receiver.script[stuck.action_id] = [503] * 1000  # down until the test says otherwise
    topic = settings.topics.action("care")
    ends = produce(
        settings, [(topic, "fay", codec.encode(first)), (topic, "fay", codec.encode(stuck))]
    )
    ((_, partition),) = ends
    s = sink_settings(settings, receiver, "care")

    stop = threading.Event()
    slow = RetryPolicy(max_attempts=1000, base_delay_s=0.2, max_delay_s=0.4, timeout_s=5.0)
    sink = threading.Thread(
        target=run_webhook_sink, args=(s,), kwargs={"stop": stop, "policy": slow}, daemon=True
    )
    sink.start()
    wait_for(lambda: receiver.attempts.get(stuck.action_id, 0) >= 2, 60, "retries of 503")
    stop.set()
    sink.join(30)
    assert not sink.is_alive()
    # The delivered record is committed, the one still being retried is not.
    assert committed(s, [(topic, partition)])[(topic, partition)] == ends[(topic, partition)] - 1

    with receiver.lock:
        receiver.script[stuck.action_id] = []  # the receiver is back
    run_sink(s)
    wait_for(lambda: stuck.action_id in receiver.delivered_ids(), 60, "delivery after restart")
    assert [e["id"] for _, e in receiver.delivered].count(first.action_id) == 1
    wait_for(lambda: committed(s, list(ends)) == ends, 20, "offsets committed to the end")

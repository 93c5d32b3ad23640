"""The worker as a child process of the test, and reading what it wrote to its topics.

`running_worker` runs `python -m processors.worker` (as `moments worker` does) with the
test's settings; `TopicReader` reads the output topics with a plain confluent-kafka
consumer.
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
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from common.settings import Settings
from schemas.codec import codec_for
from schemas.records import ActionEvent, Decision, InteractionEvent

#: How long a test waits for the worker's output.
WAIT_S = 60.0


class WorkerProcess:
    """`python -m processors.worker` in a child process, its output in a log file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings.replace(data_dir=log_path.parent / "data")
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
    """A started worker, stopped when the block ends."""
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
    """An interaction event with a random id (channel "call" unless given)."""
    return InteractionEvent(
        event_id=uuid.uuid4().hex,
        customer_id=customer,
        channel=str(fields.pop("channel", "call")),
        type=event_type,
        occurred_at=occurred_at,
        source="test",
        **fields,  # type: ignore[arg-type]
    )


def clock_event(customer: str, occurred_at: int) -> InteractionEvent:
    """An event of `customer` that no rule of the default pack acts on (a payment: only a
    positive moment in the relationship ledger). Published after the customer's other events,
    it moves the watermark of their partition to `occurred_at` - the allowed lateness: what
    waits for the watermark until then (a gathered cancellation, an event held for the rules
    that decide at the watermark, an absence deadline) is decided (docs/design.md 11.1)."""
    return event(customer, "payment_received", occurred_at, channel="billing")


def actions_in(messages: list[Message], topic: str) -> list[ActionEvent]:
    """The actions among `messages` read from `topic`, decoded."""
    codec = codec_for(ActionEvent)
    return [codec.decode(_value(m)) for m in messages if m.topic() == topic and not _control(m)]


def decisions_in(messages: list[Message], topic: str) -> list[Decision]:
    """The decisions among `messages` read from `topic`, decoded."""
    codec = codec_for(Decision)
    return [codec.decode(_value(m)) for m in messages if m.topic() == topic and not _control(m)]


def headers_of(message: Message) -> dict[str, bytes]:
    """A record's headers by name, every value as bytes."""
    found: dict[str, bytes] = {}
    for header in message.headers() or []:
        name, value = header[0], header[1]
        found[str(name)] = value if isinstance(value, bytes) else str(value or "").encode()
    return found


def _control(message: Message) -> bool:
    """An erasure marker (or another control record): no action or decision."""
    return "moments.control" in headers_of(message)


def _value(message: Message) -> bytes:
    value = message.value()
    assert isinstance(value, bytes)
    return value

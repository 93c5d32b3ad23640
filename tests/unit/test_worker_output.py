"""OutputSender and the commit guard: offsets never pass output the broker did not take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from faust.exceptions import ProducerSendError
from faust.types import TP

from processors.faust_support import (
    OUTPUT_PRODUCER_CONFIG,
    WorkerConsumer,
    first_failure,
    output_sender,
)


class FakeMessage:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0


class FakeProducer:
    """confluent-kafka-like: `produce` queues, `poll` serves the delivery reports.

    `fail` makes the next records fail; `hold` keeps reports back for that many polls
    (the broker has not answered yet).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.records: list[tuple[Any, ...]] = []
        self.pending: list[tuple[Callable[[Any, Any], None], Any, FakeMessage]] = []
        self.fail: str | None = None
        self.hold = 0
        self.polls = 0

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        *,
        headers: Any = None,
        on_delivery: Callable[[Any, Any], None],
    ) -> None:
        self.records.append((topic, key, value, headers))
        self.pending.append((on_delivery, self.fail, FakeMessage(topic)))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        if self.hold:
            self.hold -= 1
            return 0
        served, self.pending = self.pending, []
        for report, error, message in served:
            report(error, message)
        return len(served)


class FakeApp:
    """What WorkerConsumer.persist_staged looks up outputs and tables by (nothing staged)."""


class FakeConsumer:
    """What WorkerConsumer._commit_offsets uses of itself before it commits."""

    def __init__(self, app: FakeApp) -> None:
        self.app = app
        self.crashed: list[BaseException] = []

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)

    _delivered = WorkerConsumer._delivered
    persist_staged = WorkerConsumer.persist_staged


def make_sender(app: FakeApp) -> tuple[Any, list[FakeProducer]]:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[-1]

    return output_sender(app, {"bootstrap.servers": "b:9092"}, factory), made


def test_records_go_to_librdkafka_with_their_headers_and_the_java_partitioner() -> None:
    sender, made = make_sender(FakeApp())
    sender.send("actions.care", b"ann", b"v1")
    sender.send("interactions.dlq", b"bob", None, [("moments.error.stage", b"size")])
    (producer,) = made
    assert producer.records == [
        ("actions.care", b"ann", b"v1", None),
        ("interactions.dlq", b"bob", None, [("moments.error.stage", b"size")]),
    ]
    assert producer.config["bootstrap.servers"] == "b:9092"
    assert producer.config["partitioner"] == "murmur2_random"  # = aiokafka's and Java's
    assert producer.config["acks"] == "all" == OUTPUT_PRODUCER_CONFIG["acks"]
    delivery = sender.take()
    assert (delivery.sent, sender.take().sent) == (2, 0)
    assert asyncio.run(delivery.wait()) is None
    assert delivery.settled == 2


def test_a_delivery_waits_until_the_broker_answered_every_record() -> None:
    sender, made = make_sender(FakeApp())
    sender.send("decisions", b"ann", b"d1")
    (producer,) = made
    producer.hold = 3
    delivery = sender.take()
    sender.send("decisions", b"ann", b"d2")  # after the seal: the next delivery's
    assert asyncio.run(delivery.wait()) is None
    assert producer.polls == 4 and delivery.settled == delivery.sent == 1


def test_a_failed_delivery_crashes_the_worker_instead_of_committing() -> None:
    app = FakeApp()
    sender, made = make_sender(app)
    consumer = FakeConsumer(app)
    sender.send("decisions", b"ann", b"ok")
    made[0].fail = "MSG_SIZE_TOO_LARGE"
    sender.send("actions.care", b"ann", b"too big")
    offsets = {TP("interactions", 0): 42}
    committed = asyncio.run(WorkerConsumer._commit_offsets(consumer, offsets))  # type: ignore[arg-type]
    assert committed is False
    (crash,) = consumer.crashed
    assert isinstance(crash, ProducerSendError)
    assert "MSG_SIZE_TOO_LARGE" in str(crash) and "actions.care" in str(crash)


def test_nothing_sent_commits_without_waiting() -> None:
    app = FakeApp()
    make_sender(app)
    consumer = FakeConsumer(app)
    assert asyncio.run(consumer.persist_staged()) == 0
    assert consumer.crashed == []


def test_first_failure_names_the_first_error() -> None:
    async def scenario() -> BaseException | None:
        loop = asyncio.get_running_loop()
        ok, bad, later = loop.create_future(), loop.create_future(), loop.create_future()
        ok.set_result(1)
        bad.set_exception(ValueError("first"))
        later.set_exception(ValueError("second"))
        return await first_failure([ok, bad, later])

    failure = asyncio.run(scenario())
    assert isinstance(failure, ValueError) and str(failure) == "first"


@pytest.mark.parametrize("full", [1, 3])
def test_a_full_queue_waits_for_deliveries_instead_of_dropping(full: int) -> None:
    sender, made = make_sender(FakeApp())
    sender.send("decisions", b"ann", b"first")
    producer = made[0]
    produce = producer.produce
    refusals = [full]

    def busy(*args: Any, **kwargs: Any) -> None:
        if refusals[0]:
            refusals[0] -= 1
            raise BufferError("Local: Queue full")
        produce(*args, **kwargs)

    producer.produce = busy  # type: ignore[method-assign]
    sender.send("decisions", b"ann", b"second")
    assert [r[2] for r in producer.records] == [b"first", b"second"]
    assert producer.polls == full
    assert sender.take().sent == 2

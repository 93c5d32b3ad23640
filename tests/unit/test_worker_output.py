"""OutputSender and the commit guard: offsets never pass output the broker did not take."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.exceptions import ProducerSendError
from faust.types import TP

from processors.faust_support import WorkerConsumer, first_failure, output_sender


class FakeProducer:
    """aiokafka-like: `send` returns a delivery future; `fail` makes the next ones fail."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []
        self.fail: Exception | None = None
        self.flushed = 0

    async def send(self, *record: Any) -> asyncio.Future[Any]:
        self.records.append(record)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail is None:
            future.set_result(("metadata", len(self.records)))
        else:
            future.set_exception(self.fail)
        return future

    async def flush(self) -> None:
        self.flushed += 1


class FakeApp:
    def __init__(self) -> None:
        self.producer = FakeProducer()


class FakeConsumer:
    """What WorkerConsumer._commit_offsets uses of itself before it commits."""

    def __init__(self, app: FakeApp) -> None:
        self.app = app
        self.crashed: list[BaseException] = []

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)

    _delivered = WorkerConsumer._delivered
    persist_staged = WorkerConsumer.persist_staged


def test_records_go_straight_to_the_producer_with_their_headers() -> None:
    app = FakeApp()
    sender = output_sender(app)

    async def scenario() -> None:
        await sender.send("actions.care", b"ann", b"v1")
        await sender.send("interactions.dlq", b"bob", None, [("moments.error.stage", b"size")])
        sent = sender.take()
        assert len(sent) == 2 and sender.take() == []
        assert await first_failure(sent) is None

    asyncio.run(scenario())
    assert app.producer.records == [
        ("actions.care", b"ann", b"v1", None, None, None),
        ("interactions.dlq", b"bob", None, None, None, [("moments.error.stage", b"size")]),
    ]


def test_a_failed_delivery_crashes_the_worker_instead_of_committing() -> None:
    app = FakeApp()
    sender = output_sender(app)
    consumer = FakeConsumer(app)

    async def scenario() -> bool:
        await sender.send("decisions", b"ann", b"ok")
        app.producer.fail = RuntimeError("MessageSizeTooLarge")
        await sender.send("actions.care", b"ann", b"too big")
        offsets = {TP("interactions", 0): 42}
        return await WorkerConsumer._commit_offsets(consumer, offsets)  # type: ignore[arg-type]

    assert asyncio.run(scenario()) is False
    assert app.producer.flushed == 1
    (crash,) = consumer.crashed
    assert isinstance(crash, ProducerSendError)
    assert "MessageSizeTooLarge" in str(crash)


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

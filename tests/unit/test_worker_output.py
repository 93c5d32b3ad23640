"""OutputSender and the commit guard: offsets never pass output the broker did not take."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.exceptions import ProducerSendError
from faust.types import TP

from processors.faust_host.changelog import StagedTable
from processors.faust_host.consumer import CommitBarrier, WorkerConsumer
from processors.faust_host.output import OUTPUT_PRODUCER_CONFIG, first_failure


class FakeMessage:
    def __init__(self, topic: str, partition: int | None = None, offset: int = 0) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition or 0

    def offset(self) -> int:
        return self._offset


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
        partition: int | None = None,
        *,
        headers: Any = None,
        on_delivery: Callable[[Any, Any], None],
    ) -> None:
        if partition is None:
            self.records.append((topic, key, value, headers))
        else:
            self.records.append((topic, key, value, partition))
        offset = len(self.records) - 1
        self.pending.append((on_delivery, self.fail, FakeMessage(topic, partition, offset)))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        if self.hold:
            self.hold -= 1
            return 0
        served, self.pending = self.pending, []
        for report, error, message in served:
            report(error, message)
        return len(served)


class FakeConsumer:
    """What WorkerConsumer._commit_offsets uses of itself before it commits."""

    def __init__(self, commits: CommitBarrier) -> None:
        self.commits = commits
        self.crashed: list[BaseException] = []

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)

    _delivered = WorkerConsumer._delivered
    persist_staged = WorkerConsumer.persist_staged


def make_sender(commits: CommitBarrier) -> tuple[Any, list[FakeProducer]]:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[-1]

    return commits.output_sender({"bootstrap.servers": "b:9092"}, factory), made


def test_records_go_to_librdkafka_with_their_headers_and_the_java_partitioner() -> None:
    sender, made = make_sender(CommitBarrier())
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
    sender, made = make_sender(CommitBarrier())
    sender.send("decisions", b"ann", b"d1")
    (producer,) = made
    producer.hold = 3
    delivery = sender.take()
    sender.send("decisions", b"ann", b"d2")  # after the seal: the next delivery's
    assert asyncio.run(delivery.wait()) is None
    assert producer.polls == 4 and delivery.settled == delivery.sent == 1


def test_a_failed_delivery_crashes_the_worker_instead_of_committing() -> None:
    commits = CommitBarrier()
    sender, made = make_sender(commits)
    consumer = FakeConsumer(commits)
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
    commits = CommitBarrier()
    make_sender(commits)
    consumer = FakeConsumer(commits)
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
    sender, made = make_sender(CommitBarrier())
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


class FakeStore(dict[str, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[TP, int] = {}

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted[tp] = offset


class FakeTable:
    """What StagedTable uses of a Faust table to send its changelog."""

    def __init__(self) -> None:
        self.data = FakeStore()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "app-state-changelog")
        self.key_type, self.key_serializer = str, "json"
        self.app = SimpleNamespace(
            serializers=SimpleNamespace(dumps_key=lambda t, k, serializer: json.dumps(k).encode())
        )


def test_the_changelog_goes_through_librdkafka_to_each_partition_after_the_output() -> None:
    sender, made = make_sender(CommitBarrier())
    table = StagedTable(FakeTable(), sender)
    sender.send("decisions", b"ann", b"d1")  # an output record, not the changelog's
    table.write(2, {"2/e/c:ann": b"{}"})
    table.write(5, {"5/w/applied": b"7", "5/e/gone": None})

    async def scenario() -> None:
        detached = table.take()
        (done,) = await table.send(detached)
        await done
        table.apply(detached)

    asyncio.run(scenario())
    producer = made[0]
    assert producer.records[1:] == [
        ("app-state-changelog", b'"2/e/c:ann"', b"{}", 2),
        ("app-state-changelog", b'"5/w/applied"', b"7", 5),
        ("app-state-changelog", b'"5/e/gone"', None, 5),
    ]
    assert table.table.data.persisted == {
        TP("app-state-changelog", 2): 1,
        TP("app-state-changelog", 5): 3,
    }
    assert sender.take().sent == 1  # the output's delivery counts only the output


def test_a_changelog_record_refused_fails_the_commit() -> None:
    sender, made = make_sender(CommitBarrier())
    table = StagedTable(FakeTable(), sender)
    table.write(0, {"0/w/applied": b"1"})
    made_producer = sender.producer
    made_producer.fail = "REQUEST_TIMED_OUT"

    async def scenario() -> BaseException | None:
        return await first_failure(await table.send(table.take()))

    failure = asyncio.run(scenario())
    assert failure is not None and "REQUEST_TIMED_OUT" in str(failure)
    assert table.table.data.persisted == {}
    assert made == [made_producer]


def test_the_installed_consumer_commits_what_its_barrier_holds() -> None:
    app = faust.App("unit-barrier", broker="kafka://127.0.0.1:1", web_enabled=False)
    commits = CommitBarrier()
    commits.install(app)
    consumer = app.consumer
    assert isinstance(consumer, WorkerConsumer)
    assert consumer.commits is commits
    app.transport.Consumer = WorkerConsumer  # type: ignore[misc]  # as the bench's empty agent
    unbound = app.transport.create_consumer(
        callback=print, on_partitions_revoked=print, on_partitions_assigned=print
    )
    assert isinstance(unbound, WorkerConsumer)
    assert unbound.commits is not commits and unbound.commits.outputs == []

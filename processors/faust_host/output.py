"""The worker's output records (actions, decisions, dead letters), produced with librdkafka.

`OutputSender` produces them with a confluent-kafka (librdkafka) producer,
without Faust's per-record `Topic.send` machinery or aiokafka's Python send
path, and counts their delivery reports per commit (`OutputDelivery`): the
worker's consumer (`processors.faust_host.consumer`) crashes the worker
instead of committing offsets past a record the broker did not take. It uses
no Faust internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer


class OutputDelivery:
    """The delivery reports of the output records sent between two commits.

    Counts what was produced and what the broker acknowledged or refused
    (librdkafka's delivery reports, served on the event loop's thread by
    `producer.poll`, so no lock and no GIL hand-off per record). Once sealed by
    `OutputSender.take`, `wait` returns when every record is settled: None, or
    the first delivery error.
    """

    __slots__ = ("_producer", "failure", "sent", "settled")

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.sent = 0
        self.settled = 0
        self.failure: BaseException | None = None

    def report(self, error: Any, message: Any) -> None:
        """librdkafka's delivery report for one record of this delivery."""
        self.settled += 1
        if error is not None and self.failure is None:
            self.failure = KafkaException(f"{message.topic()}[{message.partition()}]: {error}")

    async def wait(self) -> BaseException | None:
        """Wait until every record is acknowledged or refused; the first error, else None.

        Serves delivery reports every few milliseconds meanwhile (commits are not on
        the path of an event's latency; the event loop keeps running).
        """
        producer = self._producer
        while self.settled < self.sent:
            producer.poll(0)
            if self.settled < self.sent:
                await asyncio.sleep(DELIVERY_POLL_S)
        return self.failure


class OutputSender:
    """Produces the worker's output records (actions, decisions, dead letters) with librdkafka.

    `send` hands (topic, key, value, headers) to a confluent-kafka `Producer`
    (a C call; Faust's aiokafka `send` costs a coroutine, a future and Python
    request encoding per record on the event loop's thread). librdkafka batches
    them in its own threads (`linger.ms`, the murmur2 partitioner of Java
    clients and aiokafka: key = customer_id lands where it did). `serve` (after
    each batch of events) and `OutputDelivery.wait` serve the delivery reports;
    `take` seals the records sent so far into an `OutputDelivery`.
    `WorkerConsumer` waits for it before every offset commit and crashes the
    worker instead of committing if any record failed. It blocks the event loop
    only while librdkafka's queue is full.
    """

    def __init__(self, config: Mapping[str, Any], producer_factory: Any = None) -> None:
        self._config = {**OUTPUT_PRODUCER_CONFIG, **config}

        self._factory = producer_factory or Producer
        self._producer: Any = None
        self._delivery: OutputDelivery | None = None

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        *,
        partition: int | None = None,
        delivery: OutputDelivery | None = None,
    ) -> None:
        """Produce one record (partition by key unless given) into the current delivery
        (or `delivery`, for records tracked apart such as a changelog)."""
        if delivery is None:
            delivery = self._delivery or self._start()
        producer = self._producer
        report = delivery.report
        while True:
            try:
                if partition is None:
                    if headers is None:  # most records: no keyword to parse for it
                        producer.produce(topic, value, key, on_delivery=report)
                    else:
                        producer.produce(topic, value, key, headers=headers, on_delivery=report)
                else:
                    producer.produce(topic, value, key, partition, on_delivery=report)
                break
            except BufferError:  # librdkafka's queue is full: wait for deliveries (back-pressure)
                producer.poll(0.05)
        delivery.sent += 1

    @property
    def producer(self) -> Any:
        """The librdkafka producer (created on first use)."""
        if self._producer is None:
            self._start()
        return self._producer

    def serve(self) -> None:
        """Serve the delivery reports that arrived (cheap; call once per batch of events)."""
        if self._producer is not None:
            self._producer.poll(0)

    def take(self) -> OutputDelivery:
        """Seal the records sent so far into one delivery to wait for (later sends start anew)."""
        delivery = self._delivery or self._start()
        self._delivery = OutputDelivery(self._producer)
        return delivery

    def _start(self) -> OutputDelivery:
        if self._producer is None:
            self._producer = self._factory(self._config)
        self._delivery = OutputDelivery(self._producer)
        return self._delivery


#: How often a commit waiting for output acknowledgements serves delivery reports.
DELIVERY_POLL_S = 0.002

#: librdkafka options of the output producer (the settings' `kafka_config` adds the brokers
#: and security options). acks=all + idempotence: no loss, no reordering on retries.
OUTPUT_PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    # librdkafka sends one produce request per partition (aiokafka one per broker): 20 ms
    # lets each carry a batch, which halves the broker's CPU per record against 5 ms.
    "linger.ms": 20,
    "partitioner": "murmur2_random",
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
}


async def first_failure(futures: list[asyncio.Future[Any]]) -> BaseException | None:
    """The first delivery error among `futures` (waiting for any not done yet), else None."""
    for future in futures:
        try:
            await future
        except asyncio.CancelledError as exc:
            if not future.cancelled():
                raise  # we are being cancelled, not the delivery
            return exc
        except Exception as exc:
            return exc
    return None

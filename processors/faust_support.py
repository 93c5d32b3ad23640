"""What the worker adds to faust-streaming: per-partition engine state, safe recovery and seeking.

`PartitionState` is the worker's side of `processors.engine.StateStore`: the
state of ONE interactions partition, kept in a changelog-backed Faust table
under keys `"<partition>/e/<engine key>"` (the engine's own keys, including its
partition-level ones such as the watermark) and `"<partition>/w/<name>"` (the
worker's bookkeeping). Values are stored as JSON bytes (orjson, sorted keys),
so a value read back is always a fresh object (the engine cannot change the
table by mutating what it read) and falsy values (`0`, `[]`) survive recovery
(Faust's memory store drops recovered keys whose value is falsy).

Writes are buffered for the duration of one event and applied with `commit()`
inside the stream iteration of that event, so an event whose processing fails
leaves no half-written state behind. `StagedTable` stages their changelog
records (addressed explicitly to the event's partition, coalesced per key)
until the next offset commit, when `WorkerConsumer` sends them after the
output of those events is acknowledged. This costs a record per changed key
per commit instead of per event. A memory store gets the writes at once; a
persistent (rocksdb) store, which survives a kill, only once their changelog
records are acknowledged (reads see them meanwhile in an overlay), so it
never holds the state of an event whose output was not delivered.

`OutputSender` produces the worker's output records (actions, decisions, dead
letters) with a confluent-kafka (librdkafka) producer, without Faust's
per-record `Topic.send` machinery or aiokafka's Python send path, and counts
their delivery reports per commit (`OutputDelivery`): `WorkerConsumer`
crashes the worker instead of committing offsets past a record the broker
did not take.

`FencingTableManager` makes Faust's table recovery correct on Tansu 0.6.0,
whose high watermark is the base offset of the last batch + 1: recovery would
stop before the tail of the last batch. Before Faust reads the high
watermarks of the changelog partitions it is about to recover, it produces a
lone tombstone for a reserved key (`FENCE_KEY`) to each of them and flushes;
the fence is then the last batch, so every real record lies below the high
watermark. On Apache Kafka the fence costs one tiny record per partition and
rebalance.

`WorkerConsumer.halt` stops all further offset commits (and crashes the
worker unless it is being cancelled): the worker calls it when handling a
`take()` batch fails, because Faust acks the whole batch anyway.

`WorkerConsumer` also makes Faust's consumer cheaper and prompter: its drain
loop runs each message's callback inline instead of as two tasks raced with
`asyncio.wait` (Faust's `wait_first`, which cost more CPU than the rest of an
empty agent); a callback that does suspend is finished as Faust would, raced
against `suspend_flow`. And fetches wait at most `FETCH_MAX_WAIT_MS` on the
broker instead of Faust's fixed 1.5 s, which Tansu always waits out.

`WorkerConsumer` (with `FencingRecovery` stopping the flow while
streams are resumed) closes a hole in Faust + aiokafka: Faust resumes stream
partitions before it seeks them to their committed offsets and then clears
its stream queues, dropping records fetched in between; aiokafka seeks only
partitions with a committed offset above 0, so a worker of a new consumer
group silently skipped the first records of a partition. It seeks every
stream partition without a committed offset to the beginning of the log.

This module writes a table's local store directly, never through
`Table.__setitem__` (which Faust forbids inside `take()`); the caller must make
the event being handled the current event (a rocksdb store files each key
under its partition). Staged changelog records carry their partition explicitly. It
knows nothing of rules or Avro.

`broker_credentials` turns the librdkafka security options that the
confluent clients take from `settings.kafka_extra` (+ the secret) into
Faust's `broker_credentials`, so the worker reaches a SASL/TLS cluster with
the same configuration as every other process. It never puts the secret in
an error or a log line.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections import Counter
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import orjson
from confluent_kafka import KafkaException, Producer
from faust.auth import GSSAPICredentials, SASLCredentials, SSLCredentials
from faust.exceptions import ProducerSendError
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, ConsumerT, EventT
from faust.types.auth import CredentialsT

#: Table key of the fence tombstone; never holds a value.
FENCE_KEY = "~fence"

_DELETED = object()
#: Sorted keys make an unchanged value the same bytes (no changelog record for it).
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class StagedTable:
    """A Faust table whose changelog records wait for the next offset commit.

    `put`/`remove` stage one changelog record per key and partition (a key
    written by many events between two commits costs one record) and change a
    memory store at once (inside the stream iteration of the event, as Faust
    requires); a persistent store only in `apply`, after the changelog is
    acknowledged (until then `get` reads the write from an overlay).
    `WorkerConsumer` sends the staged records when Faust commits offsets: first
    it waits until everything produced so far (the actions and decisions of
    those events) is acknowledged, then it sends the records, then Faust
    flushes and commits. So the changelog never holds state whose output was
    not delivered, and never lags the committed offsets.
    """

    def __init__(self, table: Any, sender: OutputSender | None = None) -> None:
        self.table = table
        #: Produces the changelog with librdkafka when set (else through Faust's producer).
        self.sender = sender
        self._staged: dict[int, dict[str, bytes | None]] = {}
        self._local: Any = None
        #: Persistent stores only: writes whose changelog is not acknowledged yet.
        self._overlay: dict[str, bytes | None] | None = None
        #: Changelog offsets acknowledged, recorded in the store by `apply`.
        self._acked: dict[TP, int] = {}

    @property
    def local(self) -> Any:
        """The local store, as a mapping: a memory store's own dict (no proxy per access)."""
        local = self._local
        if local is None:
            store = self.table.data
            if isinstance(store, MemoryStore | dict):  # dict: a plain mapping (tests)
                local = store.data if isinstance(store, MemoryStore) else store
            else:  # persistent (rocksdb): it survives a crash, so it waits for the changelog
                local = store
                self._overlay = {}
            self._local = local
        return local

    def get(self, key: str) -> bytes | None:
        local = self.local
        overlay = self._overlay
        # the overlay first, then the local store (as `apply` or `put` wrote it)
        value = overlay[key] if overlay is not None and key in overlay else local.get(key)
        return None if value is None else bytes(value)

    def put(self, partition: int, key: str, data: bytes) -> None:
        local = self.local
        overlay = self._overlay
        if overlay is None:
            local[key] = data
        else:
            overlay[key] = data
        staged = self._staged.get(partition)
        if staged is None:
            staged = self._staged[partition] = {}
        staged[key] = data

    def remove(self, partition: int, key: str) -> None:
        store = self.local
        if self._overlay is not None:
            self._overlay[key] = None
        elif key in store:
            del store[key]
        self._staged.setdefault(partition, {})[key] = None

    def take(self) -> dict[int, dict[str, bytes | None]]:
        """Detach the records staged so far (later writes stage anew)."""
        staged, self._staged = self._staged, {}
        return staged

    def apply(self, staged: dict[int, dict[str, bytes | None]]) -> None:
        """The changelog of `staged` is acknowledged: write it to a persistent local store,
        then record the changelog offsets it covers (a crash in between re-reads them).

        A memory store got its writes at once (it does not survive a crash; a restart
        recovers the changelog). A persistent store gets them only now, so after a kill
        it never holds the state of an event whose output was not delivered; until
        then `get` reads them from the overlay.
        """
        overlay = self._overlay
        store = self.table.data
        if overlay is not None:
            for partition, writes in staged.items():
                # the store files each key under the current event's partition
                event = cast(EventT[Any], _PartitionEvent(partition))
                token = _current_event.set(weakref.ref(event))
                try:
                    for key, data in writes.items():
                        if data is None:
                            if key in store:
                                del store[key]
                        else:
                            store[key] = data
                        if overlay.get(key, _DELETED) is data:  # nothing newer staged since
                            del overlay[key]
                finally:
                    _current_event.reset(token)
        acked, self._acked = self._acked, {}
        for tp, offset in acked.items():
            store.set_persisted_offset(tp, offset)

    def acknowledged(self, tp: TP, offset: int) -> None:
        """A changelog record of `tp` at `offset` was acknowledged."""
        if offset > self._acked.get(tp, -1):
            self._acked[tp] = offset

    async def send(self, staged: dict[int, dict[str, bytes | None]]) -> list[asyncio.Future[Any]]:
        """Hand detached records to the producer, each to its partition; their delivery futures.

        Straight to the producer rather than through `Table.send_changelog`, whose
        per-record buffer overflows at every commit and stalls the stream; like it,
        each acknowledgement records the persisted offset (used by rocksdb stores),
        here at `apply`, once the local store holds what it covers.
        """
        table = self.table
        topic = table.changelog_topic.get_topic_name()
        key_type, key_serializer = table.key_type, table.key_serializer
        dumps_key = table.app.serializers.dumps_key  # the table's own key bytes, for recovery
        if self.sender is not None:
            sender = self.sender
            delivery = ChangelogDelivery(sender, self)
            for partition, writes in staged.items():
                for key, data in writes.items():
                    raw_key = dumps_key(key_type, key, serializer=key_serializer)
                    sender.send(topic, raw_key, data, partition=partition, delivery=delivery)
                    if delivery.sent % _SEND_SLICE == 0:
                        await asyncio.sleep(0)  # a commit's thousands of records: let events in
            return [asyncio.ensure_future(delivery.acknowledged())]
        send = table.app.producer.send
        futures: list[asyncio.Future[Any]] = []
        for partition, writes in staged.items():
            acknowledged = partial(_acknowledged, self, TP(topic, partition))
            for key, data in writes.items():
                raw_key = dumps_key(key_type, key, serializer=key_serializer)
                future = await send(topic, raw_key, data, partition, None, None)
                future.add_done_callback(acknowledged)
                futures.append(future)
        return futures


#: Changelog records produced between two yields to the event loop.
_SEND_SLICE = 256


class _PartitionEvent:
    """Stands for an event of `partition` while `StagedTable.apply` writes a store."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, partition: int) -> None:
        self.message = _PartitionOnly(partition)


class _PartitionOnly:
    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


def _acknowledged(table: StagedTable, tp: TP, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        table.acknowledged(tp, future.result().offset)


_STAGED: weakref.WeakKeyDictionary[Any, list[StagedTable]] = weakref.WeakKeyDictionary()


def stage_table(app: Any, table: Any, sender: OutputSender | None = None) -> StagedTable:
    """Wrap a table of `app` so that `WorkerConsumer` sends its changelog at commit time.

    With `sender`, the changelog is produced with its librdkafka producer.
    """
    staged = StagedTable(table, sender)
    _STAGED.setdefault(app, []).append(staged)
    return staged


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


class ChangelogDelivery(OutputDelivery):
    """The delivery of one commit's changelog records, telling `table` each acknowledged
    offset (recorded in its store once the store holds the records)."""

    __slots__ = ("table",)

    def __init__(self, sender: OutputSender, table: StagedTable) -> None:
        super().__init__(sender.producer)
        self.table = table

    def report(self, error: Any, message: Any) -> None:
        super().report(error, message)
        if error is None:
            self.table.acknowledged(TP(message.topic(), message.partition()), message.offset())

    async def acknowledged(self) -> None:
        """Wait for the records; raise the first delivery error."""
        failure = await self.wait()
        if failure is not None:
            raise failure


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

_OUTPUTS: weakref.WeakKeyDictionary[Any, list[OutputSender]] = weakref.WeakKeyDictionary()


def output_sender(
    app: Any, config: Mapping[str, Any], producer_factory: Any = None
) -> OutputSender:
    """An `OutputSender` whose deliveries `WorkerConsumer` checks before each commit.

    `config` is a confluent-kafka client config (`settings.kafka_config()`).
    """
    sender = OutputSender(config, producer_factory)
    _OUTPUTS.setdefault(app, []).append(sender)
    return sender


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


class PartitionState:
    """The `StateStore` of one interactions partition, backed by a `StagedTable`.

    Reads see this event's own pending writes first; `commit()` applies them
    (one staged changelog record per changed key) and must be called inside
    the stream iteration of the event being processed. Never share one
    instance between events.
    """

    __slots__ = ("_engine_prefix", "_partition", "_pending", "_read", "_table", "_worker_prefix")

    def __init__(self, table: StagedTable, partition: int) -> None:
        self._table = table
        self._partition = partition
        prefixes = _PREFIXES.get(partition)
        if prefixes is None:
            prefixes = _PREFIXES[partition] = (f"{partition}/e/", f"{partition}/w/")
        self._engine_prefix, self._worker_prefix = prefixes
        self._pending: dict[str, Any] = {}
        #: full key -> (stored bytes or None, value read): what `commit` compares against.
        self._read: dict[str, tuple[bytes | None, Any]] = {}

    # -- StateStore (engine keys) -------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        return self._get(self._engine_prefix + key)

    def set(self, key: str, value: Any) -> None:
        self._pending[self._engine_prefix + key] = value

    def delete(self, key: str) -> None:
        self._pending[self._engine_prefix + key] = _DELETED

    # -- the worker's own keys ----------------------------------------------------------------

    def get_worker(self, name: str) -> Any | None:
        """A value the worker keeps beside the engine's state (e.g. the idle clock)."""
        return self._get(self._worker_prefix + name)

    def set_worker(self, name: str, value: Any) -> None:
        self._pending[self._worker_prefix + name] = value

    # -- applying -----------------------------------------------------------------------------

    def discard_engine_writes(self) -> None:
        """Forget the engine's pending writes (it failed on the event); keep the worker's."""
        prefix = self._engine_prefix
        for full_key in [k for k in self._pending if k.startswith(prefix)]:
            del self._pending[full_key]

    def commit(self) -> int:
        """Apply the pending changes to the table; return how many keys changed."""
        table, partition, read = self._table, self._partition, self._read
        changed = 0
        dumps = orjson.dumps
        for full_key, value in self._pending.items():
            seen = read.get(full_key)
            if value is _DELETED:
                if seen is None or seen[0] is not None:  # deleting a missing key is no change
                    table.remove(partition, full_key)
                    changed += 1
                continue
            data = dumps(value, option=_JSON_OPTIONS)
            if seen is None or seen[0] != data:  # unchanged values cost no record
                table.put(partition, full_key, data)
                changed += 1
        self._pending.clear()
        read.clear()
        return changed

    def _get(self, full_key: str) -> Any | None:
        pending = self._pending
        if full_key in pending:
            value = pending[full_key]
            return None if value is _DELETED else value
        seen = self._read.get(full_key)
        if seen is not None:
            return seen[1]
        raw = self._table.get(full_key)
        value = None if raw is None else orjson.loads(raw)
        self._read[full_key] = (raw, value)
        return value


_PREFIXES: dict[int, tuple[str, str]] = {}


class FencingRecovery(Recovery):
    """Faust's table recovery, made safe for a fresh group on Tansu.

    Produces a fence record before high watermarks are read, and stops the
    consumer's flow before stream partitions are resumed and sought: Faust
    resumes them first, so records fetched while it seeks were processed and
    then cleared from the stream queues when the flow resumed.
    """

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()  # Faust resumes it once the stream partitions are sought
        await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()  # the same, when there are no tables to recover
        await super()._resume_streams(generation_id)

    async def _build_highwaters(
        self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        if tps:
            await fence_changelogs(self, tps)
        await super()._build_highwaters(consumer, tps, destination, title)


async def fence_changelogs(recovery: Recovery, tps: set[TP]) -> None:
    """Produce a lone tombstone for `FENCE_KEY` to each changelog partition and wait for it."""
    pending = []
    for tp in sorted(tps):
        table = recovery.tables._changelogs.get(tp.topic)
        if table is None:
            continue
        pending.append(
            await table.changelog_topic.send(
                key=FENCE_KEY, value=None, partition=tp.partition, value_serializer="raw"
            )
        )
    await recovery.app.producer.flush()
    for future in pending:
        await future  # raises if the broker refused the fence
    recovery.log.info("Fenced %d changelog partitions before recovery", len(pending))


class FencingTableManager(TableManager):
    """Faust's table manager using `FencingRecovery` (pass as `TableManager=` to `faust.App`)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = FencingRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


#: How long a fetch may wait on the broker for data. Faust hard-codes 1.5 s, and Tansu
#: answers a fetch only when that wait is over, not when data arrives: at a steady
#: 2k events/s the worker saw records ~0.4 s (p50) to ~0.75 s (p99) late.
FETCH_MAX_WAIT_MS = 10


class WorkerConsumerThread(AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with a short fetch wait (`FETCH_MAX_WAIT_MS`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class WorkerConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer that sends staged changelogs before committing offsets,
    and seeks stream partitions without a committed offset to the beginning.

    Install with `app.transport.Consumer = WorkerConsumer` before the app starts.
    """

    _halted: BaseException | None = None

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return WorkerConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def halt(self, reason: BaseException) -> None:
        """Never commit offsets again; crash the worker unless `reason` is a cancellation.

        For records Faust acked without their being handled (a failed `take()` batch):
        a restart processes them again from the last commit (at-least-once).
        """
        if self._halted is None:
            self._halted = reason
            self.log.error("Offset commits halted: %r", reason)
        if not isinstance(reason, asyncio.CancelledError):
            await self.crash(reason)

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        if getattr(self, "_halted", None) is not None:
            return False  # see halt()
        if await self.persist_staged() is None:
            return False
        return await super()._commit_offsets(offsets, start_new_transaction)

    async def persist_staged(self) -> int | None:
        """Send the staged changelog records once the output before them is acknowledged.

        Returns how many records were sent, or None when a delivery failed (the worker
        is crashing). Called before every offset commit and when partitions are
        revoked: recovery after a rebalance re-reads the changelog, even of partitions
        the worker keeps, so a record still staged then would be overwritten by its
        older value. The state may then run ahead of the committed offsets: the worker
        skips what it redelivers (see `processors.worker`).
        """
        detached = [(table, table.take()) for table in _STAGED.get(self.app, [])]
        outputs = [output.take() for output in _OUTPUTS.get(self.app, [])]
        # First the output of the events the state covers, then the state's changelog,
        # each acknowledged before the next step.
        for delivery in outputs:
            failure = await delivery.wait()
            if failure is not None:
                await self.crash(
                    ProducerSendError(f"an output record was not delivered: {failure!r}")
                )
                return None
        changelog = [f for table, staged in detached if staged for f in await table.send(staged)]
        if not await self._delivered("a changelog record", changelog):
            return None
        for table, staged in detached:
            table.apply(staged)
        return sum(len(writes) for _, staged in detached for writes in staged.values())

    async def _delivered(self, what: str, futures: list[asyncio.Future[Any]]) -> bool:
        """Flush and check; on a failed delivery crash the worker instead of committing.

        Committing past a record the broker never took would lose it; after the crash
        a restart processes those events again (at-least-once).
        """
        if not futures:
            return True
        await self.app.producer.flush()
        failure = await first_failure(futures)
        if failure is None:
            return True
        await self.crash(ProducerSendError(f"{what} was not delivered: {failure!r}"))
        return False

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        """Faust's drain loop, without two tasks and an `asyncio.wait` per message.

        Faust runs each message's callback (the conductor's `on_message`) as a task raced
        against `suspend_flow` (`wait_first`), so that a rebalance never waits for a
        callback stuck on a full stream buffer; that costs about as much CPU as the rest
        of an empty agent. Here the callback's first step runs inline: almost always it
        finishes without suspending (nothing to race), and if it does suspend, the rest
        of it runs exactly as Faust runs it, raced against `suspend_flow`.
        """
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspend_flow = self.suspend_flow
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            pending: Any = callback(message)
                            try:
                                blocked_on = pending.send(None)
                            except StopIteration:
                                pass  # done without suspending: the usual case
                            else:
                                await self.wait_first(
                                    _resumed(pending, blocked_on), suspend_flow.wait()
                                )
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        fresh = [
            tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs
        ]
        if fresh:
            earliest = await self.earliest_offsets(*fresh)
            await self.seek_wait({tp: earliest[tp] for tp in fresh if earliest.get(tp) is not None})
        return committed


async def _resumed(coroutine: Any, blocked_on: Any) -> Any:
    """Await the rest of `coroutine`, whose first step yielded `blocked_on`."""
    return await _Resume(coroutine, blocked_on)


class _Resume:
    """Awaitable that drives a started coroutine on, as the task awaiting it would have:
    it yields what the coroutine yields (the futures it waits for) and passes results,
    exceptions and cancellation through."""

    __slots__ = ("_blocked_on", "_coroutine")

    def __init__(self, coroutine: Any, blocked_on: Any) -> None:
        self._coroutine, self._blocked_on = coroutine, blocked_on

    def __await__(self) -> Any:
        coroutine, value = self._coroutine, self._blocked_on
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # thrown in by the task (cancellation too): pass it on
                try:
                    value = coroutine.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                value = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value


# --------------------------------------------------------------------------- credentials

#: librdkafka options `broker_credentials` maps; any other one Faust cannot take.
CREDENTIAL_OPTIONS = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
    }
)
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class CredentialsError(ValueError):
    """A security option of `kafka_extra` the worker cannot honour (names it, never a secret)."""


def broker_credentials(
    extra: Mapping[str, str], secret: str | None = None
) -> tuple[CredentialsT | None, list[str]]:
    """Faust `broker_credentials` from librdkafka options, and the options Faust cannot take.

    `extra` is `settings.kafka_extra`; `secret` is `settings.kafka_secret` (it wins over
    an `sasl.password` in `extra`). Like librdkafka: `security.protocol` is
    case-insensitive and defaults to PLAINTEXT, `sasl.mechanisms` defaults to GSSAPI,
    `ssl.ca.location` may be a file or a directory (default: the system CAs), a client
    certificate needs `ssl.certificate.location` + `ssl.key.location`, and
    `ssl.endpoint.identification.algorithm=none` turns off host name checks. Returns
    (None, ignored) for PLAINTEXT. Raises `CredentialsError` naming the option that is
    missing, unsupported (OAUTHBEARER needs a token provider) or unreadable.
    """
    ignored = {k for k in extra if k not in CREDENTIAL_OPTIONS}
    protocol = extra.get("security.protocol", "PLAINTEXT").strip().upper()
    if protocol not in _PROTOCOLS:
        raise CredentialsError(
            f"security.protocol: {protocol!r} is none of {', '.join(_PROTOCOLS)}"
        )
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = _ssl_context(extra)
    else:  # like librdkafka, TLS options mean nothing without TLS
        ignored |= {k for k in extra if k.startswith(("ssl.", "enable.ssl."))}
    if not protocol.startswith("SASL"):
        ignored |= {k for k in extra if k.startswith("sasl.")}
        return (None if context is None else SSLCredentials(context)), sorted(ignored)
    mechanism = (
        (extra.get("sasl.mechanisms") or extra.get("sasl.mechanism") or "GSSAPI").strip().upper()
    )
    if mechanism == "GSSAPI":
        service = extra.get("sasl.kerberos.service.name", "kafka")
        return GSSAPICredentials(kerberos_service_name=service, ssl_context=context), sorted(
            ignored | {k for k in ("sasl.username", "sasl.password") if k in extra}
        )
    if mechanism not in _PASSWORD_MECHANISMS:
        raise CredentialsError(
            f"sasl.mechanisms: {mechanism!r} is not supported by the worker "
            f"(use one of GSSAPI, {', '.join(_PASSWORD_MECHANISMS)})"
        )
    username = extra.get("sasl.username")
    password = secret if secret is not None else extra.get("sasl.password")
    if not username:
        raise CredentialsError(f"sasl.username: required with sasl.mechanisms={mechanism}")
    if password is None:
        raise CredentialsError(
            f"sasl.password: required with sasl.mechanisms={mechanism} (set MOMENTS_KAFKA_SECRET)"
        )
    credentials = SASLCredentials(
        username=username, password=password, ssl_context=context, mechanism=mechanism
    )
    return credentials, sorted(ignored)


def _ssl_context(extra: Mapping[str, str]) -> ssl.SSLContext:
    ca = extra.get("ssl.ca.location")
    if ca == "probe":  # librdkafka: look in the usual system places, as the default does
        ca = None
    try:
        if ca and Path(ca).is_dir():
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, capath=ca)
        else:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"ssl.ca.location: cannot load {ca!r}: {exc}") from None
    if extra.get("ssl.endpoint.identification.algorithm", "https").strip().lower() == "none":
        context.check_hostname = False
    if extra.get("enable.ssl.certificate.verification", "true").strip().lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    certificate = extra.get("ssl.certificate.location")
    key = extra.get("ssl.key.location")
    if bool(certificate) != bool(key):
        missing = "ssl.key.location" if certificate else "ssl.certificate.location"
        raise CredentialsError(f"{missing}: required for a client certificate")
    if certificate:
        try:
            context.load_cert_chain(certificate, key, password=extra.get("ssl.key.password"))
        except (OSError, ssl.SSLError) as exc:
            raise CredentialsError(
                f"ssl.certificate.location / ssl.key.location: cannot load "
                f"{certificate!r} with key {key!r}: {type(exc).__name__}: {exc.strerror or exc}"
            ) from None
    return context

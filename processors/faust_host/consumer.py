"""The worker's consumer: offsets committed only after durable effects, a cheaper drain loop.

`WorkerConsumer` (install with `CommitBarrier.install`) replaces Faust's
aiokafka consumer:

- Before every offset commit it makes durable what the `CommitBarrier` holds:
  first it waits until the output records sent so far (`OutputSender`) are
  acknowledged, then it sends the staged changelog records (`StagedTable`),
  then Faust commits. A failed delivery crashes the worker instead.
- `halt` stops all further offset commits (and crashes the worker unless it
  is being cancelled): the worker calls it when handling a `take()` batch
  fails, because Faust acks the whole batch anyway.
- Its drain loop runs each message's callback inline instead of as two tasks
  raced with `asyncio.wait` (Faust's `wait_first`, which cost more CPU than
  the rest of an empty agent); a callback that does suspend is finished as
  Faust would, raced against `suspend_flow`. Fetches wait at most
  `FETCH_MAX_WAIT_MS` on the broker instead of Faust's fixed 1.5 s, which
  Tansu always waits out.
- With `FencingRecovery` stopping the flow while streams are resumed, it
  closes a hole in Faust + aiokafka: Faust resumes stream partitions before it
  seeks them to their committed offsets and then clears its stream queues,
  dropping records fetched in between; aiokafka seeks only partitions with a
  committed offset above 0, so a worker of a new consumer group silently
  skipped the first records of a partition. It seeks every stream partition
  without a committed offset to the beginning of the log.

The Faust, mode and aiokafka internals it overrides, reads or copies are
listed in `processors.faust_host.internals` (checked by a contract test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial
from typing import Any

from faust.exceptions import ProducerSendError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

from processors.faust_host.changelog import StagedTable
from processors.faust_host.output import OutputSender, first_failure


class CommitBarrier:
    """What the worker's consumer makes durable before each offset commit.

    The output senders and staged tables of one app, registered here by the
    worker and read by the `WorkerConsumer` that `install` puts in the app's
    transport (one barrier per app; nothing kept at module level).
    """

    def __init__(self) -> None:
        self.outputs: list[OutputSender] = []
        self.tables: list[StagedTable] = []

    def output_sender(
        self, config: Mapping[str, Any], producer_factory: Any = None
    ) -> OutputSender:
        """An `OutputSender` whose deliveries are checked before each commit.

        `config` is a confluent-kafka client config (`settings.kafka_config()`).
        """
        sender = OutputSender(config, producer_factory)
        self.outputs.append(sender)
        return sender

    def stage_table(self, table: Any, sender: OutputSender | None = None) -> StagedTable:
        """Wrap a Faust table so that its changelog is sent at commit time.

        With `sender`, the changelog is produced with its librdkafka producer.
        """
        staged = StagedTable(table, sender)
        self.tables.append(staged)
        return staged

    def install(self, app: Any) -> None:
        """Make `app` consume with a `WorkerConsumer` bound to this barrier (before it starts)."""
        app.transport.Consumer = partial(WorkerConsumer, commits=self)


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

    Install with `CommitBarrier.install` before the app starts (a plain
    `app.transport.Consumer = WorkerConsumer` gets an empty barrier of its own).
    """

    _halted: BaseException | None = None

    def __init__(self, *args: Any, commits: CommitBarrier | None = None, **kwargs: Any) -> None:
        #: What is made durable before each offset commit.
        self.commits = commits if commits is not None else CommitBarrier()
        super().__init__(*args, **kwargs)

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
        detached = [(table, table.take()) for table in self.commits.tables]
        outputs = [output.take() for output in self.commits.outputs]
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

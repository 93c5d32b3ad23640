"""What the worker adds to faust-streaming: per-partition engine state, safe recovery and seeking.

`PartitionState` is the worker's side of `processors.engine.StateStore`: the
state of ONE interactions partition, kept in a changelog-backed Faust table
under keys `"<partition>/e/<engine key>"` (the engine's own keys, including its
partition-level ones such as the watermark) and `"<partition>/w/<name>"` (the
worker's bookkeeping). Values are stored as JSON bytes, so a value read back is
always a fresh object (the engine cannot change the table by mutating what it
read) and falsy values (`0`, `[]`) survive recovery (Faust's memory store drops
recovered keys whose value is falsy).

Writes are buffered for the duration of one event and applied with `commit()`
inside the stream iteration of that event, so every changelog record lands on
the changelog partition of the event's own partition, and an event whose
processing fails leaves no half-written state behind.

`FencingTableManager` makes Faust's table recovery correct on Tansu 0.6.0,
whose high watermark is the base offset of the last batch + 1: recovery would
stop before the tail of the last batch. Before Faust reads the high
watermarks of the changelog partitions it is about to recover, it produces a
lone tombstone for a reserved key (`FENCE_KEY`) to each of them and flushes;
the fence is then the last batch, so every real record lies below the high
watermark. On Apache Kafka the fence costs one tiny record per partition and
rebalance.

`StreamSeekingConsumer` (with `FencingRecovery` stopping the flow while
streams are resumed) closes a hole in Faust + aiokafka: Faust resumes stream
partitions before it seeks them to their committed offsets and then clears
its stream queues, dropping records fetched in between; aiokafka seeks only
partitions with a committed offset above 0, so a worker of a new consumer
group silently skipped the first records of a partition. It seeks every
stream partition without a committed offset to the beginning of the log.

This module must never write a table outside stream iteration (Faust forbids
it), and knows nothing of rules or Avro.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, MutableMapping
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, ConsumerT

#: Table key of the fence tombstone; never holds a value.
FENCE_KEY = "~fence"

_DELETED = object()


class PartitionState:
    """The `StateStore` of one interactions partition, backed by a Faust table.

    Reads see this event's own pending writes first; `commit()` writes them to
    the table (one changelog record per changed key) and must be called inside
    the stream iteration of the event being processed. Never share one
    instance between events.
    """

    def __init__(self, table: MutableMapping[str, bytes], partition: int) -> None:
        self._table = table
        self._engine_prefix = f"{partition}/e/"
        self._worker_prefix = f"{partition}/w/"
        self._pending: dict[str, Any] = {}
        self._read: dict[str, Any] = {}
        self._raw: dict[str, bytes | None] = {}

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

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def commit(self) -> int:
        """Write the pending changes to the table; return how many keys changed."""
        table = self._table
        changed = 0
        for full_key, value in self._pending.items():
            if value is _DELETED:
                if full_key in table:
                    del table[full_key]
                    changed += 1
                continue
            data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
            if self._raw.get(full_key, _DELETED) != data:  # unchanged values cost no record
                table[full_key] = data
                changed += 1
        self._pending.clear()
        self._read.clear()
        self._raw.clear()
        return changed

    def _get(self, full_key: str) -> Any | None:
        if full_key in self._pending:
            value = self._pending[full_key]
            return None if value is _DELETED else value
        if full_key in self._read:
            return self._read[full_key]
        raw = self._table.get(full_key)
        value = None if raw is None else json.loads(raw)
        self._read[full_key] = value
        self._raw[full_key] = raw
        return value


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


class StreamSeekingConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer that also seeks stream partitions without a committed offset.

    Install with `app.transport.Consumer = StreamSeekingConsumer` before the app starts.
    """

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

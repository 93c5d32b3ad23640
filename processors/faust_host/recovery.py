"""The recovery fence: Faust's table recovery made correct on Tansu 0.6.0.

Tansu's high watermark is the base offset of the last batch + 1, so recovery
would stop before the tail of the last batch. Before Faust reads the high
watermarks of the changelog partitions it is about to recover,
`FencingRecovery` produces a lone tombstone for a reserved key (`FENCE_KEY`)
to each of them and flushes; the fence is then the last batch, so every real
record lies below the high watermark. On Apache Kafka the fence costs one
tiny record per partition and rebalance.

`FencingRecovery` also stops the consumer's flow while stream partitions are
resumed (see `processors.faust_host.consumer.WorkerConsumer.seek_to_committed`).
The Faust internals it overrides are listed in `processors.faust_host.internals`.
"""

from __future__ import annotations

from collections import Counter

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, ConsumerT

#: Table key of the fence tombstone; never holds a value.
FENCE_KEY = "~fence"


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

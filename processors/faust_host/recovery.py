"""The recovery fence: Faust's table recovery made correct on Tansu 0.6.0.

Tansu's high watermark is the base offset of the last batch + 1, so recovery
would stop before the tail of the last batch. Before Faust reads the high
watermarks of the changelog partitions it is about to recover,
`FencingRecovery` produces a lone tombstone for a reserved key (`FENCE_KEY`)
to each of them and flushes; the fence is then the last batch, so every real
record lies below the high watermark.

Only a broker that needs it is fenced (`MOMENTS_BROKER_FENCE`): `on` always
(the embedded stack sets it: it started Tansu), `off` never, `auto` (the
default) after a probe at the worker's first recovery: `PROBE_RECORDS`
tombstones for `FENCE_KEY` produced together (one batch) to one changelog
partition; a broker whose high watermark then stops short of the last of them
needs the fence. Apache Kafka, whose high watermark covers every acknowledged
record, costs those few records once per worker process, and no fence.

`FencingRecovery` also stops the consumer's flow while stream partitions are
resumed (see `processors.faust_host.consumer.WorkerConsumer.seek_to_committed`).
The Faust internals it overrides are listed in `processors.faust_host.internals`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, ConsumerT

from common.settings import FenceMode

log = logging.getLogger(__name__)

#: Table key of the fence tombstone (and of the probe's); never holds a value.
FENCE_KEY: Final = "~fence"
#: Records the `auto` probe produces in one batch (more than two: one that leaves a batch of
#: its own still leaves a batch of several behind it).
PROBE_RECORDS: Final = 3


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

    #: Whether the broker needs the fence; None until the first recovery decides (`auto`).
    needs_fence: bool | None = None

    async def _build_highwaters(
        self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        if tps and await self.fence_needed(consumer, tps):
            await fence_changelogs(self, tps)
        await super()._build_highwaters(consumer, tps, destination, title)

    async def fence_needed(self, consumer: ConsumerT, tps: set[TP]) -> bool:
        """Whether to fence, from the table manager's `fence_mode` (probed once for `auto`)."""
        if self.needs_fence is None:
            mode: FenceMode = getattr(self.tables, "fence_mode", "on")
            if mode == "auto":
                self.needs_fence = await high_watermark_lags(self, consumer, tps)
                log.info(
                    "MOMENTS_BROKER_FENCE=auto: the broker %s the recovery fence",
                    "needs" if self.needs_fence else "does not need",
                )
            else:
                self.needs_fence = mode == "on"
        return self.needs_fence


async def high_watermark_lags(recovery: Recovery, consumer: ConsumerT, tps: set[TP]) -> bool:
    """Whether the broker's high watermark stops short of the last record of a batch (Tansu
    0.6.0): `PROBE_RECORDS` tombstones for `FENCE_KEY` sent together to one changelog
    partition, then its high watermark compared with the last one's offset + 1."""
    for tp in sorted(tps):
        table = recovery.tables._changelogs.get(tp.topic)
        if table is not None:
            break
    else:
        return True  # no changelog to probe: fence, as before there was a choice
    pending = [
        await table.changelog_topic.send(
            key=FENCE_KEY, value=None, partition=tp.partition, value_serializer="raw"
        )
        for _ in range(PROBE_RECORDS)
    ]
    await recovery.app.producer.flush()
    last = max([(await future).offset for future in pending])
    highwater = (await consumer.highwaters(tp))[tp]
    return bool(highwater <= last)


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

    #: `MOMENTS_BROKER_FENCE` (the worker sets it before the app starts).
    fence_mode: FenceMode = "auto"

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = FencingRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

"""The stream worker: a faust-streaming app that runs the trigger engine on live interactions.

One agent consumes `interactions` (raw bytes; the worker decodes them itself so
that no message can crash the agent). With `worker_batch_size` > 1 (the default)
it takes records in batches (`processors.faust_host.batches.take_batches`, Faust's
`take_events` with a window per batch: a partial batch waits at most
`BATCH_WITHIN_S`, or `BATCH_WITHIN_BEHIND_S` while at least a batch's worth of
records waits behind it) and handles them one after the other in log order, with
the same results as the per-event path (`worker_batch_size` = 1, `stream.events()`).
A batch is first handled with each partition's state kept decoded across its
records (`BatchState`: a key is decoded and encoded once per batch, not per
event) and its output held back; when every record is handled, the output is
handed to the producer, then the state is written to the table. If the engine
raises on one of its records, that pass is dropped whole (it wrote no state,
sent no output, counted no metric: the engine may have changed in place what
it read) and the batch is handled again from its first record the per-event
way (`PartitionState`, a fresh copy of the state per event, output sent as it
comes), which dead-letters that record. Faust acks a batch when its body ends,
even when the body raises: the worker then stops committing for good
(`WorkerConsumer.halt`) and crashes, so no record of the batch is committed
unhandled. Each record is handled like this:

1. The record path (`processors.record_path`, the backfill's too) triages,
   decodes and feeds the engine. A record that is a tombstone, larger than
   `max_event_bytes`, undecodable or invalid, or that made the engine raise,
   goes to `interactions.dlq` with its original key and bytes and the headers
   `moments.error.{stage,class,message,topic,partition,offset}`; stages are
   `decode` (also tombstones), `validate`, `size` and `engine` (the event's
   state is left untouched: the batch is handled again per event, see above).
   The worker keeps running. Control records of a kind this version does not
   know are skipped. An event the engine finds too late to apply (older than
   its partition's watermark minus `MOMENTS_MAX_LATENESS`) changes nothing and
   goes, as it came, to `interactions.late` with the same headers (stage
   `late`), counted in `moments_events_too_late_total`.
2. Otherwise the engine processes the event against the state of the event's
   partition in a changelog-backed Faust table (see `processors.faust_host`):
   `BatchState` for a whole batch, or `PartitionState` per event. Writes are
   applied to the table's local store at the end of the batch (per event on
   the per-event way; never through `Table.__setitem__`, which Faust forbids
   inside `take()`; a persistent store gets them once their changelog is
   acknowledged, so after a kill it holds no state whose output was lost) and
   their changelog records, addressed to the event's partition, are sent at
   the next offset commit and when partitions are revoked (a rebalance's
   recovery re-reads the changelog, even of the partitions a worker keeps),
   coalesced per key: a restarted or rebalanced worker recovers the state of
   every committed event. The state also holds the offset of the last record
   it covers (`w/applied`, per partition; kept in memory and written once per
   batch, as the changelog is sent only between batches); a record at or below
   it is skipped, so a redelivered record (the state may run ahead of the
   committed offsets after a crash or a rebalance) is never applied twice,
   however old its event time.
3. Actions go to `actions.<destination>` and decisions to `decisions` (key
   customer_id, Avro), handed to a librdkafka producer (`OutputSender`: a C
   call per record instead of aiokafka's Python send path on the event loop;
   it lingers 20 ms to share produce requests) before the state that claims
   them is written. At each commit the worker first waits until all of them
   are acknowledged (a failed delivery crashes the worker instead of
   committing), then sends the changelog, then Faust commits the offsets: a
   crash before the commit makes the redelivered events produce the same
   output again (same action_id, which sinks drop), and state never claims an
   action that was never sent. Processing is at-least-once.

Metrics: events consumed, actions emitted, decisions, dead letters, the
watermark lag per partition, and the event-to-action latency labelled
`trigger="event"` (the action answers the event being handled) or
`trigger="timer"` (an absence deadline passed; late by design, so alerts on
the pipeline's latency use `trigger="event"`), observed when the action is
handed to the producer. Counters are tallied per batch and added at its end.

Idle partitions. Faust forbids table writes outside stream iteration, so the
clock of a quiet partition is advanced by a record *in* the stream: a timer
(every `idle_tick_s`) produces an empty tick record, header
`moments.control: tick`, into each assigned interactions partition that has
seen nothing for `idle_tick_s`. The agent turns it into
`engine.advance(store, now)` where `now = max occurred_at on the partition +
(tick timestamp - timestamp of the partition's last event)`: the watermark
advances at the rate of the wall clock since the last event, and absence
timers fire for customers who never send another event. Because the tick is
ordered behind every event appended before it and both times come from the
log, a redelivered tick computes the same `now`. Other readers of
`interactions` must skip records carrying the `moments.control` header.

Erasure. A record with header `moments.control: forget` (null value, key =
the customer id: `moments forget`, see `common.privacy`) lands on the
customer's partition; the worker drops everything the engine state holds
about that customer (`processors.engine.forget_customer`: their state, pending
timers) and the commit sends changelog tombstones, so neither this worker nor
a restarted one emits anything for them from stale state. Logged with the
customer id hashed. Then it writes an erasure marker (the same control record,
with the erasure time) to every output topic, each action topic and
`decisions`, behind everything it emitted for the customer before: each sink
meets it after every earlier record of that customer and deletes them there
(docs/design.md 10.1).

Rule packs (docs/design.md 8). The worker runs the latest acceptable pack of its
name (`MOMENTS_RULES_PACK`) on the compacted `rules` topic, else
`MOMENTS_RULES_PATH` or the default pack (`processors.rules_follower`: read once
before start, then followed in a thread; a pack `moments rules check OLD NEW`
would refuse is refused, logged and counted, and the old one stays). Between
batches it takes the follower's pack as the target, and each partition whose
record it handles next is asked to switch to it (`processors.engine.switching`,
the same core as `moments replay --rules-change`): the partition switches
before its first event at or after its max occurred_at + 1 ms, or at its next
idle tick, with no restart and all its state. The partition's state records
the packs it ran (their YAML) and the last switch (time, watermark, rule
versions, pack id and the offset of the record that switched it), so a
restarted or rebalanced worker resumes each partition on its own pack with the
old rule versions its timers need. Metrics: `moments_rules_active` (rule,
version of the pack run), `moments_rules_pack_info` (its id),
`moments_rules_switches_total`, `moments_rules_refused_total`.

Start-up: `run_worker(settings)` blocks until SIGTERM/SIGINT, then stops
cleanly (commits, flushes). `python -m processors.worker` does the same with
settings from `MOMENTS_*`. The worker never reads or writes PostgreSQL and
never decides anything itself: all semantics are the engine's.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

import faust
from faust.exceptions import ConsumerNotStarted
from faust.streams import _current_event
from faust.types import TP, EventT, StreamT

from common.logs import iso_ms, logging_config
from common.metrics import (
    ACTION_STATUS_IGNORED,
    ACTIONS_EMITTED,
    CONSUMER_LAG,
    DECISIONS,
    DLQ_RECORDS,
    EVENT_TO_ACTION_LATENCY,
    EVENTS_CONSUMED,
    EVENTS_FUTURE_DATED,
    EVENTS_TOO_LATE,
    REDELIVERIES_SKIPPED,
    RELATIONSHIP_BALANCE,
    RULES_SWITCHES,
    WATERMARK_LAG,
    event_type_label,
    serve_metrics,
)
from common.settings import Settings
from common.topics import changelog_config
from processors.config import engine_config
from processors.engine import (
    CLOCK_KEY,
    Engine,
    EngineOutput,
    StateStore,
)
from processors.engine.state import PACK_KEY
from processors.engine.switching import (
    Lineage,
    PackLibrary,
    feed,
    last_switch,
    request_switch,
    start,
    tick,
)
from processors.faust_host import (
    CommitBarrier,
    FencingTableManager,
    FrozenHeapWorker,
    PartitionState,
    WorkerConsumer,
    broker_urls,
    use_fast_event_loop,
    worker_credentials,
)
from processors.faust_host.batches import take_batches
from processors.faust_host.changelog import BatchSpoiled, BatchState
from processors.record_path import Applied, DeadLetter, RecordPath, Stage
from processors.rules_follower import AcceptedPack, RulesFollower, startup_pack
from schemas.codec import codec_for
from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent
from schemas.wire import (
    CONTROL_HEADER,
    TICK,
    RecordKind,
    dead_letter_headers,
    erased_at_of,
    erasure_headers,
)

log = logging.getLogger(__name__)

#: Name of the table holding the engine state (changelog topic `<app id>-engine-state-changelog`).
STATE_TABLE = "engine-state"
#: Worker key per partition: the idle clock's basis [max occurred_at, log time of last event] (ms).
_CLOCK = "clock"
#: Worker key per partition: the offset of the last record whose effect the state holds.
_APPLIED = "applied"
_REASON_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: Output records wait this long to share a produce request (Faust's default, 0, sends a
#: request per event's output; the publisher SDK lingers 5 ms too).
PRODUCER_LINGER_S = 0.005
#: `broker_commit_every` that never triggers (commits every `broker_commit_interval`).
COMMIT_EVERY_NEVER = 1 << 62
#: A partial batch waits at most this long for more records (bounds the latency batching adds).
BATCH_WITHIN_S = 0.01
#: ... and this long when the worker is behind (the records wait already; see `_batch_window`).
BATCH_WITHIN_BEHIND_S = 0.25

#: The state of one partition while a record is handled: per record, or kept for the batch.
_Store = PartitionState | BatchState


class _Outbox:
    """What a kept batch hands over once every record of it is handled: its output records,
    the event-to-action latencies to observe (at that moment), other histogram values and
    its other reports."""

    __slots__ = ("latencies", "later", "observations", "records")

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, Any]] = []
        #: (histogram child, triggered_at in ms) per action.
        self.latencies: list[tuple[Any, int]] = []
        #: (histogram, value): values observed when the batch is delivered.
        self.observations: list[tuple[Any, float]] = []
        #: (report, args): metrics and log lines, in order.
        self.later: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        """Hold one output record (the signature of `OutputSender.send`)."""
        self.records.append((topic, key, value, headers))

    def deliver(self, output: Any) -> None:
        """Hand the records to `output` (an `OutputSender`) in order, then report."""
        send = output.send
        for topic, key, value, headers in self.records:
            send(topic, key, value, headers)
        if self.latencies:
            now = time.time()
            for child, triggered_at in self.latencies:
                child.observe(max(0.0, now - triggered_at / 1000))
        for histogram, amount in self.observations:
            histogram.observe(amount)
        for report, args in self.later:
            report(*args)


class TriggerWorker:
    """The Faust app hosting one `Engine`: its topics, state table, agent and idle-tick timer.

    Build it, then run `app` with a Faust/mode worker (`run_worker` does). It
    must never write its table outside the agent's stream iteration.
    """

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        if not settings.kafka.bootstrap:
            raise RuntimeError("no Kafka bootstrap configured (set MOMENTS_BOOTSTRAP)")
        self.settings = settings
        first = startup_pack(settings)
        if engine is not None:  # a pack built in code: it stands for itself in the lineage
            first = AcceptedPack(
                f"code-{id(engine):x}", f"# {engine.pack.source}\n", engine.pack, ""
            )
        #: The packs partitions run and the engine of each lineage (docs/design.md 8.3).
        self.library = PackLibrary(engine_config(settings))
        self.library.add(first.text, first.source, first.pack)
        self.first_pack = first.pid
        self.engine = self.library.engine((first.pid,))
        #: The rules topic's latest acceptable pack; partitions switch to it between batches.
        self.rules = RulesFollower(settings, first)
        self._target = first.pid
        #: Per partition: its lineage (read from its state once, then kept here).
        self._lines: dict[int, Lineage] = {}
        registry = settings.kafka.schema_registry_url
        self.event_codec = codec_for(InteractionEvent, registry)
        self.action_codec = codec_for(ActionEvent, registry)
        self.decision_codec = codec_for(Decision, registry)
        self.status_codec = codec_for(ActionStatus, registry)
        topics = settings.topics
        datadir = settings.stack.data_dir / "worker"
        datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
        self.app = faust.App(
            settings.worker.worker_app_id,
            broker=broker_urls(settings.kafka.bootstrap),
            broker_credentials=worker_credentials(settings),
            store=settings.worker.worker_store,
            datadir=str(datadir),
            broker_rebalance_timeout=settings.worker.broker_rebalance_timeout_s,
            broker_session_timeout=settings.worker.broker_session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.worker.broker_session_timeout_s / 3),
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_linger=PRODUCER_LINGER_S,
            # Commits on the timer only: a commit waits for the output and the changelog,
            # and one triggered by a record count would stall the fetch loop meanwhile.
            broker_commit_every=COMMIT_EVERY_NEVER,
            topic_partitions=settings.kafka.interactions_partitions,
            topic_replication_factor=settings.kafka.replication_factor,
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=False,
            web_port=settings.worker.worker_web_port,
            web_bind="127.0.0.1",
            web_host="127.0.0.1",
            autodiscover=False,
            TableManager=FencingTableManager,
        )
        #: What the consumer makes durable before each offset commit (output, then state).
        self.commits = CommitBarrier()
        self.commits.install(self.app)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.interactions = self.app.topic(
            topics.interactions, partitions=settings.kafka.interactions_partitions, **raw
        )
        #: Actions, decisions and dead letters go straight to the producer (see OutputSender).
        self.output = self.commits.output_sender(settings.kafka_config())
        self.state = self.app.Table(
            STATE_TABLE,
            partitions=settings.kafka.interactions_partitions,
            key_type=str,  # JSON keys
            value_type=bytes,  # raw values: JSON bytes written by PartitionState
            help="Trigger engine state of every interactions partition (JSON values).",
            # An erased customer's old state and tombstones age out (docs/design.md 10.1).
            extra_topic_configs=changelog_config(settings),
        )
        self.staged_state = self.commits.stage_table(self.state, self.output)
        cast(FencingTableManager, self.app.tables).fence_mode = settings.kafka.broker_fence
        self.app.agent(self.interactions, name="moments.trigger")(self._consume)
        self.app.timer(settings.worker.idle_tick_s, name="moments.idle_ticks")(
            self._send_idle_ticks
        )
        self.app.on_partitions_revoked.connect(cast(Any, self._on_partitions_revoked))
        self.action_topics = dict(topics.actions)
        # Labelled metric children, looked up once per label tuple (all bounded sets).
        self._consumed = _children(
            lambda channel, kind: EVENTS_CONSUMED.labels(channel, event_type_label(kind))
        )
        self._emitted = _children(ACTIONS_EMITTED.labels)
        self._latency = _children(EVENT_TO_ACTION_LATENCY.labels)
        self._decided = _children(
            lambda rule, outcome, reason: DECISIONS.labels(
                rule, outcome, reason if _REASON_LABEL.fullmatch(reason) else "other"
            )
        )
        self._watermark_lag = _children(lambda partition: WATERMARK_LAG.labels(str(partition)))
        group = settings.worker.worker_app_id
        self._lag = _children(
            lambda topic, partition: CONSUMER_LAG.labels(group, topic, str(partition))
        )
        #: Counts and gauge values of the batch being handled (`_flush_metrics` applies them).
        self._tally_consumed: dict[tuple[str, str], int] = {}
        self._tally_emitted: dict[tuple[str, str], int] = {}
        self._tally_decided: dict[tuple[str, str, str], int] = {}
        self._tally_ignored: dict[str, int] = {}
        self._watermarks: dict[int, int] = {}
        self._last_seen: dict[int, float] = {}
        #: At least a batch's worth of records waited behind the last batch (`_batch_window`).
        self._behind = False
        #: Triage, decode and the engine per record: the backfill's own (`processors.record_path`).
        self.path = RecordPath(
            self.event_codec,
            self._feed,
            max_event_bytes=settings.engine.max_event_bytes,
            max_future_skew_ms=settings.engine.max_future_skew_ms,
        )
        #: The lineage of the partition whose record is being handled (`_feed` moves it on).
        self._line = Lineage(first.pid)
        #: Per partition: (max occurred_at, log timestamp of the last event), both in ms.
        self._idle_clock: dict[int, tuple[int, int]] = {}
        #: Per partition: its applied offset (`w/applied`, -1 for none), read from its state
        #: once; the partitions whose offset moved are written back once per batch.
        self._applied: dict[int, int] = {}
        self._applied_moved: set[int] = set()
        #: Counts of the batch being handled: redeliveries skipped, future-dated events,
        #: events too late to apply.
        self._tally_skipped = 0
        self._tally_future_dated = 0
        self._tally_too_late = 0
        self.path.count_future_dated = self._count_future_dated
        #: In a kept batch (`_handle_kept`): each partition's state and the held-back output.
        self._stores: dict[int, BatchState] | None = None
        self._outbox: _Outbox | None = None

    # -- the agent --------------------------------------------------------------------------

    async def _consume(self, stream: StreamT[Any]) -> None:
        batch_size = self.settings.worker.worker_batch_size
        if batch_size <= 1:
            async for event in stream.events():
                await self.handle(event)
                self.output.serve()
            return
        async for batch in take_batches(stream, batch_size, self._batch_window):
            await self.handle_batch(batch)

    def _batch_window(self) -> float:
        """How long the next batch may wait for more records: `BATCH_WITHIN_S` while the
        worker keeps up, `BATCH_WITHIN_BEHIND_S` while at least a batch's worth of records
        waited behind the last one (they are there already: a worker that handles records
        slower than it fetches them fills the batch at once, and a fuller batch costs less
        per record)."""
        return BATCH_WITHIN_BEHIND_S if self._behind else BATCH_WITHIN_S

    async def handle_batch(self, batch: Sequence[EventT[Any]]) -> None:
        """Handle a batch of `interactions` records from `take_batches`, in order.

        First with each partition's state kept across the batch (`_handle_kept`); if the
        engine failed on one of its records, nothing of that pass is kept and the batch
        is handled again with the state read and written per event (`_handle_each`),
        which dead-letters that record. Faust acks the whole batch when this returns or
        raises; if anything escapes (not a bad record: those are dead-lettered) the
        consumer is halted first, so that the records after the failing one are never
        committed.
        """
        self._follow_rules()
        try:
            if not self._handle_kept(batch):
                self._handle_each(batch)
            self.output.serve()
        except BaseException as exc:
            consumer = self.app.consumer
            halt = getattr(consumer, "halt", None)
            if halt is not None:
                await halt(exc)
            raise
        finally:
            _current_event.set(None)
            self._flush_metrics()
        now = time.monotonic()
        for partition in {event.message.partition for event in batch}:
            self._last_seen[partition] = now
        self._export_lag(batch)

    def _handle_kept(self, batch: Sequence[EventT[Any]]) -> bool:
        """The batch with each partition's state decoded and encoded once (`BatchState`) and
        its output held back (`_Outbox`) until every record is handled; then the output is
        handed to the producer and the state written to the table, in that order.

        Returns False, having kept nothing of the pass (no state written, no output sent,
        no metric counted, the worker's own memory as before), when the engine failed on
        a record (`BatchSpoiled`); anything else that escapes is raised, likewise.

        The cyclic garbage collector is paused meanwhile: the decoded state held for the
        batch is freed by reference counting once it is written, and the collections its
        allocations would trigger in between only walk it again, freeing nothing.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._handle_kept_uncollected(batch)
        finally:
            if collecting:
                gc.enable()

    def _handle_kept_uncollected(self, batch: Sequence[EventT[Any]]) -> bool:
        """`_handle_kept`, the collector paused by the caller."""
        saved = (
            dict(self._applied),
            dict(self._lines),
            dict(self._idle_clock),
            self.path.future_dated,
        )
        stores: dict[int, BatchState] = {}
        outbox = _Outbox()
        self._stores, self._outbox = stores, outbox
        handle = self._handle
        set_current = _current_event.set
        try:
            for event in batch:
                # take_batches fills its buffer in another task: make this event current
                # here, for stores that file each key under the event's partition.
                set_current(weakref.ref(event))
                handle(event)
        except BaseException as exc:
            self._applied, self._lines, self._idle_clock, self.path.future_dated = saved
            self._applied_moved.clear()
            self._clear_tallies()
            if isinstance(exc, BatchSpoiled):
                return False
            raise
        finally:
            self._stores = self._outbox = None
        # The output first: the state never claims output that was not handed over (a
        # failure in between leaves the batch to be handled again, same action ids).
        outbox.deliver(self.output)
        moved = self._applied_moved
        for partition in moved:
            store = stores.get(partition)
            if store is None:
                store = stores[partition] = BatchState(self.staged_state, partition)
            store.set_worker(_APPLIED, self._applied[partition])
        moved.clear()
        for store in stores.values():
            store.flush()
        return True

    def _handle_each(self, batch: Sequence[EventT[Any]]) -> None:
        """The batch record by record, each with its own `PartitionState` (an engine failure
        leaves that record's state untouched), its output sent as it comes."""
        handle = self._handle
        set_current = _current_event.set
        try:
            for event in batch:
                set_current(weakref.ref(event))
                handle(event)
        finally:
            self._save_applied()

    async def handle(self, event: EventT[Any]) -> None:
        """Handle one record of `interactions` (event, tick or poison); call inside the stream.

        A record at or below the partition's applied offset (kept in the state and sent
        with it) is skipped: the state already holds its effect, and its output was
        delivered before that state was (redelivery after a crash or a rebalance).
        """
        self._follow_rules()
        try:
            self._handle(event)
        finally:
            self._save_applied()
            self._flush_metrics()
        self._last_seen[event.message.partition] = time.monotonic()
        self._export_lag((event,))

    def _export_lag(self, events: Sequence[EventT[Any]]) -> None:
        """`moments_consumer_lag_messages` of the partitions just handled: the high watermark
        the consumer last fetched minus the next offset to handle (as the sinks export it)."""
        last: dict[tuple[str, int], int] = {}
        for event in events:
            message = event.message
            last[(message.topic, message.partition)] = message.offset
        consumer = self.app.consumer
        waiting = 0
        for (topic, partition), offset in last.items():
            try:
                highwater = consumer.highwater(TP(topic, partition))
            except ConsumerNotStarted:  # records fed without a running consumer (tests)
                return
            if isinstance(highwater, int) and highwater >= 0:
                lag = max(0, highwater - offset - 1)
                self._lag(topic, partition).set(lag)
                waiting += lag
        self._behind = waiting >= self.settings.worker.worker_batch_size

    def _follow_rules(self) -> None:
        """Between batches: take the rules topic's latest acceptable pack as the target."""
        current = self.rules.current
        if current.pid != self._target:
            self.library.add(current.text, current.source, current.pack)
            self._target = current.pid

    def _lineage(self, store: _Store, partition: int) -> Lineage:
        """The partition's lineage, asked to switch to the target pack if it runs another."""
        line = self._lines.get(partition)
        if line is None:
            line = self.library.load(store, self._target)
            if line is None:  # state from before lineages (or none): the first pack's
                first = self.first_pack if store.get(CLOCK_KEY) is not None else self._target
                line = start(self.library, store, first)
        if line.goal != self._target:
            line = request_switch(self.library, store, line, self._target)
            self._report(
                log.info,
                "partition %d: switching to rule pack %s%s",
                partition,
                self._target,
                f" at event time {iso_ms(line.pending[1])}" if line.pending else "",
            )
        self._lines[partition] = line
        return line

    def _switched(self, store: _Store, partition: int, offset: int, line: Lineage) -> None:
        """Record a switch that just happened (its offset beside the engine's record)."""
        record = last_switch(store) or {}
        store.set(PACK_KEY, record | {"offset": offset})
        self._report(RULES_SWITCHES.inc)
        self._report(
            log.info,
            "partition %d switched to rule pack %s at offset %d (event time %s, watermark %s)",
            partition,
            line.head,
            offset,
            iso_ms(record.get("at")),
            iso_ms(record.get("watermark")),
        )

    def _handle(self, event: EventT[Any]) -> None:
        """`handle` without its metrics flush and the write of the applied offsets: the
        callers do both, once per batch. In a kept batch (`_handle_kept`) the store is the
        partition's `BatchState`, else a `PartitionState` of this record."""
        message = event.message
        partition, offset = message.partition, message.offset
        stores = self._stores
        store: _Store
        if stores is None:
            store = PartitionState(self.staged_state, partition)
        else:
            kept = stores.get(partition)
            if kept is None:
                kept = stores[partition] = BatchState(self.staged_state, partition)
            store = kept
        applied = self._applied.get(partition)
        if applied is None:
            stored = store.get_worker(_APPLIED)
            applied = self._applied[partition] = -1 if stored is None else int(stored)
        if offset <= applied:
            self._tally_skipped += 1
            return
        line = self._line = self._lineage(store, partition)
        record_ms = round(message.timestamp * 1000)
        result = self.path.handle(
            store, partition, offset, message.headers, message.key, message.value, record_ms
        )
        if type(result) is Applied:
            if result.output.too_late:
                self._too_late(message, result.event, store)
            else:
                self._on_event(result, store, partition, record_ms)
        elif type(result) is DeadLetter:
            self._dead_letter(message, result)
        elif result is RecordKind.TICK:
            self._line = self._on_tick(store, partition, record_ms, line)
        elif result is RecordKind.FORGET:
            self._mark_erasure(message, record_ms)
        after = self._line
        if after is not line:
            self._lines[partition] = after
            if after.chain != line.chain:
                self._switched(store, partition, offset, after)
        store.commit()
        self._applied[partition] = offset
        self._applied_moved.add(partition)

    def _save_applied(self) -> None:
        """Write the applied offset of each partition whose records were handled since the
        last call. Once per batch is enough: the changelog is sent only between batches."""
        moved = self._applied_moved
        if moved:
            for partition in moved:
                store = PartitionState(self.staged_state, partition)
                store.set_worker(_APPLIED, self._applied[partition])
                store.commit()
            moved.clear()

    def _feed(self, store: StateStore, event: InteractionEvent, cap: int | None) -> EngineOutput:
        """The record path's engine step: the event on the partition's lineage (`_line`,
        set by `_handle`), which a switch due before the event moves on."""
        self._line, output = feed(self.library, store, self._line, event, cap)
        return output

    def _count_future_dated(self) -> None:
        """The record path capped an event's clock: counted with the batch's metrics."""
        self._tally_future_dated += 1

    def _on_event(self, applied: Applied, store: _Store, partition: int, record_ms: int) -> None:
        """An event the engine took: its output, the idle clock's basis, metrics."""
        interaction, output = applied.event, applied.output
        engine_clock = store.get(CLOCK_KEY) or {"max": interaction.occurred_at}
        if output.actions or output.decisions or output.statuses or output.ignored:
            self._emit(output, interaction.occurred_at)
        self._idle_clock[partition] = (int(engine_clock["max"]), record_ms)
        consumed = self._tally_consumed
        kind = (interaction.channel, interaction.type)
        consumed[kind] = consumed.get(kind, 0) + 1
        watermark = engine_clock.get("wm")
        if watermark is not None:
            self._watermarks[partition] = watermark

    def _on_tick(self, store: _Store, partition: int, tick_ms: int, line: Lineage) -> Lineage:
        basis = self._idle_clock.get(partition)
        if basis is None:  # restarted: the basis of the last tick, else count from this tick
            persisted = store.get_worker(_CLOCK)
            engine_clock = store.get(CLOCK_KEY)
            if persisted is not None:
                basis = (int(persisted[0]), int(persisted[1]))
            elif engine_clock is not None:
                basis = (int(engine_clock["max"]), tick_ms)
            else:
                return line  # no event ever on this partition: no clock to advance
            self._idle_clock[partition] = basis
        max_occurred, last_event_ms = basis
        now_ms = max_occurred + max(0, tick_ms - last_event_ms)
        line, output = tick(self.library, store, line, now_ms)
        # The basis is persisted here, not per event: a worker that restarts into a quiet
        # partition resumes its clock from the last tick (costs no changelog record per event).
        store.set_worker(_CLOCK, [max_occurred, last_event_ms])
        self._emit(output, None)
        watermark = self.engine.watermark(store)
        if watermark is not None:
            self._watermarks[partition] = watermark
        return line

    def _mark_erasure(self, message: Any, record_ms: int) -> None:
        """After the record path dropped the customer's state: an erasure marker (null value,
        key = the customer, `moments.control: forget` and the erasure time) to every output
        topic, behind everything emitted for them before (docs/design.md 10.1)."""
        if not message.key:
            return
        erased_at = erased_at_of(message.headers)
        headers = erasure_headers(record_ms if erased_at is None else erased_at)
        send = (self._outbox or self.output).send
        for topic in self.settings.topics.outputs():
            send(topic, message.key, None, headers)

    def _report(self, report: Callable[..., object], *args: Any) -> None:
        """`report(*args)` (a metric or a log line) now, or, in a kept batch, once its output
        is delivered: a pass that is dropped reports nothing."""
        outbox = self._outbox
        if outbox is None:
            report(*args)
        else:
            outbox.later.append((report, args))

    # -- output -----------------------------------------------------------------------------

    def _emit(self, output: EngineOutput, event_ms: int | None) -> None:
        """Hand actions, decisions and action statuses to the producer (acknowledged before
        the next commit), or, in a kept batch, to its outbox (handed over when the batch is
        done).

        `event_ms` is the occurred_at of the event being handled (None for a tick). An
        action at that time answers the event (latency `trigger="event"`: the pipeline's
        delay); any other action is a timer whose deadline passed (`trigger="timer"`: it
        waited for the watermark, at least the allowed lateness, by design). Counters are
        tallied and added by `_flush_metrics`; the latency is observed when the action is
        handed to the producer.
        """
        outbox = self._outbox
        send = (outbox or self.output).send
        if output.actions:
            encode_action = self.action_codec.encode
            action_topics = self.action_topics
            sent: list[ActionEvent] = []
            for action in output.actions:
                topic = action_topics[action.destination]
                # the engine builds well-formed records: no validation pass per record
                try:
                    encoded = encode_action(action, validate=False)
                except Exception as exc:  # one action must never stop the worker
                    self._unencodable(action, exc)
                    continue
                send(topic, action.customer_id.encode(), encoded)
                sent.append(action)
            now = time.time()
            emitted = self._tally_emitted
            latency = self._latency
            for action in sent:
                labels = (action.rule, action.destination)
                emitted[labels] = emitted.get(labels, 0) + 1
                trigger = "event" if action.triggered_at == event_ms else "timer"
                child = latency(action.destination, trigger)
                if outbox is None:
                    child.observe(max(0.0, now - action.triggered_at / 1000))
                else:
                    outbox.latencies.append((child, action.triggered_at))
                balance = action.details.get("relationship_balance")
                if balance is not None:
                    try:
                        value = float(balance)
                    except ValueError:
                        self._report(
                            log.warning,
                            "action %s: relationship_balance %r",
                            action.action_id,
                            balance,
                        )
                        continue
                    if outbox is None:
                        RELATIONSHIP_BALANCE.observe(value)
                    else:
                        outbox.observations.append((RELATIONSHIP_BALANCE, value))
        if output.decisions:
            encode_decision = self.decision_codec.encode
            topic = self.settings.topics.decisions
            decided = self._tally_decided
            for decision in output.decisions:
                send(
                    topic, decision.customer_id.encode(), encode_decision(decision, validate=False)
                )
                outcome = (decision.rule, decision.outcome, decision.reason)
                decided[outcome] = decided.get(outcome, 0) + 1
        if output.statuses:
            # changes of the followed actions (docs/design.md 12), like the decisions
            encode_status = self.status_codec.encode
            status_topic = self.settings.topics.action_status
            for status in output.statuses:
                send(
                    status_topic,
                    status.customer_id.encode(),
                    encode_status(status, validate=False),
                )
        if output.ignored:
            ignored = self._tally_ignored
            for reason, count in output.ignored.items():
                ignored[reason] = ignored.get(reason, 0) + count

    def _flush_metrics(self) -> None:
        """Add the tallied counters to their metrics; set the watermark lag gauges."""
        if self._tally_consumed:
            for (channel, kind), count in self._tally_consumed.items():
                self._consumed(channel, kind).inc(count)
            self._tally_consumed.clear()
        if self._tally_emitted:
            for (rule, destination), count in self._tally_emitted.items():
                self._emitted(rule, destination).inc(count)
            self._tally_emitted.clear()
        if self._tally_decided:
            for (rule, outcome, reason), count in self._tally_decided.items():
                self._decided(rule, outcome, reason).inc(count)
            self._tally_decided.clear()
        if self._tally_ignored:
            for reason, count in self._tally_ignored.items():
                ACTION_STATUS_IGNORED.labels(reason).inc(count)
            self._tally_ignored.clear()
        if self._tally_skipped:
            REDELIVERIES_SKIPPED.inc(self._tally_skipped)
            self._tally_skipped = 0
        if self._tally_future_dated:
            EVENTS_FUTURE_DATED.inc(self._tally_future_dated)
            self._tally_future_dated = 0
        if self._tally_too_late:
            EVENTS_TOO_LATE.inc(self._tally_too_late)
            self._tally_too_late = 0
        if self._watermarks:
            now = time.time()
            for partition, watermark in self._watermarks.items():
                self._watermark_lag(partition).set(now - watermark / 1000)
            self._watermarks.clear()

    def _clear_tallies(self) -> None:
        """Forget what was tallied since the last flush (a dropped pass of a batch)."""
        self._tally_consumed.clear()
        self._tally_emitted.clear()
        self._tally_decided.clear()
        self._tally_ignored.clear()
        self._tally_skipped = self._tally_future_dated = self._tally_too_late = 0
        self._watermarks.clear()

    def _too_late(self, message: Any, event: InteractionEvent, store: _Store) -> None:
        """An event older than its partition's watermark minus the max lateness, which the
        engine did not apply: the record, as it came, goes to `interactions.late` with the
        dead-letter headers (stage `late`), counted in `moments_events_too_late_total`."""
        clock = store.get(CLOCK_KEY) or {}
        detail = (
            f"occurred_at {event.occurred_at} is before the partition's watermark "
            f"{clock.get('wm')} minus the max lateness ({self.settings.engine.max_lateness_ms} ms)"
        )
        where = (message.topic, message.partition, message.offset)
        headers = dead_letter_headers(message.headers, Stage.LATE, "TooLate", detail, where)
        topic = self.settings.topics.interactions_late
        (self._outbox or self.output).send(topic, message.key, message.value, headers)
        consumed = self._tally_consumed
        kind = (event.channel, event.type)
        consumed[kind] = consumed.get(kind, 0) + 1
        self._tally_too_late += 1

    def _unencodable(self, action: ActionEvent, exc: Exception) -> None:
        """An action the codec refused: to `actions.dlq` as JSON (times as milliseconds)
        with the dead-letter headers (stage `encode`), counted; the worker goes on."""
        import dataclasses
        import json

        # stdlib json: whatever the codec refused (e.g. a time past 64 bits) still writes
        value = json.dumps(dataclasses.asdict(action), default=str, sort_keys=True).encode()
        headers = dead_letter_headers(
            (), "encode", type(exc).__name__, str(exc), (None, None, None), rule=action.rule
        )
        topic = self.settings.topics.actions_dlq
        (self._outbox or self.output).send(topic, action.customer_id.encode(), value, headers)
        self._report(DLQ_RECORDS.labels("encode").inc)
        # the error's text stays in the DLQ headers: it may quote a value of the action
        self._report(
            log.error,
            "action %s of rule %s cannot be encoded (%s): sent to %s",
            action.action_id,
            action.rule,
            type(exc).__name__,
            topic,
        )

    def _dead_letter(self, message: Any, dead: DeadLetter) -> None:
        """Send the record, as it came, to `interactions.dlq` with headers naming the failure."""
        where = (message.topic, message.partition, message.offset)
        headers = dead_letter_headers(
            message.headers, dead.stage, dead.error_class, dead.detail, where
        )
        topic = self.settings.topics.interactions_dlq
        (self._outbox or self.output).send(topic, message.key, message.value, headers)
        self._report(DLQ_RECORDS.labels(dead.stage).inc)
        # The detail stays in the DLQ headers: it may quote a value of the event (customer data).
        self._report(
            log.warning,
            "dead-lettered %s[%d]@%d (stage %s, %s)",
            message.topic,
            message.partition,
            message.offset,
            dead.stage,
            dead.error_class,
        )

    # -- rebalances -------------------------------------------------------------------------

    async def _on_partitions_revoked(
        self, app: Any, *args: Any, signal: Any = None, **kwargs: Any
    ) -> None:
        """Send the staged state before the rebalance's recovery re-reads the changelog.

        Faust signals this after the streams stopped and the producer was flushed. The
        lineages kept in memory are forgotten: recovery may bring another partition's state.
        """
        self._lines.clear()
        self._applied.clear()  # recovery may bring another partition's state
        self._behind = False  # the records it counted may be another worker's now
        sent = await cast(WorkerConsumer, self.app.consumer).persist_staged()
        if sent:
            log.info("Sent %d staged state records before the rebalance", sent)

    # -- idle ticks -------------------------------------------------------------------------

    async def _send_idle_ticks(self) -> None:
        """Produce a tick into every assigned interactions partition that has been quiet."""
        if self.app.rebalancing:
            return
        now = time.monotonic()
        idle_s = self.settings.worker.idle_tick_s
        for tp in sorted(self.app.assignor.assigned_actives()):
            if tp.topic != self.interactions.get_topic_name():
                continue
            if now - self._last_seen.get(tp.partition, 0.0) < idle_s:
                continue
            if tp.partition not in self._idle_clock and (
                self.state.get(f"{tp.partition}/e/{CLOCK_KEY}") is None
            ):
                continue  # no event yet: nothing to advance
            self._last_seen[tp.partition] = now  # one tick in flight per partition
            await self.interactions.send(
                value=b"", partition=tp.partition, headers=[(CONTROL_HEADER, TICK)]
            )


def _children(labels: Callable[..., Any]) -> Callable[..., Any]:
    """`labels(*values)`, memoised: one lock and validation per label tuple, not per event."""
    cache: dict[tuple[Any, ...], Any] = {}

    def child(*values: Any) -> Any:
        found = cache.get(values)
        if found is None:
            if len(cache) >= 10_000:  # unknown event types are labelled `other`; stay bounded
                cache.clear()
            found = cache[values] = labels(*values)
        return found

    return child


def build_app(settings: Settings, engine: Engine | None = None) -> faust.App:
    """The worker's Faust app (not started): for tests and for `faust -A` style tooling."""
    return TriggerWorker(settings, engine).app


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGTERM or SIGINT; offsets committed and producer flushed on exit.

    The ops port's /readyz answers 200 once Faust finished starting (tables recovered)."""
    started = threading.Event()
    serve_metrics(
        settings.metrics.metrics_port,
        settings.metrics.metrics_host,
        ready=lambda: (started.is_set(), "started" if started.is_set() else "starting"),
    )
    use_fast_event_loop()
    worker = TriggerWorker(settings)
    worker.rules.catch_up()  # the pack to run before the first record is handled
    worker._follow_rules()
    worker.rules.start()
    ops = settings.metrics  # the worker logs as every process does (common.logs)
    faust_worker = FrozenHeapWorker(
        worker.app,
        loglevel=ops.log_level,
        logging_config=logging_config(ops.log_level, ops.log_format),
        quiet=True,
    )
    faust_worker.startup_finished = started
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    finally:
        worker.rules.stop()


def main() -> None:
    """`python -m processors.worker`: run the worker with settings from `MOMENTS_*`."""
    run_worker(Settings())


if __name__ == "__main__":
    main()

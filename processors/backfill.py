"""Backfill and shadow runs: the trigger engine over a whole topic, on a lean batch path.

`backfill_topic` reads an interactions topic from its beginning with a plain
confluent-kafka consumer (`consume` in batches, partitions assigned directly,
so no group join), decodes each record with the same Avro codec the worker
uses, runs the same engine with one state store per source partition (one
watermark each, as in the worker and in `replay --partitions N`) and writes
the actions and decisions to JSON-lines files and/or produces them to the
action and decision topics of an output prefix. It is how history is
reprocessed and how a new rule pack is compared with production: a shadow run
writes files, or topics under another prefix, and never touches production.

Each record takes the worker's own record path (`processors.record_path`):
records that cannot be used (tombstones, larger than `max_event_bytes`,
undecodable, invalid, or that made the engine raise) are counted and
reported (stage, class and detail, as in the worker's dead-letter headers),
never fatal; the backfill itself writes no dead-letter topic. An erasure
record (`moments forget`) drops the customer from the partition's state; the
worker's idle ticks and unknown control records are skipped. The erasure
registry (`common.erasures`) is loaded before the first record and followed:
a record of an erased customer dated before their erasure is dropped unread
(counted in `erased`), so a replay never re-materialises an erased customer
(docs/design.md 10.1).

"The end" is each partition's high watermark when the run starts: a
partition is done when the consumer reports end-of-partition at or past it.
Tansu 0.6.0 reports the high watermark as the last batch's base offset + 1;
a fetch still returns that whole batch (read_uncommitted), and librdkafka
reports end-of-partition after the records of the fetch that reached it, so
the tail of the last batch is read too; after every partition is done the
consumer still takes whatever it has fetched already, without waiting.
Nothing is produced to the source topic to mark the end.

Speed: records are taken from the consumer's local queue as they are
fetched (never waiting for a full batch), decoded by the codec's generated
decoder, fed to the engine, and the outputs encoded once per batch; the
cyclic garbage collector is paused for the run. What remains per record is
mostly the engine itself.

Output order: within a partition, the order of the engine (deterministic);
across partitions, the order records were fetched. A one-partition topic
gives exactly the bytes of `replay_file` over the same events.

It never commits anything but progress offsets under its own group (the
engine state is rebuilt from the beginning on every run), and never imports
the worker, producers or sinks.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from common.erasures import ErasureRegistry
from common.memory import no_cyclic_gc
from common.settings import Settings
from processors.config import engine_config
from processors.engine import DictStore, Engine, load_rule_pack
from processors.engine.rules import RulePack
from processors.record_path import Applied, DeadLetter, RecordPath
from processors.replay import OutputWriter
from schemas.codec import codec_for, to_json_line
from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent
from schemas.wire import Topics, control_value

__all__ = ["BackfillError", "BackfillSummary", "backfill_topic"]

#: Records asked of librdkafka per `consume` call.
BATCH: Final = 10_000
#: How long one wait for the next fetched record lasts (stop is checked in between).
WAIT_S: Final = 0.5
#: How many unusable records the summary describes (all are counted).
GARBAGE_SAMPLES: Final = 10

CONSUMER_DEFAULTS: Final[dict[str, Any]] = {
    "client.id": "moments-backfill",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
    # Tansu does not do transactions; read_committed would hide the tail past its LSO.
    "isolation.level": "read_uncommitted",
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 256 * 1024,
    "fetch.wait.max.ms": 50,
    # While a partition's fetched records wait in the local queue, librdkafka postpones
    # its next fetch by this much (default 1 s): the end-of-partition report, which ends
    # the run, came up to that late (0.27 s of a 1.1 s run of 111k events).
    "fetch.queue.backoff.ms": 10,
}
PRODUCER_DEFAULTS: Final[dict[str, Any]] = {
    "client.id": "moments-backfill",
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
}
PRODUCER_REQUIRED: Final[dict[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
}


class BackfillError(RuntimeError):
    """The backfill cannot run or finish (no such topic, broker unreachable, failed deliveries)."""


@dataclass(slots=True)
class BackfillSummary:
    """What a backfill read and wrote (seconds is the only non-deterministic number)."""

    topic: str
    partitions: int
    events: int = 0
    actions: int = 0
    decisions: int = 0
    garbage: int = 0
    #: Events too late to apply (docs/design.md 11.1): not applied, counted.
    too_late: int = 0
    #: Events dated beyond their record timestamp + MOMENTS_MAX_FUTURE_SKEW (watermark capped).
    future_dated: int = 0
    #: Records of erased customers dated before their erasure: dropped unread.
    erased: int = 0
    garbage_samples: list[str] = field(default_factory=list)
    #: Partition -> the high watermark the run read up to (as reported at its start).
    ends: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def backfill_topic(
    settings: Settings,
    topic: str,
    *,
    actions_out: Path | str | None = None,
    decisions_out: Path | str | None = None,
    late_out: Path | str | None = None,
    status_out: Path | str | None = None,
    to_topics: bool = False,
    output_prefix: str | None = None,
    rules_path: Path | str | None = None,
    pack: RulePack | None = None,
    until_ms: int | None = None,
    group: str | None = None,
    max_events: int | None = None,
    stop_at_end: bool = True,
    stop: threading.Event | None = None,
) -> BackfillSummary:
    """Run the engine over `topic` from its beginning; write actions/decisions; return a summary.

    - `actions_out` / `decisions_out`: JSON-lines files (written beside the target and
      renamed into place at the end, like `replay_file`); `late_out`: the too-late events
      (not applied; the worker keeps them on `interactions.late`), as JSON lines;
      `status_out`: the changes of the actions' statuses (docs/design.md 12.3), as
      `replay --status-out` writes them.
    - `to_topics`: also produce actions to `<prefix>actions.<destination>`, decisions
      to `<prefix>decisions` and statuses to `<prefix>action-status`, where the prefix is
      `output_prefix` (default: the settings' topic prefix). A shadow run uses another
      prefix, or files only.
    - `until_ms`: at the end, advance every partition's watermark to it (fires timers).
    - `group`: the consumer group progress is committed under (default: a one-off id).
    - `max_events`: stop after this many records; `stop_at_end=False` keeps reading new
      records until `stop` is set or `max_events` is reached.

    Raises `BackfillError` when the topic does not exist or deliveries failed, and
    `RulePackError` for a bad rule pack; no output file is left behind then.
    """
    started = time.perf_counter()
    want_decisions = decisions_out is not None or to_topics
    engine = Engine(
        pack or load_rule_pack(rules_path or settings.engine.rules_path),
        engine_config(settings),
        decisions=want_decisions,
    )
    consumer = Consumer(
        settings.kafka_config(
            **{
                **CONSUMER_DEFAULTS,
                "group.id": group or f"moments-backfill-{uuid.uuid4().hex[:12]}",
            }
        )
    )
    targets = [Path(p) for p in (actions_out, decisions_out, status_out, late_out) if p is not None]
    temps = [t.with_name(f".{t.name}.partial") for t in targets]
    handles: list[IO[bytes]] = []
    producer: _TopicOutput | None = None
    registry = ErasureRegistry(settings)
    try:
        registry.load()
        partitions, ends = _assign_from_beginning(consumer, topic)
        summary = BackfillSummary(topic=topic, partitions=len(partitions), ends=dict(ends))
        for temp in temps:
            handles.append(open(temp, "wb", buffering=1 << 20))  # noqa: SIM115
        late_file = handles.pop() if late_out is not None else None
        status_file = handles.pop() if status_out is not None else None
        files = _file_output(handles, actions_out is not None, decisions_out is not None)
        if status_file is not None:
            files = files or OutputWriter(None)
            files.statuses_file = status_file
            handles.append(status_file)  # closed with the others
        if late_file is not None:
            handles.append(late_file)  # closed with the others
        if to_topics:
            prefix = settings.kafka.topic_prefix if output_prefix is None else output_prefix
            producer = _TopicOutput(settings, Topics(prefix))
        run = _Run(engine, settings, summary, files, producer, partitions, late_file)
        run.registry = registry
        with no_cyclic_gc():
            run.consume(consumer, ends, max_events=max_events, stop_at_end=stop_at_end, stop=stop)
            run.finish(until_ms)
        if producer is not None:
            producer.close()
        summary.actions = run.actions
        summary.decisions = engine.decided
        for handle in handles:
            handle.close()
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
        _commit(consumer, run.positions, topic)
    finally:
        for handle in handles:
            handle.close()
        for temp in temps:
            temp.unlink(missing_ok=True)
        if producer is not None:
            producer.release()
        consumer.close()
        registry.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _assign_from_beginning(consumer: Consumer, topic: str) -> tuple[list[int], dict[int, int]]:
    """Assign every partition of `topic` at its beginning; return partitions and high watermarks."""
    try:
        metadata = consumer.list_topics(topic, timeout=15)
    except KafkaException as exc:
        raise BackfillError(f"cannot read the metadata of topic {topic}: {exc}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        reason = described.error.str() if described is not None and described.error else "none"
        raise BackfillError(f"topic {topic} does not exist or has no partitions ({reason})")
    partitions = sorted(described.partitions)
    ends: dict[int, int] = {}
    for partition in partitions:
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=15, cached=False
            )
        except KafkaException as exc:
            raise BackfillError(f"cannot read the end of {topic}[{partition}]: {exc}") from None
        ends[partition] = high
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return partitions, ends


def _file_output(handles: list[IO[bytes]], actions: bool, decisions: bool) -> OutputWriter | None:
    if not handles:
        return None
    if actions:
        return OutputWriter(handles[0], handles[1] if decisions else None)
    return OutputWriter(None, handles[0])  # decisions only


class _TopicOutput:
    """Actions to `actions.<destination>`, decisions to `decisions`, keyed by customer_id."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.topics = topics
        self.producer = Producer(
            {
                **settings.kafka_config(**PRODUCER_DEFAULTS),
                **PRODUCER_REQUIRED,
                # only failures come back: no Python callback per delivered record
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
            }
        )
        self._send = self.producer.produce
        self.action_codec = codec_for(ActionEvent, settings.kafka.schema_registry_url)
        self.decision_codec = codec_for(Decision, settings.kafka.schema_registry_url)
        self.status_codec = codec_for(ActionStatus, settings.kafka.schema_registry_url)
        self.action_topics = {d: topics.action(d) for d in topics.actions}
        self.failures: list[str] = []
        self.failed = 0

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed += 1
            if len(self.failures) < 5:
                self.failures.append(f"{message.topic()}: {error.str()}")

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self._send(topic, value, key)  # a str key is sent as its UTF-8 bytes
                return
            except BufferError:
                self.producer.poll(0.1)  # back-pressure: the local queue is full

    def write(
        self,
        actions: list[ActionEvent],
        decisions: list[Decision],
        statuses: list[ActionStatus] | None = None,
    ) -> None:
        produce, encode_action = self._produce, self.action_codec.encode
        for action in actions:
            topic = self.action_topics.get(action.destination) or self.topics.action(
                action.destination
            )
            produce(topic, action.customer_id, encode_action(action, validate=False))
        encode_decision, decisions_topic = self.decision_codec.encode, self.topics.decisions
        for decision in decisions:
            produce(
                decisions_topic, decision.customer_id, encode_decision(decision, validate=False)
            )
        if statuses:
            encode_status, status_topic = self.status_codec.encode, self.topics.action_status
            for status in statuses:
                produce(status_topic, status.customer_id, encode_status(status, validate=False))
        self.producer.poll(0)

    def close(self, timeout_s: float = 60.0) -> None:
        """Wait for every delivery; raise `BackfillError` for any that failed."""
        left = self.producer.flush(timeout_s)
        if left:
            raise BackfillError(f"{left} actions/decisions were not delivered in {timeout_s} s")
        if self.failed:
            raise BackfillError(
                f"{self.failed} actions/decisions were not delivered: " + "; ".join(self.failures)
            )

    def release(self) -> None:
        """Close the client now (it holds this object through its callback: a cycle that
        would otherwise keep its threads connecting until a garbage collection)."""
        self.producer.purge()
        self.producer.close()


class _Run:
    """The consume → decode → engine → output loop of one backfill.

    Per record it runs the record path the worker runs (`processors.record_path`: triage,
    the codec's generated decoder, the engine on the partition's store) and collects the
    output; outputs are encoded and written once per fetched batch.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        summary: BackfillSummary,
        files: OutputWriter | None,
        topics: _TopicOutput | None,
        partitions: list[int],
        late_file: IO[bytes] | None = None,
    ) -> None:
        self.engine = engine
        self.late_file = late_file
        self.summary = summary
        self.files = files
        self.topics = topics
        #: Triage, decode and the engine per record: the worker's own (`processors.record_path`).
        self.path = RecordPath(
            codec_for(InteractionEvent, settings.kafka.schema_registry_url),
            engine.process,
            max_event_bytes=settings.engine.max_event_bytes,
            max_future_skew_ms=settings.engine.max_future_skew_ms,
        )
        self.stores = {p: DictStore() for p in partitions}
        #: The erased customers (`backfill_topic` loads it; None: nothing dropped).
        self.registry: ErasureRegistry | None = None
        #: Partition -> the last record fetched from it (its offset + 1 is the progress).
        self.last: dict[int, Message] = {}
        self.actions = 0

    @property
    def positions(self) -> dict[int, int]:
        """Partition -> the offset after the last record read from it."""
        return {p: cast(int, m.offset()) + 1 for p, m in self.last.items()}

    def emit(
        self,
        actions: list[ActionEvent],
        decisions: list[Decision],
        statuses: list[ActionStatus] | None = None,
    ) -> None:
        self.actions += len(actions)
        if self.files is not None:
            self.files.write_records(actions, decisions, statuses)
        if self.topics is not None:
            self.topics.write(actions, decisions, statuses)

    def garbage(self, message: Message, dead: DeadLetter) -> None:
        summary = self.summary
        summary.garbage += 1
        if len(summary.garbage_samples) < GARBAGE_SAMPLES:
            summary.garbage_samples.append(
                f"{message.topic()}[{message.partition()}]@{message.offset()}: {dead.stage}: "
                f"{dead.error_class}: {dead.detail[:200]}"
            )

    def run_batch(self, batch: list[Message], ends: dict[int, int], pending: set[int]) -> int:
        """Handle one fetched batch (`RecordPath`), emit its output; return how many records
        it held. Control records (the worker's idle ticks, erasures) are neither events nor
        garbage; an erasure drops the customer from the partition's state."""
        handle, stores, last = self.path.handle, self.stores, self.last
        registry = self.registry
        if registry is not None:
            registry.poll()
            if not registry.erased:
                registry = None
        actions: list[ActionEvent] = []
        decisions: list[Decision] = []
        statuses: list[ActionStatus] = []
        records = events = 0
        for message in batch:
            if message.error() is not None:
                self.end_of_partition(message, ends, pending)
                continue
            records += 1
            partition = cast(int, message.partition())
            last[partition] = message
            kind, record_ms = message.timestamp()
            if (
                registry is not None
                and registry.drops(
                    message.key(), None if kind == TIMESTAMP_NOT_AVAILABLE else record_ms
                )
                and control_value(message.headers()) is None
            ):
                self.summary.erased += 1
                continue
            result = handle(
                stores[partition],
                partition,
                message.offset(),
                message.headers(),
                message.key(),
                message.value(),
                None if kind == TIMESTAMP_NOT_AVAILABLE else record_ms,
            )
            if type(result) is Applied:
                out = result.output
                if out.too_late:
                    self.summary.too_late += 1
                    if self.late_file is not None:
                        self.late_file.write(to_json_line(result.event).encode("utf-8") + b"\n")
                    continue
                events += 1
                if out.actions:
                    actions += out.actions
                if out.decisions:
                    decisions += out.decisions
                if out.statuses:
                    statuses += out.statuses
            elif type(result) is DeadLetter:
                self.garbage(message, result)
        self.summary.events += events
        self.summary.future_dated = self.path.future_dated
        if actions or decisions or statuses:
            self.emit(actions, decisions, statuses)
        return records

    def end_of_partition(self, message: Message, ends: dict[int, int], pending: set[int]) -> None:
        """An error event in the fetched stream: end of a partition, or a failure (raised)."""
        error = cast(KafkaError, message.error())
        if error.code() != KafkaError._PARTITION_EOF:
            raise BackfillError(f"consuming {message.topic()} failed: {error.str()}")
        partition = cast(int, message.partition())
        if cast(int, message.offset()) >= ends.get(partition, 0):
            pending.discard(partition)

    def consume(
        self,
        consumer: Consumer,
        ends: dict[int, int],
        *,
        max_events: int | None,
        stop_at_end: bool,
        stop: threading.Event | None,
    ) -> None:
        """Consume in batches until every partition reached its end (or budget / stop)."""
        pending = {p for p, end in ends.items() if end > 0}
        budget = max_events if max_events is not None else -1
        while budget != 0 and (pending or not stop_at_end):
            if stop is not None and stop.is_set():
                return
            wanted = BATCH if budget < 0 else min(BATCH, budget)
            # Take what is fetched already; a batch call with a timeout would wait for a
            # full batch (the whole timeout at the end of a topic).
            batch = consumer.consume(wanted, 0)
            if not batch:
                first = consumer.poll(WAIT_S)  # nothing fetched yet: wait for the next fetch
                if first is None:
                    continue
                batch = [first]
                if wanted > 1:
                    batch += consumer.consume(wanted - 1, 0)
            budget -= self.run_batch(batch, ends, pending)
        # Every partition reported its end after the records fetched with it; take anything
        # still fetched past it (none seen on Tansu 0.6.0 even past its high watermark).
        while stop_at_end and budget != 0:
            wanted = BATCH if budget < 0 else min(BATCH, budget)
            batch = consumer.consume(wanted, 0)
            if not batch:
                return
            handled = self.run_batch(batch, ends, pending)
            if not handled:
                return
            budget -= handled

    def finish(self, until_ms: int | None) -> None:
        """`--until`: raise every partition's watermark (in partition order), firing timers."""
        if until_ms is None:
            return
        for partition in sorted(self.stores):
            out = self.engine.advance_watermark(self.stores[partition], until_ms)
            if out.actions or out.decisions or out.statuses:
                self.emit(out.actions, out.decisions, out.statuses)


def _commit(consumer: Consumer, positions: dict[int, int], topic: str) -> None:
    """Record progress under the backfill's group (informational: lag tools can show it)."""
    if not positions:
        return
    offsets = [TopicPartition(topic, p, offset) for p, offset in sorted(positions.items())]
    with contextlib.suppress(KafkaException):  # informational: a refusal does not fail the run
        consumer.commit(offsets=offsets, asynchronous=False)

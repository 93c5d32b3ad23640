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
(docs/design.md 10.1). When the registry holds no record at the start (its
high watermark), there is nothing to drop yet: it loads in a thread while the
first records are read (an erasure registered meanwhile is one registered
during the run, followed from then on), instead of delaying the first record
by a fetch of the registry's topic.

"The end" is each partition's high watermark when the run starts: a
partition is done when the consumer reports end-of-partition at or past it.
Tansu 0.6.0 reports the high watermark as the last batch's base offset + 1;
a fetch still returns that whole batch (read_uncommitted), and librdkafka
reports end-of-partition after the records of the fetch that reached it, so
the tail of the last batch is read too; after every partition is done the
consumer still takes whatever it has fetched already, without waiting.
Nothing is produced to the source topic to mark the end.

Processes (`processes`, `replay --from-topic --processes N`): a customer's
records are all on one partition, and partitions share nothing in the engine
(one store and one watermark each), so each process owns a disjoint set of
whole partitions (balanced by their record counts), with its own consumer,
engine state and erasure registry, and writes each partition's output to a
part file of its own. Processes are forked (the engine is inherited, not
rebuilt; `fork` and a non-daemonic caller are needed, else one process runs),
after the only client of this process (the one that read the partitions and
their ends) is closed. A process that fails stops the others; the error names
its partitions and no output file is written (topics of `--to-topics` may
hold part of the output then).

Output order, the same for any number of processes: partition by partition
in partition order; within a partition the engine's order (deterministic),
then the timers `until_ms` fired in it. Files are merged from the part files
beside their targets and renamed into place at the end. A one-partition
topic gives exactly the bytes of `replay_file` over the same events.

Speed: records are taken from the consumer's local queue as they are
fetched (never waiting for a full batch), decoded by the codec's generated
decoder, fed to the engine, and the outputs encoded once per batch and
partition; the cyclic garbage collector is paused for the run. What remains
per record is mostly the engine itself.

It never commits anything but progress offsets under its own group (the
engine state is rebuilt from the beginning on every run), and never imports
the worker, producers or sinks.
"""

from __future__ import annotations

import contextlib
import marshal
import multiprocessing
import multiprocessing.connection
import os
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

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

from common.erasures import ErasureRegistry, use_key_of
from common.memory import no_cyclic_gc
from common.settings import Settings
from processors.config import engine_config
from processors.engine import DictStore, Engine, load_rule_pack
from processors.engine.rules import RulePack
from processors.record_path import Applied, DeadLetter, RecordPath
from processors.replay import OutputWriter
from processors.replay_shards import end_with_parent, stop_children, usable_cpus
from schemas.codec import codec_for, to_json_line
from schemas.records import ActionEvent, ActionStatus, Decision, InteractionEvent
from schemas.wire import Topics, control_value

__all__ = [
    "BackfillError",
    "BackfillSummary",
    "backfill_topic",
    "process_count",
    "share_partitions",
]

#: Records asked of librdkafka per `consume` call.
BATCH: Final = 10_000
#: How long one wait for the next fetched record lasts (stop is checked in between).
WAIT_S: Final = 0.5
#: How many unusable records the summary describes (all are counted).
GARBAGE_SAMPLES: Final = 10
#: The output files, in the order of `backfill_topic`'s arguments: a partition's output of
#: each kind goes to a part file `<partition>.<kind>`, merged in partition order.
KINDS: Final = ("actions", "decisions", "status", "late")

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
    """The backfill cannot run or finish (no such topic, broker unreachable, failed deliveries,
    a failed process)."""


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
    #: How many processes shared the partitions.
    processes: int = 1

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_second_per_process(self) -> float:
        """Events per second of wall time and per process: the rate each process kept up."""
        return self.events_per_second / max(self.processes, 1)


@dataclass(frozen=True, slots=True)
class _Job:
    """What every process of one backfill shares (inherited by the forked ones)."""

    settings: Settings
    topic: str
    engine: Engine
    #: The output kinds (of `KINDS`) written to part files.
    kinds: tuple[str, ...]
    #: Where the part files and each process's result go.
    work: Path
    #: The prefix of the topics produced to (None: no topics).
    output_prefix: str | None
    until_ms: int | None
    group: str
    #: Whether the erasure registry held no record at the start (see the module).
    registry_empty: bool = False


def process_count(processes: int | None, ends: dict[int, int]) -> int:
    """How many processes share a backfill: `processes` (0 or None: one per usable CPU),
    at most one per partition holding records; 1 where processes cannot be forked."""
    if (
        "fork" not in multiprocessing.get_all_start_methods()
        or multiprocessing.current_process().daemon
    ):
        return 1
    wanted = processes or usable_cpus()
    return max(1, min(wanted, sum(1 for end in ends.values() if end > 0)))


def share_partitions(ends: dict[int, int], count: int) -> list[list[int]]:
    """The partitions shared out between `count` processes, the largest first to the least
    loaded (by high watermark); each process's partitions in order."""
    loads = [0] * count
    shares: list[list[int]] = [[] for _ in range(count)]
    for partition in sorted(ends, key=lambda p: (-ends[p], p)):
        least = loads.index(min(loads))
        shares[least].append(partition)
        loads[least] += ends[partition]
    return [sorted(share) for share in shares if share]


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
    processes: int | None = 1,
) -> BackfillSummary:
    """Run the engine over `topic` from its beginning; write actions/decisions; return a summary.

    - `actions_out` / `decisions_out`: JSON-lines files (written beside the target and
      renamed into place at the end, like `replay_file`); `late_out`: the too-late events
      (not applied; the worker keeps them on `interactions.late`), as JSON lines;
      `status_out`: the changes of the actions' statuses (docs/design.md 12.3), as
      `replay --status-out` writes them. Order: see the module.
    - `to_topics`: also produce actions to `<prefix>actions.<destination>`, decisions
      to `<prefix>decisions` and statuses to `<prefix>action-status`, where the prefix is
      `output_prefix` (default: the settings' topic prefix). A shadow run uses another
      prefix, or files only.
    - `until_ms`: at the end, advance every partition's watermark to it (fires timers).
    - `group`: the consumer group progress is committed under (default: a one-off id).
    - `max_events`: stop after this many records; `stop_at_end=False` keeps reading new
      records until `stop` is set or `max_events` is reached (both in one process).
    - `processes`: how many processes share the partitions (0 or None: one per usable CPU;
      see `process_count`); the output is the same for any number.

    Raises `BackfillError` when the topic does not exist, deliveries failed or a process
    failed, and `RulePackError` for a bad rule pack; no output file is left behind then.
    """
    started = time.perf_counter()
    engine = Engine(
        pack or load_rule_pack(rules_path or settings.engine.rules_path),
        engine_config(settings),
        decisions=decisions_out is not None or to_topics,
    )
    targets = {
        kind: Path(path)
        for kind, path in zip(
            KINDS, (actions_out, decisions_out, status_out, late_out), strict=True
        )
        if path is not None
    }
    group = group or f"moments-backfill-{uuid.uuid4().hex[:12]}"
    partitions, ends, registry_empty = _partitions_and_ends(settings, topic, group)
    shared = max_events is None and stop_at_end and stop is None
    count = process_count(processes, ends) if shared and processes != 1 else 1
    beside = next(iter(targets.values())).parent if targets else None
    work = Path(tempfile.mkdtemp(prefix=".moments-backfill-", dir=beside))
    prefix = None
    if to_topics:
        prefix = settings.kafka.topic_prefix if output_prefix is None else output_prefix
    job = _Job(
        settings, topic, engine, tuple(targets), work, prefix, until_ms, group, registry_empty
    )
    try:
        if count == 1:
            with no_cyclic_gc():
                results = [
                    _backfill_part(
                        job,
                        partitions,
                        ends,
                        max_events=max_events,
                        stop_at_end=stop_at_end,
                        stop=stop,
                    )
                ]
        else:
            results = _run_processes(job, share_partitions(ends, count), ends)
        summary = _summarise(topic, partitions, ends, results, len(results))
        _merge(work, partitions, targets)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _partitions_and_ends(
    settings: Settings, topic: str, group: str
) -> tuple[list[int], dict[int, int], bool]:
    """The partitions of `topic`, their high watermarks and whether the erasure registry is
    empty, with a consumer closed after."""
    consumer = Consumer(settings.kafka_config(**{**CONSUMER_DEFAULTS, "group.id": group}))
    try:
        partitions, ends = _read_ends(consumer, topic)
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topics.erasures, 0), timeout=15, cached=False
            )
        except KafkaException:  # missing or unreadable: loaded before the first record
            return partitions, ends, False
        return partitions, ends, high <= low
    finally:
        consumer.close()


#: What one process read and wrote: the counts (events, actions, decisions, garbage,
#: too_late, future_dated, erased), the garbage samples as (partition, offset, text) and the
#: progress (partition -> offset after the last record read).
_PartResult = dict[str, Any]


def _backfill_part(
    job: _Job,
    partitions: list[int],
    ends: dict[int, int],
    *,
    max_events: int | None,
    stop_at_end: bool,
    stop: threading.Event | None,
    keep: list[Any] | None = None,
) -> _PartResult:
    """Read `partitions` from their beginning to `ends`, each partition's output to its part
    files in `job.work`; what was read and written. `keep`: where the run is kept (a forked
    process ends without freeing its state)."""
    settings, topic = job.settings, job.topic
    consumer = Consumer(settings.kafka_config(**{**CONSUMER_DEFAULTS, "group.id": job.group}))
    registry = ErasureRegistry(settings)
    producer: _TopicOutput | None = None
    handles: list[IO[bytes]] = []
    loading: _Loading | None = None
    try:
        # With the partitions' leaders known before `assign`, the first offset query goes
        # out at once; without, librdkafka retries it after a fixed 500 ms.
        try:
            consumer.list_topics(topic, timeout=15)
        except KafkaException as exc:
            raise BackfillError(f"cannot read the metadata of topic {topic}: {exc}") from None
        # The first fetch starts now, in the client's threads, while the registry loads.
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        use_key_of(settings)
        loading = _Loading(registry) if job.registry_empty else None
        if loading is None:
            registry.load()
        writers: dict[int, OutputWriter] = {}
        late_files: dict[int, IO[bytes]] = {}
        for partition in partitions:
            files: dict[str, IO[bytes]] = {}
            for kind in job.kinds:
                files[kind] = open(job.work / f"{partition}.{kind}", "wb", buffering=1 << 20)  # noqa: SIM115
                handles.append(files[kind])
            writers[partition] = OutputWriter(
                files.get("actions"), files.get("decisions"), files.get("status")
            )
            if "late" in files:
                late_files[partition] = files["late"]
        if job.output_prefix is not None:
            producer = _TopicOutput(settings, Topics(job.output_prefix))
        summary = BackfillSummary(topic=topic, partitions=len(partitions))
        run = _Run(job.engine, settings, summary, writers, producer, partitions, late_files)
        if loading is None:
            run.registry = registry
        else:
            run.loading = loading
        if keep is not None:
            keep.append(run)
        run.consume(
            consumer,
            {p: ends[p] for p in partitions},
            max_events=max_events,
            stop_at_end=stop_at_end,
            stop=stop,
        )
        if run.loading is not None:  # a run shorter than the load: its error is raised too
            run.registry, run.loading = run.loading.result(), None
        run.finish(job.until_ms)
        if producer is not None:
            producer.close()
        for handle in handles:
            handle.close()
        _commit(consumer, run.positions, topic)
        return {
            "events": summary.events,
            "actions": run.actions,
            "decisions": job.engine.decided,
            "garbage": summary.garbage,
            "too_late": summary.too_late,
            "future_dated": summary.future_dated,
            "erased": summary.erased,
            "samples": run.samples,
        }
    finally:
        for handle in handles:
            handle.close()
        if producer is not None:
            producer.release()
        consumer.close()
        if loading is not None:
            loading.thread.join()  # it closes nothing of its own: wait before closing
        registry.close()


def _summarise(
    topic: str,
    partitions: list[int],
    ends: dict[int, int],
    results: list[_PartResult],
    processes: int,
) -> BackfillSummary:
    summary = BackfillSummary(
        topic=topic, partitions=len(partitions), ends=dict(ends), processes=processes
    )
    for name in ("events", "actions", "decisions", "garbage", "too_late", "future_dated"):
        setattr(summary, name, sum(result[name] for result in results))
    summary.erased = sum(result["erased"] for result in results)
    samples = sorted(sample for result in results for sample in result["samples"])
    summary.garbage_samples = [text for _, _, text in samples[:GARBAGE_SAMPLES]]
    return summary


def _merge(work: Path, partitions: list[int], targets: dict[str, Path]) -> None:
    """Each target: its partitions' part files in partition order, written beside it and
    renamed into place once every target is written."""
    temps = {kind: target.with_name(f".{target.name}.partial") for kind, target in targets.items()}
    try:
        for kind, temp in temps.items():
            with open(temp, "wb") as out:
                for partition in partitions:
                    part = work / f"{partition}.{kind}"
                    if part.stat().st_size:
                        _append_file(part, out)
        for kind, temp in temps.items():
            os.replace(temp, targets[kind])
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def _append_file(part: Path, out: IO[bytes]) -> None:
    """Append the file at `part` to `out`, in the kernel where it can (no copy through here)."""
    with open(part, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        done = 0
        with contextlib.suppress(AttributeError, OSError):  # no sendfile: the rest below
            out.flush()
            while done < size:
                sent = os.sendfile(out.fileno(), source.fileno(), done, size - done)
                if sent == 0:
                    break
                done += sent
        if done < size:
            source.seek(done)
            shutil.copyfileobj(source, out, 1 << 20)


def _run_processes(job: _Job, shares: list[list[int]], ends: dict[int, int]) -> list[_PartResult]:
    """One forked process per share of the partitions; their results in share order. The
    first that fails stops the others and raises `BackfillError` naming its partitions."""
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_child_main, args=(job, index, share, ends), daemon=True)
        for index, share in enumerate(shares)
    ]
    results: dict[int, _PartResult] = {}
    with ExitStack() as cleanup:
        cleanup.callback(stop_children, children)
        try:
            for child in children:
                child.start()
        except OSError as exc:
            raise BackfillError(f"a backfill process could not start: {exc}") from None
        running = {child.sentinel: index for index, child in enumerate(children)}
        while running:
            for sentinel in multiprocessing.connection.wait(list(running)):
                index = running.pop(sentinel)  # type: ignore[arg-type]
                children[index].join()
                results[index] = _child_result(job, index, shares[index], children[index])
    return [results[index] for index in range(len(shares))]


def _child_result(
    job: _Job, index: int, share: list[int], child: multiprocessing.process.BaseProcess
) -> _PartResult:
    """The result a process left, or `BackfillError` naming its partitions."""
    where = f"partition{'s' if len(share) > 1 else ''} {', '.join(map(str, share))} of {job.topic}"
    partial = (
        f" (topics under {job.output_prefix!r} may hold part of the output)"
        if job.output_prefix is not None
        else ""
    )
    try:
        state, payload = marshal.loads((job.work / f"process-{index}.result").read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        raise BackfillError(
            f"the process reading {where} ended (exit code {child.exitcode}) without a "
            f"result; nothing was written{partial}"
        ) from None
    if state != "ok":
        raise BackfillError(f"the backfill of {where} failed: {payload}{partial}")
    return dict(payload)


#: What a forked process keeps until it ends (see `_child_main`).
_KEPT_TO_THE_END: list[Any] = []


def _child_main(job: _Job, index: int, share: list[int], ends: dict[int, int]) -> None:
    """A forked process: its partitions' part files, and its result (or error) in a file.
    Its state is never freed: the process ends once its output is written."""
    end_with_parent()
    try:
        with no_cyclic_gc():
            result: tuple[str, Any] = (
                "ok",
                _backfill_part(
                    job,
                    share,
                    ends,
                    max_events=None,
                    stop_at_end=True,
                    stop=None,
                    keep=_KEPT_TO_THE_END,
                ),
            )
    except Exception as exc:
        result = ("error", f"{type(exc).__name__}: {exc}")
    (job.work / f"process-{index}.result").write_bytes(marshal.dumps(result))


def _read_ends(consumer: Consumer, topic: str) -> tuple[list[int], dict[int, int]]:
    """Every partition of `topic` and its high watermark (raises `BackfillError`)."""
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
    return partitions, ends


class _Loading:
    """The erasure registry loading in a thread (see the module: only when it was empty at
    the start, so nothing read meanwhile is a record it would have dropped)."""

    def __init__(self, registry: ErasureRegistry) -> None:
        self.registry = registry
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._load, name="backfill-erasures", daemon=True)
        self.thread.start()

    def _load(self) -> None:
        try:
            self.registry.load()
        except Exception as exc:  # raised where the run waits for it (`result`)
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self) -> ErasureRegistry:
        """The loaded registry (waits for it); the loading's error, raised here."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.registry


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
    """The consume → decode → engine → output loop of one backfill process.

    Per record it runs the record path the worker runs (`processors.record_path`: triage,
    the codec's generated decoder, the engine on the partition's store) and collects the
    output; outputs are encoded and written once per fetched batch, to the partition's own
    files.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        summary: BackfillSummary,
        files: dict[int, OutputWriter] | OutputWriter | None,
        topics: _TopicOutput | None,
        partitions: list[int],
        late_files: dict[int, IO[bytes]] | None = None,
    ) -> None:
        self.engine = engine
        self.late_files = late_files or {}
        self.summary = summary
        #: Partition -> where its output goes (one writer: every partition's, in batch order).
        self.files = files if isinstance(files, dict) else dict.fromkeys(partitions, files)
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
        #: The registry while it loads in a thread (`registry` once it is loaded).
        self.loading: _Loading | None = None
        #: Partition -> the offset after the last record read from it.
        self.positions: dict[int, int] = {}
        self.actions = 0
        #: The first unusable records as (partition, offset, description).
        self.samples: list[tuple[int, int, str]] = []

    def emit(
        self,
        partition: int,
        actions: list[ActionEvent],
        decisions: list[Decision],
        statuses: list[ActionStatus] | None = None,
    ) -> None:
        self.actions += len(actions)
        files = self.files.get(partition)
        if files is not None:
            files.write_records(actions, decisions, statuses)
        if self.topics is not None:
            self.topics.write(actions, decisions, statuses)

    def garbage(self, message: Message, dead: DeadLetter) -> None:
        self.summary.garbage += 1
        if len(self.samples) < GARBAGE_SAMPLES:
            partition, offset = message.partition() or 0, message.offset() or 0
            self.samples.append(
                (
                    partition,
                    offset,
                    f"{message.topic()}[{partition}]@{offset}: {dead.stage}: "
                    f"{dead.error_class}: {dead.detail[:200]}",
                )
            )
            self.summary.garbage_samples.append(self.samples[-1][2])

    def run_batch(self, batch: list[Message], ends: dict[int, int], pending: set[int]) -> int:
        """Handle one fetched batch (`RecordPath`), emit its output per partition; return how
        many records it held. Control records (the worker's idle ticks, erasures) are neither
        events nor garbage; an erasure drops the customer from the partition's state."""
        handle, stores, positions = self.path.handle, self.stores, self.positions
        late_files, summary = self.late_files, self.summary
        if self.loading is not None and self.loading.done():
            self.registry, self.loading = self.loading.result(), None
        registry = self.registry
        if registry is not None:
            registry.poll()
            if not registry.erased:
                registry = None
        #: Partition -> its (actions, decisions, statuses) of this batch.
        outputs: dict[int, tuple[list[ActionEvent], list[Decision], list[ActionStatus]]] = {}
        records = events = 0
        no_time = TIMESTAMP_NOT_AVAILABLE
        for message in batch:
            if message.error() is not None:
                self.end_of_partition(message, ends, pending)
                continue
            records += 1
            partition: int = message.partition()  # type: ignore[assignment]
            offset: int = message.offset()  # type: ignore[assignment]
            positions[partition] = offset + 1
            kind, record_ms = message.timestamp()
            timestamp = None if kind == no_time else record_ms
            key, headers = message.key(), message.headers()
            if (
                registry is not None
                and registry.drops(key, timestamp)
                and control_value(headers) is None
            ):
                summary.erased += 1
                continue
            result = handle(
                stores[partition], partition, offset, headers, key, message.value(), timestamp
            )
            if type(result) is Applied:
                out = result.output
                if out.too_late:
                    summary.too_late += 1
                    late = late_files.get(partition)
                    if late is not None:
                        late.write(to_json_line(result.event).encode("utf-8") + b"\n")
                    continue
                events += 1
                if out.actions or out.decisions or out.statuses:
                    lists = outputs.get(partition)
                    if lists is None:
                        lists = outputs[partition] = ([], [], [])
                    if out.actions:
                        lists[0].extend(out.actions)
                    if out.decisions:
                        lists[1].extend(out.decisions)
                    if out.statuses:
                        lists[2].extend(out.statuses)
            elif type(result) is DeadLetter:
                self.garbage(message, result)
        summary.events += events
        summary.future_dated = self.path.future_dated
        for partition, (actions, decisions, statuses) in outputs.items():
            self.emit(partition, actions, decisions, statuses)
        return records

    def end_of_partition(self, message: Message, ends: dict[int, int], pending: set[int]) -> None:
        """An error event in the fetched stream: end of a partition, or a failure (raised)."""
        error: KafkaError = message.error()  # type: ignore[assignment]
        if error.code() != KafkaError._PARTITION_EOF:
            raise BackfillError(f"consuming {message.topic()} failed: {error.str()}")
        partition: int = message.partition()  # type: ignore[assignment]
        offset: int = message.offset()  # type: ignore[assignment]
        if offset >= ends.get(partition, 0):
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
                self.emit(partition, out.actions, out.decisions, out.statuses)


def _commit(consumer: Consumer, positions: dict[int, int], topic: str) -> None:
    """Record progress under the backfill's group (informational: lag tools can show it)."""
    if not positions:
        return
    offsets = [TopicPartition(topic, p, offset) for p, offset in sorted(positions.items())]
    with contextlib.suppress(KafkaException):  # informational: a refusal does not fail the run
        consumer.commit(offsets=offsets, asynchronous=False)

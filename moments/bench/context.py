"""The bench's shared inputs: sizes, `Bench` (settings, the simulated population, topics
per measurement, raw produce and consume, a child's count sampled) and small helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from common.settings import Settings
from common.topics import ensure_topics
from moments.calibration import process_cpu_seconds
from moments.runtime import Supervisor
from moments.stack import free_port
from producers.simulator import write_simulation
from schemas.codec import read_events_jsonl
from schemas.records import ActionEvent, InteractionEvent


@dataclasses.dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each section does (quick: the whole suite in under 3 minutes)."""

    codec_records: int
    publisher_events: int
    customers: int
    days: int
    sink_rows: int
    worker_events: int
    latency_seconds: float
    offered_load: int = 2000
    worker_partitions: int = 12


QUICK: Final = Sizes(
    codec_records=2_000,
    publisher_events=30_000,
    customers=100_000,
    days=7,
    sink_rows=20_000,
    worker_events=40_000,
    latency_seconds=8.0,
)
FULL: Final = Sizes(
    codec_records=20_000,
    publisher_events=200_000,
    customers=100_000,
    days=30,
    sink_rows=100_000,
    worker_events=100_000,
    latency_seconds=30.0,
)

#: Target per figure: (key, comparison, threshold, what it means).


#: The bare consumer the raw-consume baselines read with (large fetches, no commits).
RAW_CONSUMER: Final[dict[str, Any]] = {
    "enable.auto.commit": False,
    "isolation.level": "read_uncommitted",
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 256 * 1024,
    "fetch.wait.max.ms": 50,
}


def per_second(count: int, seconds: float) -> float:
    """`count` per second of `seconds`, to one decimal (0.0 for no time)."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


def _raw_consume_share(settings: Settings, topic: str, partitions: list[int], report: Any) -> None:
    """One process of `Bench.raw_consume_processes`: (records, first record's time, end, CPU
    seconds of the whole process, its client's threads included)."""
    cpu = time.process_time()
    consumer = Consumer(
        settings.kafka_config(
            **RAW_CONSUMER,
            **{"group.id": f"bench-raw-{uuid.uuid4().hex[:6]}", "enable.partition.eof": True},
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    try:
        seen, first, end = _drain(consumer, None, set(partitions))
    finally:
        consumer.close()
    report.send((seen, first if first is not None else end, end, time.process_time() - cpu))


def _drain(
    consumer: Consumer, expected: int | None, partitions: set[int]
) -> tuple[int, float | None, float]:
    """Consume until `expected` records (when given), else until each of `partitions` reported
    its end (partition EOF on); at most 120 s: (records, first record's time, end time)."""
    pending, seen = set(partitions), 0
    first: float | None = None
    deadline = time.monotonic() + 120
    while (seen < expected if expected is not None else pending) and time.monotonic() < deadline:
        batch = consumer.consume(10_000, 0.5)
        if batch and first is None:
            first = time.perf_counter()
        for message in batch:
            if message.error() is None:
                seen += 1
            else:
                pending.discard(message.partition())
    return seen, first, time.perf_counter()


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Time the block: the box it yields holds the seconds once the block ends."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


class Bench:
    """What the sections of the suite share: settings, sizes, a work folder, the simulated
    population, topics of their own, raw produce and consume, sampling a child's count.

    Each section (a function of a `Bench`) fills `figures` (top level) and `details` (its own)."""

    def __init__(self, settings: Settings, sizes: Sizes, work: Path, details: dict[str, Any]):
        self.settings = settings
        self.sizes = sizes
        self.work = work
        self.details = details
        self.figures: dict[str, Any] = {}
        #: Figures left out on purpose (a missing optional package...): figure -> why.
        self.unmeasured: dict[str, str] = {}
        self._events_path: Path | None = None
        #: The engine section's actions, which the sink section writes.
        self.actions: list[ActionEvent] = []

    # -- shared inputs ----------------------------------------------------------------------

    def events_path(self) -> Path:
        """The simulated population as JSON lines (cached between runs in the data dir)."""
        if self._events_path is None:
            sizes = self.sizes
            cache = self.settings.stack.data_dir / "bench"
            cache.mkdir(parents=True, exist_ok=True)
            path = cache / f"sim-{sizes.customers}c-{sizes.days}d-s7.jsonl"
            if not path.exists():
                partial = path.with_suffix(".partial")
                write_simulation(partial, sizes.customers, sizes.days, 7)
                partial.replace(path)
            self._events_path = path
        return self._events_path

    def events(self, limit: int | None = None) -> list[InteractionEvent]:
        out: list[InteractionEvent] = []
        for event in read_events_jsonl(self.events_path()):
            out.append(event)
            if limit is not None and len(out) >= limit:
                break
        return out

    def fresh(self, name: str, partitions: int | None = None) -> Settings:
        """Settings with their own topics (created) and groups for one measurement."""
        unique = f"{self.settings.kafka.topic_prefix}{name}-{uuid.uuid4().hex[:6]}."
        settings = self.settings.replace(
            topic_prefix=unique,
            interactions_partitions=partitions or self.sizes.worker_partitions,
            worker_app_id=f"moments-bench-{name}-{uuid.uuid4().hex[:6]}",
            worker_web_port=free_port(),
        )
        ensure_topics(settings)
        return settings

    def produce_raw(
        self, settings: Settings, topic: str, records: list[tuple[bytes, bytes]]
    ) -> float:
        """Produce pre-encoded (key, value) records as fast as librdkafka goes; return seconds."""
        producer = Producer(
            settings.kafka_config(
                **{
                    "partitioner": "murmur2_random",
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "enable.idempotence": True,
                    "acks": "all",
                    "queue.buffering.max.messages": 1_000_000,
                }
            )
        )
        with stopwatch() as elapsed:
            for key, value in records:
                while True:
                    try:
                        producer.produce(topic, value, key)
                        break
                    except BufferError:
                        producer.poll(0.05)
            left = producer.flush(60)
        if left:
            raise RuntimeError(f"{left} records not delivered to {topic}")
        return elapsed[0]

    def raw_consume(self, settings: Settings, topic: str, expected: int) -> float:
        """A bare confluent consume loop over `topic` until `expected` records; msgs/s."""
        consumer = Consumer(
            settings.kafka_config(
                **RAW_CONSUMER, **{"group.id": f"bench-raw-{uuid.uuid4().hex[:6]}"}
            )
        )
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        try:
            seen, first, end = _drain(consumer, expected, set())
        finally:
            consumer.close()
        if seen < expected or first is None:
            raise RuntimeError(f"raw consume saw {seen} of {expected} records of {topic}")
        return per_second(seen, end - first)

    def raw_consume_processes(
        self, settings: Settings, topic: str, expected: int, processes: int
    ) -> dict[str, Any]:
        """The bare consume loop of `raw_consume` in `processes` forked processes, each over
        its share of the partitions (as the backfill shares them), until every partition
        reported its end: msgs/s from the first record any took to the last, and per process."""
        import multiprocessing

        from processors.backfill import share_partitions

        consumer = Consumer(settings.kafka_config(**{"group.id": "bench-raw-ends"}))
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
        finally:
            consumer.close()  # before forking: no client crosses a fork
        shares = share_partitions(ends, processes)
        context = multiprocessing.get_context("fork")
        pipes = [context.Pipe(duplex=False) for _ in shares]
        children = [
            context.Process(
                target=_raw_consume_share, args=(settings, topic, share, sender), daemon=True
            )
            for share, (_, sender) in zip(shares, pipes, strict=True)
        ]
        for child in children:
            child.start()
        try:
            results = [receiver.recv() if receiver.poll(180) else None for receiver, _ in pipes]
        finally:
            for child in children:
                if child.is_alive():
                    child.terminate()
                child.join()
        done = [result for result in results if result is not None]
        if len(done) < len(results):
            raise RuntimeError(f"a raw consume process of {topic} gave no result")
        seen = sum(result[0] for result in done)
        if seen < expected:
            raise RuntimeError(f"raw consume saw {seen} of {expected} records of {topic}")
        seconds = max(result[2] for result in done) - min(result[1] for result in done)
        rate = per_second(seen, seconds)
        return {
            "processes": len(shares),
            "msgs_per_s": rate,
            "per_process_msgs_per_s": round(rate / len(shares), 1),
            "msgs_per_cpu_s": per_second(seen, sum(result[3] for result in done)),
        }

    def run_counting_child(
        self, code: str, settings: Settings, expected: int, name: str, env: dict[str, str]
    ) -> Samples:
        """Run CODE in a child that reads settings' `interactions` and writes its running
        count to a file (MOMENTS_BENCH_PROGRESS) until it reaches EXPECTED: its counts and
        CPU time as it went (`steady_rate`, `steady_cpu_rate`)."""
        import subprocess

        progress = self.work / f"{name}-{uuid.uuid4().hex[:6]}.txt"
        child_env = {
            **os.environ,
            **settings.as_env(),
            "MOMENTS_BENCH_TOPIC": settings.topics.interactions,
            "MOMENTS_BENCH_PROGRESS": str(progress),
            **env,
        }
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115
        child = subprocess.Popen(
            [sys.executable, "-c", code], env=child_env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        try:

            def counted() -> int:
                try:
                    return int((progress.read_text().split() or ["0"])[0])
                except (OSError, ValueError):
                    return 0

            samples = self.sample(
                counted, expected, None, child=child, name=name, pids=(child.pid,)
            )
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        return samples

    def sample(
        self,
        count: Callable[[], int],
        expected: int,
        supervisor: Supervisor | None,
        child: Any = None,
        timeout_s: float = 240.0,
        interval_s: float = 0.1,
        name: str = "the empty Faust agent",
        pids: Sequence[int] = (),
    ) -> Samples:
        """(time, count) every `interval_s` until `expected` is reached (bounded), with the
        CPU seconds the processes `pids` have used at each of those times."""
        samples = Samples([], [])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = count()
            samples.counts.append((time.perf_counter(), value))
            if pids:
                used = [process_cpu_seconds(pid) for pid in pids]
                samples.cpu.append(None if None in used else sum(u or 0.0 for u in used))
            if value >= expected:
                return samples
            if supervisor is not None:
                supervisor.check_alive()
            if child is not None and child.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.returncode}")
            time.sleep(interval_s)
        counted = samples.counts[-1][1] if samples.counts else 0
        raise TimeoutError(f"counted {counted} of {expected} events")


@dataclasses.dataclass(frozen=True, slots=True)
class Samples:
    """What `Bench.sample` saw: (time, count) pairs and, when it measured processes, the
    CPU seconds they had used at each of those times (None where one could not be read)."""

    counts: list[tuple[float, int]]
    cpu: list[float | None]


def steady_rate(samples: list[tuple[float, int]], expected: int) -> float:
    """Events/s between reaching 5% and 95% of `expected` (start-up and tail left out).

    The moment each level is reached is interpolated between the samples around it,
    so the rate does not depend on how often the count is sampled.
    """
    span = _steady_span(samples, expected)
    if span is None:
        return 0.0
    events, began, ended = span
    return per_second(events, ended - began)


def steady_cpu_rate(samples: Samples, expected: int) -> float | None:
    """Events per CPU second of the measured processes over the same span as `steady_rate`
    (5% to 95% of `expected`), their CPU time interpolated like the times; None when not
    measured. Less sensitive than events/s to what else the machine runs."""
    span = _steady_span(samples.counts, expected)
    cpu = samples.cpu
    if span is None or len(cpu) != len(samples.counts) or None in cpu:
        return None
    events, began, ended = span
    readings = [(t, c) for (t, _), c in zip(samples.counts, cast(list[float], cpu), strict=True)]
    used = _value_at(readings, ended) - _value_at(readings, began)
    return per_second(events, used) if used > 0 else None


def _steady_span(
    samples: list[tuple[float, int]], expected: int
) -> tuple[int, float, float] | None:
    """The steady part of a run: the events between 5% and 95% of `expected`, and the times
    those levels were reached; None when the samples do not reach both."""
    low, high = expected * 0.05, expected * 0.95
    began, ended = _reached(samples, low), _reached(samples, high)
    if began is None or ended is None:
        return None
    return round(high - low), began, ended


def _value_at(readings: list[tuple[float, float]], at: float) -> float:
    """A reading at time `at`, linearly interpolated between the readings around it."""
    before = readings[0]
    for t, value in readings:
        if t >= at:
            t0, v0 = before
            return value if t == t0 else v0 + (value - v0) * (at - t0) / (t - t0)
        before = (t, value)
    return before[1]


def _reached(samples: list[tuple[float, int]], level: float) -> float | None:
    """When the count reached `level`, linearly interpolated between two samples."""
    before: tuple[float, int] | None = None
    for t, n in samples:
        if n >= level:
            if before is None or n == before[1]:
                return t
            t0, n0 = before
            return t0 + (t - t0) * (level - n0) / (n - n0)
        before = (t, n)
    return None

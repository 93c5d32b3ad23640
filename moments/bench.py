"""The benchmark suite (`moments bench`): every stage's speed beside its reference, same run.

`run_bench` starts the embedded stack (or uses the broker and database the
settings point at) and measures, each figure next to what bounds it:

- codec: fastavro encode/decode vs the pure-Python `avro` package, same records, and
  moments' codec (generated, compiled when built) beside plain fastavro;
- publisher: the SDK (validation + Avro) vs raw confluent-kafka produce of the same bytes;
- engine: the full rule pack over a simulated population (events/s in replay, state
  bytes per active customer), and `replay_file` end to end (JSON in and out);
- backfill: `backfill_topic` vs a raw confluent consume loop over the same topic;
- PostgreSQL sink: `PostgresSink` add/flush vs a raw binary COPY of the same rows;
- live worker (`python -m moments worker` processes): end to end vs an empty Faust
  agent (`stream.take`) vs raw consume, 1 vs 2 workers on a 12-partition topic, and
  event -> action latency p50/p99 at a fixed offered load.

It writes a JSON report (top-level figures + details + targets), a markdown
table and a PNG chart. Timings depend on the machine and its load: nothing
here asserts a number; the report says which targets held. Topics get a
unique prefix per run, so production topics are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from moments.bench_replay import replay_vs_parse
from moments.calibration import calibration, calibration_line, python_loop_seconds, read_cpu_times
from moments.endpoints import plain_line
from moments.runtime import Supervisor
from moments.settings import Settings
from moments.stack import free_port, local_stack
from moments.topics import ensure_topics
from processors.backfill import backfill_topic
from processors.config import engine_config
from processors.engine import ENGINE_COMPILED, DictStore, Engine, load_rule_pack
from processors.replay import no_cyclic_gc, partition_for, replay_file
from producers.publisher import Publisher
from producers.simulator import write_simulation
from schemas.codec import AvroCodec, action_from_json, codec_for, read_events_jsonl
from schemas.records import ActionEvent, InteractionEvent

#: The figures every report has at its top level (the issue's list).
REQUIRED_KEYS: Final = (
    "worker_events_per_s",
    "empty_faust_events_per_s",
    "raw_consume_msgs_per_s",
    "backfill_events_per_s",
    "replay_events_per_s",
    "state_bytes_per_customer",
    "latency_p50_ms",
    "latency_p99_ms",
    "publisher_vs_raw_ratio",
    "sink_rows_per_s",
    "raw_copy_rows_per_s",
    "codec_fastavro_vs_avro_ratio",
    "two_workers_vs_one_ratio",
)


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
TARGETS: Final = (
    ("replay_events_per_s", ">=", 100_000, "engine replay, full pack, 100k customers"),
    ("state_bytes_per_customer", "<=", 2048, "engine state per active customer"),
    ("replay_vs_orjson_ratio", ">=", 0.4, "file replay / plain orjson.loads, same lines"),
    ("backfill_events_per_s", ">=", 100_000, "backfill per process"),
    ("backfill_vs_raw_ratio", ">=", 0.25, "backfill / raw consume, same topic"),
    ("publisher_vs_raw_ratio", ">=", 0.70, "publisher SDK / raw produce"),
    ("worker_vs_empty_faust_ratio", ">=", 0.70, "worker / empty Faust agent"),
    ("two_workers_vs_one_ratio", ">=", 1.5, "2 workers / 1 worker, 12 partitions"),
    ("latency_p99_ms", "<", 100, "event -> action p99 at 2k events/s"),
    ("sink_rows_per_s", ">=", 50_000, "PostgreSQL sink actions/s"),
)


def run_bench(
    settings: Settings,
    *,
    quick: bool,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
    chart_path: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the suite on the embedded stack; write the reports asked for; return the report."""
    console = console or Console(stderr=True)
    sizes = QUICK if quick else FULL
    began = time.perf_counter()
    report: dict[str, Any] = {key: None for key in REQUIRED_KEYS}
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="moments-bench-"))
    cpu_before = read_cpu_times()
    console.print("calibrating: a plain 10M-iteration Python loop")
    loop_s = python_loop_seconds()
    with local_stack(settings) as stack_settings:
        base = _with(
            stack_settings,
            topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
            broker_rebalance_timeout_s=3.0,
            broker_session_timeout_s=6.0,
        )
        bench = _Bench(base, sizes, work, details)
        sections: list[tuple[str, Callable[[], None]]] = [
            ("codec", bench.codec),
            ("engine", bench.engine),
            ("publisher", bench.publisher),
            ("backfill", bench.backfill),
            ("sink", bench.sink),
            ("worker", bench.worker),
            ("latency", bench.latency),
        ]
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("moments bench", total=len(sections))
            for name, section in sections:
                progress.update(task, description=f"moments bench: {name}")
                if hasattr(os, "getloadavg"):  # the box is shared: say how busy it was
                    details.setdefault("load_average_at_start", {})[name] = os.getloadavg()[0]
                try:
                    section()
                except Exception as exc:  # one broken section must not lose the others
                    errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    console.print(f"[red]{name}: {errors[name]}[/red]")
                progress.advance(task)
    report.update(bench.figures)
    report["calibration"] = calibration(loop_s, cpu_before, read_cpu_times())
    report["unmeasured"] = bench.unmeasured
    report["targets"] = _judge(report)
    report["details"] = details
    report["errors"] = errors
    report["quick"] = quick
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "engine_compiled": ENGINE_COMPILED,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    report["written"], report["not_written"] = [], {}
    if chart_path is not None:  # first: the JSON and markdown say whether it was written
        try:
            write_chart(report, chart_path)
            report["written"].append(str(chart_path))
        except ImportError as exc:
            report["not_written"][str(chart_path)] = (
                f"matplotlib is not installed ({exc}); it is in the bench extra: "
                "run `make bench` (or pip install -e '.[bench]')"
            )
    if json_path is not None:
        report["written"].insert(0, str(json_path))
    if markdown_path is not None:
        report["written"].insert(1 if json_path is not None else 0, str(markdown_path))
        markdown_path.write_text(markdown_table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return report


def print_summary(report: dict[str, Any], console: Console) -> None:
    """What the run wrote, what it did not and why, and the calibration (plain lines)."""
    entry = report.get("calibration") or {}
    plain_line(console, calibration_line(entry))
    if entry.get("warning"):
        plain_line(console, f"warning: {entry['warning']}", style="yellow")
    for figure, why in (report.get("unmeasured") or {}).items():
        plain_line(console, f"not measured: {figure}: {why}")
    plain_line(console, "reports: " + ", ".join(report.get("written") or ["none"]))
    for path, why in (report.get("not_written") or {}).items():
        plain_line(console, f"not written: {path}: {why}", style="yellow")


def _with(settings: Settings, **updates: Any) -> Settings:
    copy = settings.model_copy(update=updates)
    copy.__dict__.pop("topics", None)  # a cached_property copied from the original
    return copy


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


@contextlib.contextmanager
def _timer() -> Iterator[list[float]]:
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


class _Bench:
    """The sections of the suite; each fills `figures` (top level) and `details` (its own)."""

    def __init__(self, settings: Settings, sizes: Sizes, work: Path, details: dict[str, Any]):
        self.settings = settings
        self.sizes = sizes
        self.work = work
        self.details = details
        self.figures: dict[str, Any] = {}
        #: Figures left out on purpose (a missing optional package...): figure -> why.
        self.unmeasured: dict[str, str] = {}
        self._events_path: Path | None = None
        self._actions: list[ActionEvent] = []

    # -- shared inputs ----------------------------------------------------------------------

    def events_path(self) -> Path:
        """The simulated population as JSON lines (cached between runs in the data dir)."""
        if self._events_path is None:
            sizes = self.sizes
            cache = self.settings.data_dir / "bench"
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

    def _fresh(self, name: str, partitions: int | None = None) -> Settings:
        """Settings with their own topics (created) and groups for one measurement."""
        unique = f"{self.settings.topic_prefix}{name}-{uuid.uuid4().hex[:6]}."
        settings = _with(
            self.settings,
            topic_prefix=unique,
            interactions_partitions=partitions or self.sizes.worker_partitions,
            worker_app_id=f"moments-bench-{name}-{uuid.uuid4().hex[:6]}",
            worker_web_port=free_port(),
        )
        ensure_topics(settings)
        return settings

    def _produce_raw(
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
        with _timer() as elapsed:
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

    def _raw_consume(self, settings: Settings, topic: str, expected: int) -> float:
        """A bare confluent consume loop over `topic` until `expected` records; msgs/s."""
        consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_uncommitted",
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    "max.partition.fetch.bytes": 8 * 1024 * 1024,
                    "queued.max.messages.kbytes": 256 * 1024,
                    "fetch.wait.max.ms": 50,
                }
            )
        )
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen = 0
        first: float | None = None
        deadline = time.monotonic() + 120
        try:
            while seen < expected and time.monotonic() < deadline:
                batch = consumer.consume(10_000, 0.5)
                if batch and first is None:
                    first = time.perf_counter()
                for message in batch:
                    if message.error() is None:
                        seen += 1
            end = time.perf_counter()
        finally:
            consumer.close()
        if seen < expected or first is None:
            raise RuntimeError(f"raw consume saw {seen} of {expected} records of {topic}")
        return _rate(seen, end - first)

    # -- codec ------------------------------------------------------------------------------

    def codec(self) -> None:
        """fastavro vs the pure-Python `avro` package on the same records and schema, and
        moments' codec (generated readers/writers, compiled when built; fastavro for
        anything unusual) beside plain fastavro."""
        events = self.events(self.sizes.codec_records)
        codec = AvroCodec(InteractionEvent)
        with _timer() as t_enc:
            encoded = [codec.encode(e) for e in events]
        with _timer() as t_dec:
            for data in encoded:
                codec.decode(data)
        # the same physical schema every library here reads with (timestamps as int ms)
        schema_json = codec._read_schema_json
        parsed = parse_schema(schema_json)
        dicts = [codec.to_avro_dict(e) for e in events]
        bodies: list[bytes] = []
        with _timer() as f_enc:
            for record in dicts:
                buffer = io.BytesIO()
                schemaless_writer(buffer, parsed, record)
                bodies.append(buffer.getvalue())
        with _timer() as f_dec:
            for body in bodies:
                schemaless_reader(io.BytesIO(body), parsed, None)
        result: dict[str, Any] = {
            "records": len(events),
            "fastavro_encode_per_s": _rate(len(events), f_enc[0]),
            "fastavro_decode_per_s": _rate(len(events), f_dec[0]),
            "moments_codec_encode_per_s": _rate(len(events), t_enc[0]),
            "moments_codec_decode_per_s": _rate(len(events), t_dec[0]),
            "moments_codec_decode_vs_fastavro": round(f_dec[0] / t_dec[0], 2) if t_dec[0] else None,
        }
        try:
            import avro.io
            import avro.schema
        except ImportError:
            result["avro"] = "not installed: pip install 'moments[bench]'"
            why = "the pure-Python avro package is not installed (bench extra: make bench)"
            for key in ("avro_encode_per_s", "avro_decode_per_s"):
                self.unmeasured[f"details.codec.{key}"] = why
            self.unmeasured["codec_fastavro_vs_avro_ratio"] = why
        else:
            schema = avro.schema.parse(json.dumps(schema_json))
            writer, reader = avro.io.DatumWriter(schema), avro.io.DatumReader(schema)
            avro_bodies: list[bytes] = []
            with _timer() as a_enc:
                for record in dicts:
                    buffer = io.BytesIO()
                    writer.write(record, avro.io.BinaryEncoder(buffer))
                    avro_bodies.append(buffer.getvalue())
            with _timer() as a_dec:
                for body in avro_bodies:
                    reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))
            result["avro_encode_per_s"] = _rate(len(events), a_enc[0])
            result["avro_decode_per_s"] = _rate(len(events), a_dec[0])
            result["encode_ratio"] = round(a_enc[0] / f_enc[0], 1) if f_enc[0] else None
            result["decode_ratio"] = round(a_dec[0] / f_dec[0], 1) if f_dec[0] else None
            self.figures["codec_fastavro_vs_avro_ratio"] = result["decode_ratio"]
        self.details["codec"] = result

    # -- engine -----------------------------------------------------------------------------

    def engine(self) -> None:
        path = self.events_path()
        events = self.events()
        customers = len({e.customer_id for e in events})
        pack = load_rule_pack(self.settings.rules_path)
        config = engine_config(self.settings)
        result: dict[str, Any] = {"events": len(events), "customers": customers}
        for label, decisions in (("actions_only", False), ("with_decisions", True)):
            engine = Engine(pack, config, decisions=decisions)
            store = DictStore()
            process = engine.process
            actions = 0
            gc.collect()
            cpu = time.process_time()
            with no_cyclic_gc(), _timer() as elapsed:
                for event in events:
                    actions += len(process(store, event).actions)
            cpu = time.process_time() - cpu
            result[f"{label}_events_per_s"] = _rate(len(events), elapsed[0])
            # CPU time: what the figure would be on an otherwise idle core
            result[f"{label}_events_per_cpu_s"] = _rate(len(events), cpu)
            result["actions"] = actions
            result["decisions"] = engine.decided
        state_bytes = sum(
            len(json.dumps(value, separators=(",", ":"))) for value in store.data.values()
        )
        active = sum(1 for key in store.data if key.startswith("c:"))
        result["state_bytes_total"] = state_bytes
        result["active_customers"] = active
        del events, store
        gc.collect()
        actions_out = self.work / "replay-actions.jsonl"
        summary = replay_file(path, actions_out=actions_out, rules_path=self.settings.rules_path)
        result["replay_file_events_per_s"] = round(summary.events_per_second, 1)
        self._actions = []
        with open(actions_out, encoding="utf-8") as lines:
            for line in lines:
                self._actions.append(action_from_json(json.loads(line)))
                if len(self._actions) >= self.sizes.sink_rows:
                    break
        self.details["engine"] = result
        self.figures["replay_events_per_s"] = result["actions_only_events_per_s"]
        self.figures["replay_events_per_cpu_s"] = result["actions_only_events_per_cpu_s"]
        self.figures["replay_file_events_per_s"] = result["replay_file_events_per_s"]
        self.figures["state_bytes_per_customer"] = round(state_bytes / max(active, 1), 1)
        parse = replay_vs_parse(path, self.work, rules_path=self.settings.rules_path)
        self.details["replay_vs_parse"] = parse
        self.figures["replay_vs_orjson_ratio"] = parse["replay_vs_orjson_ratio"]

    # -- publisher --------------------------------------------------------------------------

    def publisher(self) -> None:
        settings = self._fresh("publisher", partitions=12)
        events = self.events(self.sizes.publisher_events)
        codec = codec_for(InteractionEvent, settings.schema_registry_url)
        records = [(e.customer_id.encode(), codec.encode(e)) for e in events]
        raw_topic = f"{settings.topic_prefix}raw"
        ensure_topics(_with(settings, topic_prefix=f"{settings.topic_prefix}raw-"))
        raw_seconds = self._produce_raw(settings, settings.topics.interactions, records)
        with Publisher(settings) as publisher, _timer() as elapsed:
            for event in events:
                publisher.publish(event)
            publisher.flush(60)
        sdk = _rate(len(events), elapsed[0])
        raw = _rate(len(records), raw_seconds)
        self.details["publisher"] = {
            "events": len(events),
            "sdk_events_per_s": sdk,
            "raw_produce_msgs_per_s": raw,
            "raw_topic": raw_topic,
        }
        self.figures["publisher_events_per_s"] = sdk
        self.figures["raw_produce_msgs_per_s"] = raw
        self.figures["publisher_vs_raw_ratio"] = round(sdk / raw, 3) if raw else None

    # -- backfill ---------------------------------------------------------------------------

    def backfill(self) -> None:
        settings = self._fresh("backfill", partitions=12)
        events = self.events()
        codec = codec_for(InteractionEvent, settings.schema_registry_url)
        records = [(e.customer_id.encode(), codec.encode(e)) for e in events]
        del events
        topic = settings.topics.interactions
        self._produce_raw(settings, topic, records)
        raw = self._raw_consume(settings, topic, len(records))
        cpu = time.process_time()
        summary = backfill_topic(settings, topic, actions_out=self.work / "backfill-actions.jsonl")
        cpu = time.process_time() - cpu
        if summary.events != len(records):
            raise RuntimeError(f"backfill read {summary.events} of {len(records)} events")
        self.details["backfill"] = {
            "events": summary.events,
            "actions": summary.actions,
            "garbage": summary.garbage,
            "partitions": summary.partitions,
            "seconds": round(summary.seconds, 2),
            "backfill_events_per_s": round(summary.events_per_second, 1),
            "backfill_events_per_cpu_s": _rate(summary.events, cpu),
            "raw_consume_msgs_per_s": raw,
        }
        self.figures["backfill_events_per_s"] = round(summary.events_per_second, 1)
        self.figures["raw_consume_msgs_per_s"] = raw
        self.figures["backfill_vs_raw_ratio"] = (
            round(summary.events_per_second / raw, 3) if raw else None
        )

    # -- PostgreSQL sink --------------------------------------------------------------------

    def sink(self) -> None:
        import psycopg

        from sinks.postgres import ACTIONS, PostgresSink, action_row

        if not self._actions:
            raise RuntimeError("no actions to write (the engine section did not run)")
        run = uuid.uuid4().hex[:8]
        actions = [
            dataclasses.replace(a, action_id=f"bench-{run}-{i}-{a.action_id}")
            for i, a in enumerate(self._actions)
        ]
        conninfo = self.settings.database_url
        assert conninfo is not None
        batch = self.settings.sink_batch_size
        with PostgresSink(conninfo) as sink:
            sink.connect()
            with _timer() as elapsed:
                for start in range(0, len(actions), batch):
                    for action in actions[start : start + batch]:
                        sink.add(action, topic="bench", partition=0, offset=start)
                    sink.flush()
        rows = [action_row(a, "bench", 0, i) for i, a in enumerate(actions)]
        table = f"bench_copy_{run}"
        columns = ", ".join(f"{c.name} {c.stage_type}" for c in ACTIONS.columns)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE UNLOGGED TABLE {table} ({columns})")
            try:
                with _timer() as copy_elapsed, conn.transaction(), conn.cursor() as cur:
                    for start in range(0, len(rows), batch):
                        with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                            copy.set_types(ACTIONS.copy_types)
                            for row in rows[start : start + batch]:
                                copy.write_row(row)
            finally:
                conn.execute(f"DROP TABLE {table}")
            conn.execute("DELETE FROM actions WHERE action_id LIKE %s", (f"bench-{run}-%",))
        sink_rate = _rate(len(actions), elapsed[0])
        copy_rate = _rate(len(rows), copy_elapsed[0])
        self.details["sink"] = {
            "rows": len(actions),
            "batch": batch,
            "sink_rows_per_s": sink_rate,
            "raw_copy_rows_per_s": copy_rate,
            "what": "PostgresSink add+flush (binary COPY into the tables, staging + insert on "
            "conflict only for redelivered keys, commit) "
            "vs one binary COPY of the same rows into an unlogged table",
        }
        self.figures["sink_rows_per_s"] = sink_rate
        self.figures["raw_copy_rows_per_s"] = copy_rate

    # -- live worker ------------------------------------------------------------------------

    def worker(self) -> None:
        events = self.events(self.sizes.worker_events)
        codec = codec_for(InteractionEvent, self.settings.schema_registry_url)
        records = [(e.customer_id.encode(), codec.encode(e)) for e in events]
        # Warm-up records are older than the population: they never move its watermark.
        warm_ms = min(e.occurred_at for e in events) - 86_400_000
        del events
        result: dict[str, Any] = {"events": len(records)}
        for workers in (1, 2):
            settings = self._fresh(f"w{workers}")
            rate, warm = self._run_workers(settings, workers, records, warm_ms)
            result[f"workers_{workers}_events_per_s"] = rate
            if workers == 1:  # the references read the topic the worker just read
                total = len(records) + warm
                topic = settings.topics.interactions
                result["raw_consume_msgs_per_s"] = self._raw_consume(settings, topic, total)
                result["empty_faust_events_per_s"] = self._run_empty_agent(settings, total)
                result["bytewax_events_per_s"] = self._run_peer(settings, total)
        one = result["workers_1_events_per_s"]
        self.details["worker"] = result
        self.figures["worker_events_per_s"] = one
        self.figures["empty_faust_events_per_s"] = result["empty_faust_events_per_s"]
        self.figures["worker_raw_consume_msgs_per_s"] = result["raw_consume_msgs_per_s"]
        empty = result["empty_faust_events_per_s"]
        self.figures["worker_vs_empty_faust_ratio"] = round(one / empty, 3) if empty else None
        two = result["workers_2_events_per_s"]
        self.figures["two_workers_vs_one_ratio"] = round(two / one, 3) if one else None
        peer = result["bytewax_events_per_s"]
        self.figures["bytewax_events_per_s"] = peer
        self.figures["worker_vs_bytewax_ratio"] = round(one / peer, 3) if peer else None

    def _run_peer(self, settings: Settings, expected: int) -> float | None:
        """Bytewax on the same topic (`moments.bench_peer`): fastavro decode and the
        omnichannel rule per customer. None, with the reason noted, where it cannot run."""
        from moments.bench_peer import peer_unavailable

        why = peer_unavailable()
        if why is not None:
            self.unmeasured["bytewax_events_per_s"] = why
            return None
        try:
            return self._run_counting_child(
                "from moments.bench_peer import run_peer; run_peer()",
                settings,
                expected,
                "bytewax-peer",
                {},
            )
        except Exception as exc:  # the peer must not cost the worker's figures
            self.unmeasured["bytewax_events_per_s"] = (
                f"the Bytewax peer failed: {type(exc).__name__}: {str(exc)[:200]} "
                f"(log: {self.work / 'bytewax-peer.log'})"
            )
            return None

    def _run_workers(
        self, settings: Settings, workers: int, records: list[tuple[bytes, bytes]], warm_ms: int
    ) -> tuple[float, int]:
        """Start worker processes, wait until every one holds partitions, then produce
        `records`: events/s over the middle 90% of them, and how many warm-up records
        were sent first.

        The group is complete before the clock runs, so no rebalance (a whole
        `broker_rebalance_timeout` on Tansu) falls inside the measurement.
        """
        ports = [free_port() for _ in range(workers)]
        topic = settings.topics.interactions
        with Supervisor(settings, self.work / "logs") as supervisor:
            for i, port in enumerate(ports):
                supervisor.spawn(
                    f"{settings.worker_app_id}-{i}",
                    "worker",
                    MOMENTS_METRICS_PORT=str(port),
                    MOMENTS_WORKER_WEB_PORT=str(free_port()),
                )
            warm = self._warm_up(settings, ports, supervisor, warm_ms)
            base = sum(_consumed(port) for port in ports)
            self._produce_raw(settings, topic, records)
            # Scraping /metrics costs the worker's event loop (the GIL) a few ms per scrape:
            # twice a second, not ten times (Prometheus scrapes every 15 s).
            samples = self._sample(
                lambda: sum(_consumed(port) for port in ports) - base,
                len(records),
                supervisor,
                interval_s=0.5,
            )
        return _steady_rate(samples, len(records)), warm

    def _warm_up(
        self, settings: Settings, ports: list[int], supervisor: Supervisor, warm_ms: int
    ) -> int:
        """One record per partition, again every half second, until every worker has
        consumed one (so each holds partitions); returns how many records were sent."""
        partitions = settings.interactions_partitions
        keys: dict[int, str] = {}
        n = 0
        while len(keys) < partitions:
            key = f"BENCH-WARM-{n}"
            keys.setdefault(partition_for(key, partitions), key)
            n += 1
        codec = codec_for(InteractionEvent, settings.schema_registry_url)
        sent = 0
        deadline = time.monotonic() + 120
        while True:
            warm = [
                (
                    key.encode(),
                    codec.encode(
                        InteractionEvent(
                            f"bench-warm-{sent + p}", key, "web", "inquiry", warm_ms, "bench"
                        )
                    ),
                )
                for p, key in sorted(keys.items())
            ]
            self._produce_raw(settings, settings.topics.interactions, warm)
            sent += len(warm)
            for _ in range(5):
                if all(_consumed(port) > 0 for port in ports):
                    return sent
                supervisor.check_alive()
                time.sleep(0.1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ports)} workers did not all get partitions in 120 s")

    def _run_empty_agent(self, settings: Settings, expected: int) -> float:
        """The same topic through a Faust agent that only counts (`stream.take`)."""
        return self._run_counting_child(
            "from moments.bench import empty_agent; empty_agent()",
            settings,
            expected,
            "empty-agent",
            {"MOMENTS_WORKER_APP_ID": f"{settings.worker_app_id}-empty"},
        )

    def _run_counting_child(
        self, code: str, settings: Settings, expected: int, name: str, env: dict[str, str]
    ) -> float:
        """Run CODE in a child that reads settings' `interactions` and writes its running
        count to a file (MOMENTS_BENCH_PROGRESS); its steady rate up to EXPECTED."""
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

            samples = self._sample(counted, expected, None, child=child, name=name)
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        return _steady_rate(samples, expected)

    def _sample(
        self,
        count: Callable[[], int],
        expected: int,
        supervisor: Supervisor | None,
        child: Any = None,
        timeout_s: float = 240.0,
        interval_s: float = 0.1,
        name: str = "the empty Faust agent",
    ) -> list[tuple[float, int]]:
        """(time, count) every `interval_s` until `expected` is reached (bounded)."""
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = count()
            samples.append((time.perf_counter(), value))
            if value >= expected:
                return samples
            if supervisor is not None:
                supervisor.check_alive()
            if child is not None and child.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.returncode}")
            time.sleep(interval_s)
        raise TimeoutError(f"counted {samples[-1][1] if samples else 0} of {expected} events")

    def latency(self) -> None:
        """Event -> action latency at a fixed offered load (feedback: one action per event)."""
        sizes = self.sizes
        settings = self._fresh("latency")
        codec = codec_for(InteractionEvent, settings.schema_registry_url)
        action_codec = codec_for(ActionEvent, settings.schema_registry_url)
        producer = Producer(
            settings.kafka_config(
                **{"partitioner": "murmur2_random", "linger.ms": 1, "enable.idempotence": True}
            )
        )
        topic = settings.topics.interactions
        sequence = iter(range(10**9))

        def send(count: int) -> None:
            now = int(time.time() * 1000)
            for _ in range(count):
                n = next(sequence)
                event = InteractionEvent(
                    f"lat-{n}", f"LAT-{n % 5000:05d}", "web", "feedback_given", now, "bench"
                )
                producer.produce(topic, codec.encode(event), event.customer_id.encode())
            producer.poll(0)

        latencies: list[float] = []
        received = [0]
        stop = threading.Event()
        consumer = Consumer(  # a short fetch wait: the instrument must not add latency
            settings.kafka_config(
                **{"group.id": f"bench-lat-{uuid.uuid4().hex[:6]}", "fetch.wait.max.ms": 5}
            )
        )
        feedback = settings.topics.action("feedback")
        parts = consumer.list_topics(feedback, timeout=10).topics[feedback].partitions
        consumer.assign([TopicPartition(feedback, p, OFFSET_BEGINNING) for p in parts])

        def collect() -> None:
            while not stop.is_set():
                # a batch consume waits its whole timeout unless full: keep it short, or the
                # instrument adds up to that much to every latency it measures
                for message in consumer.consume(1000, 0.002):
                    value = message.value()
                    if message.error() is not None or value is None:
                        continue
                    now = time.time() * 1000
                    action = action_codec.decode(value)
                    received[0] += 1
                    if not action.evidence[0].startswith("lat-w"):
                        latencies.append(now - action.triggered_at)

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        metrics_port = free_port()
        with Supervisor(settings, self.work / "logs") as supervisor:
            supervisor.spawn(
                f"{settings.worker_app_id}-lat",
                "worker",
                MOMENTS_METRICS_PORT=str(metrics_port),
                MOMENTS_WORKER_WEB_PORT=str(free_port()),
            )
            # Warm up: the worker must have joined and be emitting before the clock runs.
            deadline = time.monotonic() + 90
            warm = 0
            while received[0] == 0 and time.monotonic() < deadline:
                now = int(time.time() * 1000)
                for _ in range(20):
                    event = InteractionEvent(
                        f"lat-w{warm}", f"LAT-{warm % 5000:05d}", "web", "feedback_given", now, "b"
                    )
                    producer.produce(topic, codec.encode(event), event.customer_id.encode())
                    warm += 1
                producer.flush(5)
                supervisor.check_alive()
                time.sleep(0.5)
            if received[0] == 0:
                raise TimeoutError("the worker emitted nothing within 90 s")
            # The first seconds after the join still hold one-off start-up work (seen here:
            # one pause of ~150 ms about 1.5 s after the worker was ready, then none in
            # 8 s of steady load): the figure is the steady state at the offered load.
            time.sleep(SETTLE_S)
            tick = 0.01
            per_tick = max(1, round(sizes.offered_load * tick))
            sent = 0
            started = time.perf_counter()
            next_at = started
            while time.perf_counter() - started < sizes.latency_seconds:
                send(per_tick)
                sent += per_tick
                next_at += tick
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            producer.flush(10)
            offered_seconds = time.perf_counter() - started
            deadline = time.monotonic() + 30
            while len(latencies) < sent and time.monotonic() < deadline:
                time.sleep(0.1)
            # The worker's own share: event time -> handed to the producer (its histogram).
            worker_side = _worker_latency_share(metrics_port, "feedback")
        stop.set()
        reader.join(5)
        consumer.close()
        if not latencies:
            raise RuntimeError("no actions came back")
        ordered = sorted(latencies)
        p50 = ordered[len(ordered) // 2]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        self.details["latency"] = {
            "offered_events_per_s": _rate(sent, offered_seconds),
            "sent": sent,
            "actions_back": len(latencies),
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(ordered[-1], 1),
            "mean_ms": round(statistics.fmean(ordered), 1),
            "worker_side": worker_side,
        }
        self.figures["latency_p50_ms"] = round(p50, 1)
        self.figures["latency_p99_ms"] = round(p99, 1)


#: How long the latency section waits after the worker's first action before its clock runs.
SETTLE_S: Final = 4.0


def _worker_latency_share(port: int, destination: str) -> dict[str, float]:
    """Share of the worker's actions to `destination` emitted within each latency bucket
    (event time -> handed to the producer; the rest of the end-to-end latency is the
    output producer's linger, the broker and the reader)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    buckets: dict[str, float] = {}
    prefix = "moments_event_to_action_latency_seconds_bucket{"
    for line in text.splitlines():
        labels = f'destination="{destination}"' in line and 'trigger="event"' in line
        if line.startswith(prefix) and labels:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    total = buckets.get("+Inf", 0.0)
    if not total:
        return {}
    return {
        f"within_{float(le) * 1000:g}_ms": round(count / total, 4)
        for le, count in buckets.items()
        if le != "+Inf" and float(le) <= 0.5
    }


def _consumed(port: int) -> int:
    """moments_events_consumed_total summed over labels, from a worker's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
            text = reply.read().decode()
    except OSError:
        return 0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("moments_events_consumed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _steady_rate(samples: list[tuple[float, int]], expected: int) -> float:
    """Events/s between reaching 5% and 95% of `expected` (start-up and tail left out).

    The moment each level is reached is interpolated between the samples around it,
    so the rate does not depend on how often the count is sampled.
    """
    low, high = expected * 0.05, expected * 0.95
    t_low, t_high = _reached(samples, low), _reached(samples, high)
    if t_low is None or t_high is None:
        return 0.0
    return _rate(round(high - low), t_high - t_low)


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


def empty_agent() -> None:
    """A Faust app whose agent only counts records (`stream.take`): the ceiling of Faust itself.

    It runs on what the worker runs on (uvloop, `WorkerConsumer`: the same drain loop and
    fetch wait), so the ratio compares the worker's own work, not two Faust setups.
    Run in a child process by the bench; reads the topic from MOMENTS_BENCH_TOPIC and
    writes its running count to MOMENTS_BENCH_PROGRESS.
    """
    import faust

    from processors.faust_host import WorkerConsumer
    from processors.worker import broker_urls, use_fast_event_loop

    settings = Settings()
    assert settings.bootstrap is not None
    use_fast_event_loop()  # as the worker does: the same event loop on both sides
    topic_name = os.environ["MOMENTS_BENCH_TOPIC"]
    progress = Path(os.environ["MOMENTS_BENCH_PROGRESS"])
    app = faust.App(
        settings.worker_app_id,
        broker=broker_urls(settings.bootstrap),
        store="memory://",
        datadir=str(progress.parent / "empty-agent-data"),  # not the current directory
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        web_port=settings.worker_web_port,
        autodiscover=False,
        topic_partitions=settings.interactions_partitions,
    )
    app.transport.Consumer = WorkerConsumer  # type: ignore[misc]  # fresh group: from the start
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    counted = [0]

    @app.agent(topic)  # type: ignore[misc]
    async def count(stream: Any) -> None:
        async for batch in stream.take(5000, within=0.05):
            counted[0] += len(batch)
            progress.write_text(str(counted[0]))

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


# -- reports -------------------------------------------------------------------------------


def _judge(report: dict[str, Any]) -> list[dict[str, Any]]:
    judged = []
    for key, op, threshold, what in TARGETS:
        value = report.get(key)
        holds = None
        if isinstance(value, int | float):
            holds = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]
        judged.append(
            {
                "figure": key,
                "target": f"{op} {threshold}",
                "value": value,
                "holds": holds,
                "what": what,
            }
        )
    return judged


_ROWS: Final = (
    (
        "fastavro decode (records/s)",
        "details.codec.fastavro_decode_per_s",
        "details.codec.avro_decode_per_s",
        "fastavro vs pure-Python avro",
    ),
    (
        "fastavro encode (records/s)",
        "details.codec.fastavro_encode_per_s",
        "details.codec.avro_encode_per_s",
        "fastavro vs pure-Python avro",
    ),
    (
        "moments codec decode (records/s)",
        "details.codec.moments_codec_decode_per_s",
        "details.codec.fastavro_decode_per_s",
        "plain fastavro schemaless_reader",
    ),
    (
        "publisher SDK (events/s)",
        "publisher_events_per_s",
        "raw_produce_msgs_per_s",
        "raw confluent produce, same bytes",
    ),
    ("engine replay (events/s)", "replay_events_per_s", None, "full pack, simulated population"),
    ("engine replay (events per CPU s)", "replay_events_per_cpu_s", None, "same, CPU time"),
    (
        "replay_file end to end (events/s)",
        "replay_file_events_per_s",
        "replay_events_per_s",
        "engine alone",
    ),
    (
        "file replay (lines/s)",
        "details.replay_vs_parse.replay_lines_per_s",
        "details.replay_vs_parse.orjson_lines_per_s",
        "plain orjson.loads of the same lines, same run",
    ),
    (
        "state per active customer (bytes)",
        "state_bytes_per_customer",
        None,
        "JSON size of the store / customers",
    ),
    (
        "backfill (events/s)",
        "backfill_events_per_s",
        "raw_consume_msgs_per_s",
        "raw confluent consume, same topic",
    ),
    (
        "worker, 1 process (events/s)",
        "worker_events_per_s",
        "empty_faust_events_per_s",
        "empty Faust agent, same topic",
    ),
    (
        "worker, 1 process (events/s)  ",
        "worker_events_per_s",
        "bytewax_events_per_s",
        "Bytewax 1 worker, same topic: fastavro decode + omnichannel rule per customer",
    ),
    (
        "worker, 1 process (events/s) ",
        "worker_events_per_s",
        "worker_raw_consume_msgs_per_s",
        "raw consume, same topic",
    ),
    ("2 workers / 1 worker", "two_workers_vs_one_ratio", None, "12 partitions"),
    ("latency p50 (ms)", "latency_p50_ms", None, "event -> action at 2k events/s"),
    ("latency p99 (ms)", "latency_p99_ms", None, "event -> action at 2k events/s"),
    (
        "PostgreSQL sink (actions/s)",
        "sink_rows_per_s",
        "raw_copy_rows_per_s",
        "raw binary COPY, same rows",
    ),
)


def _lookup(report: dict[str, Any], path: str | None) -> Any:
    if path is None:
        return None
    node: Any = report
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.2f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}"
    return str(value)


def _engine_kind(report: dict[str, Any]) -> str:
    compiled = (report.get("machine") or {}).get("engine_compiled")
    if compiled is None:
        return "not recorded"
    return "compiled with mypyc" if compiled else "pure Python (no compiled module, or a stale one)"


def markdown_table(report: dict[str, Any]) -> str:
    """The report as markdown: each figure beside its reference, then the targets."""
    calibration_entry = report.get("calibration") or {}
    lines = [
        f"# moments bench ({'quick' if report.get('quick') else 'full'}, "
        f"{report.get('seconds')} s)",
        "",
        f"Engine core: {_engine_kind(report)}.",
        "",
        calibration_line(calibration_entry),
    ]
    if calibration_entry.get("warning"):
        lines += ["", f"**Warning:** {calibration_entry['warning']}."]
    lines += [
        "",
        "| figure | value | reference | value / reference | reference is |",
        "|---|---:|---:|---:|---|",
    ]
    unmeasured: dict[str, str] = report.get("unmeasured") or {}
    notes: list[str] = []  # why a cell shows "-", numbered in the order they appear

    def cell(key: str | None, value: Any) -> str:
        if value is not None or key is None:
            return _fmt(value)
        key_short = key.removeprefix("details.")
        why = unmeasured.get(key) or (
            "its section failed (below)" if report.get("errors") else "not measured"
        )
        note = f"{key_short}: {why}"
        if note not in notes:
            notes.append(note)
        return f"- [{notes.index(note) + 1}]"

    for label, key, ref_key, what in _ROWS:
        value, ref = _lookup(report, key), _lookup(report, ref_key)
        ratio = (
            f"{value / ref:.2f}"
            if isinstance(value, int | float) and isinstance(ref, int | float) and ref
            else "-"
        )
        lines.append(
            f"| {label.strip()} | {cell(key, value)} | {cell(ref_key, ref)} | {ratio} | {what} |"
        )
    if notes:
        lines += ["", "Cells marked - were not measured:", ""]
        lines += [f"{n}. {note}" for n, note in enumerate(notes, 1)]
    lines += ["", "| target | value | holds |", "|---|---:|---|"]
    for target in report.get("targets", []):
        holds = {True: "yes", False: "**no**", None: "not measured"}[target["holds"]]
        lines.append(f"| {target['what']} {target['target']} | {_fmt(target['value'])} | {holds} |")
    if report.get("errors"):
        lines += ["", "Sections that failed:", ""]
        lines += [f"- {name}: {error}" for name, error in report["errors"].items()]
    if report.get("not_written"):
        lines += ["", "Not written:", ""]
        lines += [f"- {path}: {why}" for path, why in report["not_written"].items()]
    return "\n".join(lines) + "\n"


def write_chart(report: dict[str, Any], path: Path) -> None:
    """A PNG: each throughput figure beside its reference (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for label, key, ref_key, _ in _ROWS:
        value, ref = _lookup(report, key), _lookup(report, ref_key)
        if "/s" in label and isinstance(value, int | float) and value > 0:
            rows.append(
                (label.strip(), float(value), float(ref) if isinstance(ref, int | float) else 0.0)
            )
    fig, ax = plt.subplots(figsize=(10, 0.6 * max(len(rows), 1) + 1.5))
    positions = range(len(rows))
    ax.barh([p + 0.2 for p in positions], [r[1] for r in rows], height=0.4, label="measured")
    ax.barh(
        [p - 0.2 for p in positions], [r[2] for r in rows], height=0.4, label="reference", alpha=0.6
    )
    ax.set_yticks(list(positions), [r[0] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("per second (log scale)")
    ax.set_title("moments bench: each figure beside its reference")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _main() -> None:  # pragma: no cover - manual runs: python -m moments.bench [--full]
    report = run_bench(
        Settings(),
        quick="--full" not in sys.argv,
        json_path=Path("bench.json"),
        markdown_path=Path("bench.md"),
        chart_path=Path("bench.png"),
    )
    print(markdown_table(report))


if __name__ == "__main__":  # pragma: no cover
    _main()

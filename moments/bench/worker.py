"""The live worker sections: `python -m moments worker` processes end to end (1 and 2 on a
12-partition topic, beside the peers on the same topic) and event -> action latency at a
fixed offered load."""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
import uuid
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from common.settings import Settings
from moments.bench.context import Bench, per_second, steady_cpu_rate, steady_rate
from moments.bench.peers import run_bytewax_peers, run_empty_agent
from moments.runtime import Supervisor
from moments.stack import free_port
from processors.offline import partition_for
from schemas.codec import codec_for
from schemas.records import ActionEvent, InteractionEvent


def worker(bench: Bench) -> None:
    events = bench.events(bench.sizes.worker_events)
    codec = codec_for(InteractionEvent, bench.settings.kafka.schema_registry_url)
    records = [(e.customer_id.encode(), codec.encode(e)) for e in events]
    # Warm-up records are older than the population: they never move its watermark.
    warm_ms = min(e.occurred_at for e in events) - 86_400_000
    del events
    result: dict[str, Any] = {"events": len(records)}
    for workers in (1, 2):
        settings = bench.fresh(f"w{workers}")
        rate, cpu_rate, warm = _run_workers(bench, settings, workers, records, warm_ms)
        result[f"workers_{workers}_events_per_s"] = rate
        result[f"workers_{workers}_events_per_cpu_s"] = cpu_rate
        if workers == 1:  # the references read the topic the worker just read
            total = len(records) + warm
            topic = settings.topics.interactions
            # the peers first: they never raise, so a failing reference cannot lose them
            result.update(run_bytewax_peers(bench, settings, total))
            result["raw_consume_msgs_per_s"] = bench.raw_consume(settings, topic, total)
            (
                result["empty_faust_events_per_s"],
                result["empty_faust_events_per_cpu_s"],
            ) = run_empty_agent(bench, settings, total)
    # The same comparison in CPU time of each process (less sensitive to what else runs)
    worker_cpu, empty_cpu = (
        result["workers_1_events_per_cpu_s"],
        result["empty_faust_events_per_cpu_s"],
    )
    result["worker_vs_empty_faust_cpu_ratio"] = (
        round(worker_cpu / empty_cpu, 3) if worker_cpu and empty_cpu else None
    )
    one = result["workers_1_events_per_s"]
    bench.details["worker"] = result
    bench.figures["worker_events_per_s"] = one
    bench.figures["empty_faust_events_per_s"] = result["empty_faust_events_per_s"]
    bench.figures["worker_raw_consume_msgs_per_s"] = result["raw_consume_msgs_per_s"]
    empty = result["empty_faust_events_per_s"]
    bench.figures["worker_vs_empty_faust_ratio"] = round(one / empty, 3) if empty else None
    two = result["workers_2_events_per_s"]
    bench.figures["two_workers_vs_one_ratio"] = round(two / one, 3) if one else None
    for peer, ratio in (
        ("bytewax_events_per_s", "worker_vs_bytewax_ratio"),
        ("bytewax_engine_events_per_s", "worker_vs_bytewax_engine_ratio"),
    ):
        rate = result[peer]
        bench.figures[peer] = rate
        bench.figures[ratio] = round(one / rate, 3) if rate else None


def _run_workers(
    bench: Bench, settings: Settings, workers: int, records: list[tuple[bytes, bytes]], warm_ms: int
) -> tuple[float, float | None, int]:
    """Start worker processes, wait until every one holds partitions, then produce
    `records`: events/s over the middle 90% of them, events per CPU second of the worker
    processes over the same span, and how many warm-up records were sent first.

    The group is complete before the clock runs, so no rebalance (a whole
    `broker_rebalance_timeout` on Tansu) falls inside the measurement.
    """
    ports = [free_port() for _ in range(workers)]
    topic = settings.topics.interactions
    with Supervisor(settings, bench.work / "logs") as supervisor:
        for i, port in enumerate(ports):
            supervisor.spawn(
                f"{settings.worker.worker_app_id}-{i}",
                "worker",
                MOMENTS_METRICS_PORT=str(port),
                MOMENTS_WORKER_WEB_PORT=str(free_port()),
            )
        warm = _warm_up(bench, settings, ports, supervisor, warm_ms)
        base = sum(_consumed(port) for port in ports)
        bench.produce_raw(settings, topic, records)
        # Scraping /metrics costs the worker's event loop (the GIL) a few ms per scrape:
        # twice a second, not ten times (Prometheus scrapes every 15 s).
        samples = bench.sample(
            lambda: sum(_consumed(port) for port in ports) - base,
            len(records),
            supervisor,
            interval_s=0.5,
            pids=[child.pid for child in supervisor.children.values()],
        )
    return (
        steady_rate(samples.counts, len(records)),
        steady_cpu_rate(samples, len(records)),
        warm,
    )


def _warm_up(
    bench: Bench, settings: Settings, ports: list[int], supervisor: Supervisor, warm_ms: int
) -> int:
    """One record per partition, again every half second, until every worker has
    consumed one (so each holds partitions); returns how many records were sent."""
    partitions = settings.kafka.interactions_partitions
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"BENCH-WARM-{n}"
        keys.setdefault(partition_for(key, partitions), key)
        n += 1
    codec = codec_for(InteractionEvent, settings.kafka.schema_registry_url)
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
        bench.produce_raw(settings, settings.topics.interactions, warm)
        sent += len(warm)
        for _ in range(5):
            if all(_consumed(port) > 0 for port in ports):
                return sent
            supervisor.check_alive()
            time.sleep(0.1)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ports)} workers did not all get partitions in 120 s")


def latency(bench: Bench) -> None:
    """Event -> action latency at a fixed offered load (feedback: one action per event)."""
    sizes = bench.sizes
    settings = bench.fresh("latency")
    codec = codec_for(InteractionEvent, settings.kafka.schema_registry_url)
    action_codec = codec_for(ActionEvent, settings.kafka.schema_registry_url)
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
    with Supervisor(settings, bench.work / "logs") as supervisor:
        supervisor.spawn(
            f"{settings.worker.worker_app_id}-lat",
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
    bench.details["latency"] = {
        "offered_events_per_s": per_second(sent, offered_seconds),
        "sent": sent,
        "actions_back": len(latencies),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
        "worker_side": worker_side,
    }
    bench.figures["latency_p50_ms"] = round(p50, 1)
    bench.figures["latency_p99_ms"] = round(p99, 1)


#: How long the latency section waits after the worker's first action before its clock runs.
SETTLE_S: Final = 4.0


def _worker_latency_share(port: int, destination: str) -> dict[str, float]:
    """Share of the worker's actions to `destination` emitted within each latency bucket
    (event time -> handed to the producer; the rest of the end-to-end latency is the
    output producer's linger, the broker and the reader)."""
    text = _metrics_text(port, timeout_s=2.0)
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


def _metrics_text(port: int, timeout_s: float) -> str:
    """A worker's /metrics page; empty when it does not answer (not up yet, or gone)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def _consumed(port: int) -> int:
    """moments_events_consumed_total summed over labels, from a worker's /metrics."""
    total = 0.0
    for line in _metrics_text(port, timeout_s=1.0).splitlines():
        if line.startswith("moments_events_consumed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)

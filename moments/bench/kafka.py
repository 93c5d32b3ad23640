"""Sections through the broker: the publisher SDK beside raw produce, the backfill beside a
raw consume of the same topic."""

from __future__ import annotations

import resource
import time
from typing import Any

from common.settings import Settings
from common.topics import ensure_topics
from moments.bench.context import Bench, per_second, stopwatch
from processors.backfill import backfill_topic
from producers.publisher import Publisher
from schemas.codec import codec_for
from schemas.records import InteractionEvent


def publisher(bench: Bench) -> None:
    settings = bench.fresh("publisher", partitions=12)
    events = bench.events(bench.sizes.publisher_events)
    codec = codec_for(InteractionEvent, settings.kafka.schema_registry_url)
    records = [(e.customer_id.encode(), codec.encode(e)) for e in events]
    raw_topic = f"{settings.kafka.topic_prefix}raw"
    ensure_topics(settings.replace(topic_prefix=f"{settings.kafka.topic_prefix}raw-"))
    raw_seconds = bench.produce_raw(settings, settings.topics.interactions, records)
    with Publisher(settings) as publisher, stopwatch() as elapsed:
        for event in events:
            publisher.publish(event)
        publisher.flush(60)
    sdk = per_second(len(events), elapsed[0])
    raw = per_second(len(records), raw_seconds)
    bench.details["publisher"] = {
        "events": len(events),
        "sdk_events_per_s": sdk,
        "raw_produce_msgs_per_s": raw,
        "raw_topic": raw_topic,
    }
    bench.figures["publisher_events_per_s"] = sdk
    bench.figures["raw_produce_msgs_per_s"] = raw
    bench.figures["publisher_vs_raw_ratio"] = round(sdk / raw, 3) if raw else None


def backfill(bench: Bench) -> None:
    """The backfill beside a raw consume of the same 12-partition topic, both per process:
    each side with one process per usable CPU (at most the partitions), events (records)
    over wall time and processes; one process each beside it."""
    settings = bench.fresh("backfill", partitions=12)
    events = bench.events()
    codec = codec_for(InteractionEvent, settings.kafka.schema_registry_url)
    records = [(e.customer_id.encode(), codec.encode(e)) for e in events]
    del events
    topic = settings.topics.interactions
    bench.produce_raw(settings, topic, records)
    raw = bench.raw_consume(settings, topic, len(records))
    one = _backfill_once(bench, settings, topic, len(records), processes=1)
    shared = _backfill_once(bench, settings, topic, len(records), processes=0)
    processes = shared["processes"]
    raw_shared = bench.raw_consume_processes(settings, topic, len(records), processes)
    per_process = shared["events_per_s_per_process"]
    raw_per_process = raw_shared["per_process_msgs_per_s"]
    ratio = round(per_process / raw_per_process, 3) if raw_per_process else None
    bench.details["backfill"] = {
        "events": len(records),
        "partitions": 12,
        "backfill": shared,
        "backfill_one_process": one,
        "raw_consume": raw_shared,
        "raw_consume_one_process_msgs_per_s": raw,
        "one_process_ratio": round(one["events_per_s_per_process"] / raw, 3) if raw else None,
        # independent of how busy the machine was: records per CPU-second, each side
        "cpu_ratio": round(shared["events_per_cpu_s"] / raw_shared["msgs_per_cpu_s"], 3)
        if raw_shared["msgs_per_cpu_s"]
        else None,
        "per_process": (
            f"backfill {processes} processes, raw consume {raw_shared['processes']} processes: "
            "events / (wall seconds x processes); the backfill's wall includes its start "
            "(rule pack, erasure registry) and the merge of its output files, raw consume's "
            "runs from its first record to its last"
        ),
    }
    bench.figures["backfill_events_per_s"] = per_process
    bench.figures["backfill_processes"] = processes
    bench.figures["backfill_wall_events_per_s"] = shared["events_per_s"]
    # per process, as the backfill figure beside it in the report
    bench.figures["raw_consume_msgs_per_s"] = raw_per_process
    bench.figures["raw_consume_one_process_msgs_per_s"] = raw
    bench.figures["backfill_vs_raw_ratio"] = ratio


def _backfill_once(
    bench: Bench, settings: Settings, topic: str, expected: int, *, processes: int
) -> dict[str, Any]:
    """One backfill of `topic` to a file with `processes` (0: the default count)."""
    cpu = _cpu_seconds()
    summary = backfill_topic(
        settings,
        topic,
        actions_out=bench.work / f"backfill-actions-{processes}.jsonl",
        processes=processes,
    )
    cpu = _cpu_seconds() - cpu
    # every record is an event applied or one too late to apply (the population has late ones)
    read = summary.events + summary.too_late + summary.garbage + summary.erased
    if read != expected:
        raise RuntimeError(f"backfill read {read} of {expected} records")
    return {
        "processes": summary.processes,
        "actions": summary.actions,
        "too_late": summary.too_late,
        "garbage": summary.garbage,
        "seconds": round(summary.seconds, 2),
        "events_per_s": round(summary.events_per_second, 1),
        "events_per_s_per_process": round(summary.events_per_second_per_process, 1),
        "events_per_cpu_s": per_second(summary.events, cpu),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the backfill's forked ones)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime

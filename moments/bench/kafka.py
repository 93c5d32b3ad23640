"""Sections through the broker: the publisher SDK beside raw produce, the backfill beside a
raw consume of the same topic."""

from __future__ import annotations

import time

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
    settings = bench.fresh("backfill", partitions=12)
    events = bench.events()
    codec = codec_for(InteractionEvent, settings.kafka.schema_registry_url)
    records = [(e.customer_id.encode(), codec.encode(e)) for e in events]
    del events
    topic = settings.topics.interactions
    bench.produce_raw(settings, topic, records)
    raw = bench.raw_consume(settings, topic, len(records))
    cpu = time.process_time()
    summary = backfill_topic(settings, topic, actions_out=bench.work / "backfill-actions.jsonl")
    cpu = time.process_time() - cpu
    if summary.events != len(records):
        raise RuntimeError(f"backfill read {summary.events} of {len(records)} events")
    bench.details["backfill"] = {
        "events": summary.events,
        "actions": summary.actions,
        "garbage": summary.garbage,
        "partitions": summary.partitions,
        "seconds": round(summary.seconds, 2),
        "backfill_events_per_s": round(summary.events_per_second, 1),
        "backfill_events_per_cpu_s": per_second(summary.events, cpu),
        "raw_consume_msgs_per_s": raw,
    }
    bench.figures["backfill_events_per_s"] = round(summary.events_per_second, 1)
    bench.figures["raw_consume_msgs_per_s"] = raw
    bench.figures["backfill_vs_raw_ratio"] = (
        round(summary.events_per_second / raw, 3) if raw else None
    )

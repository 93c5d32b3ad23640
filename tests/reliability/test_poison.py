"""Poison input: 1% garbage among good events never stops the worker and never gets lost.

Among a simulated population's events, 1% are poison, of every kind the
worker must dead-letter: random bytes, the wrong schema (an action where an
event belongs, and a single-object header with an unknown fingerprint), an
event without a customer id, an event larger than `max_event_bytes` (but
within the broker's limit), and tombstones. The worker and the PostgreSQL
sink run as child processes. Then:

- `interactions.dlq` holds exactly the injected records: its distinct source
  offsets (headers `moments.error.topic/partition/offset`) equal the poison's
  offsets (redelivery may repeat a dead letter, never add another);
- every dead letter carries all `moments.error.*` headers;
- every good event is processed: the worker counts each one once
  (`moments_events_consumed_total`), the sink stores each one, and actions,
  decisions and the final engine state equal the oracle over the good events;
- the worker never crashed, and its metric labels stay within bounded sets.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from common.settings import Settings
from producers.simulator import simulate
from schemas.codec import codec_for
from schemas.records import ActionEvent, InteractionEvent
from tests.reliability.harness import (
    SOAK_MARKS,
    Figures,
    PacedProducer,
    db_count,
    process_settings,
    scrape,
)
from tests.reliability.pipeline import Pipeline, expected_outputs, state_differences
from tests.reliability.security import metric_label_problems, metric_total
from tests.reliability.verifier import (
    dlq_sources,
    event_rows,
    order_violations,
    verify,
    wire_records,
)
from tests.support.kafka import read_topic
from tests.support.worker_state import read_worker_state

POISON_KINDS = ("bytes", "schema", "fingerprint", "no_customer", "oversized", "tombstone")


def poison(kind: str, rng: random.Random, template: InteractionEvent, limit: int) -> bytes | None:
    """One poison record's value (None: a tombstone)."""
    codec = codec_for(InteractionEvent)
    if kind == "bytes":
        return rng.randbytes(rng.randint(1, 200))
    if kind == "schema":
        action = ActionEvent(
            action_id="a", customer_id=template.customer_id, rule="r", action="a",
            rule_version=1, destination="care", priority=1, reason="r", evidence=[],
            channel_hint="call", triggered_at=template.occurred_at,
        )  # fmt: skip
        return codec_for(ActionEvent).encode(action)
    if kind == "fingerprint":
        return b"\xc3\x01" + rng.randbytes(8) + codec.encode(template)[10:]
    if kind == "no_customer":
        return codec.encode(replace(template, customer_id=""), validate=False)
    if kind == "oversized":
        return codec.encode(replace(template, text="x" * (limit + rng.randint(1, 50_000))))
    return None


@dataclass(frozen=True)
class Scenario:
    customers: int
    days: int


SHORT = Scenario(customers=800, days=40)  # about 3 900 events, 39 poison
SOAK = Scenario(customers=4000, days=120)  # about 55 000 events, 550 poison


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(SHORT, id="short"), pytest.param(SOAK, id="soak", marks=SOAK_MARKS)],
)
def test_one_percent_poison_is_dead_lettered_exactly_and_good_events_all_processed(
    scenario: Scenario, settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    rng = random.Random(7)
    settings = process_settings(settings, tmp_path, database_url=database)
    good = list(simulate(scenario.customers, scenario.days, seed=3))
    # Free text in an event type must not become a metric label ("other").
    for index in range(0, len(good), 997):
        good[index] = replace(good[index], type=f"note from {good[index].customer_id}: call me")
    topic = settings.topics.interactions
    records = wire_records(settings, good)
    injected = max(len(POISON_KINDS), len(good) // 99)  # 1% of everything
    kinds: Counter[str] = Counter()
    for n in range(injected):
        kind = POISON_KINDS[n % len(POISON_KINDS)]
        kinds[kind] += 1
        template = rng.choice(good)
        value = poison(kind, rng, template, settings.engine.max_event_bytes)
        position = rng.randrange(len(records) + 1)
        records.insert(position, (topic, template.customer_id.encode(), value, f"poison:{n}"))  # type: ignore[arg-type]
    figures.update(events=len(good), **{"poison injected": injected})

    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start_sink()
        pipeline.start_worker()
        producer = PacedProducer(settings, records, rate=2000, compression="lz4").start()
        producer.join()
        ends = {p: o for (_, p), o in producer.ends.items()}
        pipeline.wait_worker_past(ends, timeout_s=max(180, len(records) / 200))
        worker_metrics = scrape(pipeline.fleet.metrics_port["worker"])
        pipeline.fleet.stop("worker")
        final = read_worker_state(settings)
        expected = expected_outputs(settings, good, final)
        pipeline.wait_rows(database, len(expected.actions), expected.decisions_count, 120)
        pipeline.fleet.stop("sink")
        crashes = pipeline.fleet.crashes()
        logs = pipeline.fleet.logs()
    finally:
        pipeline.close()

    poisoned = {
        (topic, partition, offset)
        for (_, partition, offset), key in producer.placed.items()
        if key.startswith("poison:")
    }
    letters = dlq_sources(read_topic(settings, [settings.topics.interactions_dlq]))
    verdict = verify(expected.actions, expected.decisions, database)
    state_problems = state_differences(expected.state, final.engine)
    order = order_violations(expected.in_order, read_topic(settings, [settings.topics.decisions]))
    consumed = metric_total(worker_metrics, "moments_events_consumed_total")
    stored_events = db_count(database, "SELECT count(*) FROM interaction_events")
    label_problems = metric_label_problems(worker_metrics, settings)
    agent_crashes = logs.count("Traceback") + logs.count("crashed")
    figures.update(
        **{f"poison {kind}": n for kind, n in sorted(kinds.items())},
        **{"DLQ expected (poison injected)": injected},
        **{"DLQ got (distinct source offsets)": len(letters.sources)},
        **{"DLQ records (with repeats)": letters.records},
        **{f"DLQ stage {stage}": n for stage, n in sorted(letters.stages.items())},
        **{"DLQ records missing headers": len(letters.missing_headers)},
        **{"events consumed (worker metric)": int(consumed), "events stored": stored_events},
        **verdict.figures(),
        **{
            "worker crashes": len(crashes) + agent_crashes,
            "metric label problems": len(label_problems),
        },
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert not crashes and not agent_crashes, crashes or logs[-3000:]
    assert not letters.missing_headers, letters.missing_headers[:5]
    assert letters.sources == poisoned, (
        f"dead letters for offsets never poisoned: {sorted(letters.sources - poisoned)[:10]}; "
        f"poison without a dead letter: {sorted(poisoned - letters.sources)[:10]}"
    )
    assert consumed == len(good)
    assert verdict.ok, verdict.summary()
    assert not state_problems, state_problems[:10]
    assert not order, order[:10]
    # The sink stores every good event; the oversized ones are dead-lettered by the worker only.
    assert stored_events >= event_rows(good)
    assert not label_problems, label_problems[:10]

"""Records no producer should send, sent straight to the topics: nothing stops, nothing is lost.

- A 3 KB customer_id (random text, so PostgreSQL cannot even compress it into an index
  row: SQLSTATE 54000) produced to `interactions` and to an action topic among good
  records. The worker dead-letters the events (identifiers hold at most 256 characters),
  the PostgreSQL sink splits the batch and dead-letters the one action the database
  refuses, and both go on: every good record is stored, every partition's committed
  offset reaches its end, each hostile record is in its dead-letter topic once.
- An event dated 9999 on the partition holding pending `case_unresolved` timers: the
  future-dated guard keeps the watermark at the record's timestamp + skew, so no timer
  fires early; the event itself is applied with its own time, and the guard counts it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from common.settings import Settings
from processors.offline import partition_for
from producers.simulator import simulate
from schemas.codec import codec_for
from schemas.records import ActionEvent, InteractionEvent
from tests.reliability.harness import (
    SOAK_MARKS,
    Figures,
    PacedProducer,
    committed_offsets,
    process_settings,
    scrape,
)
from tests.reliability.pipeline import Pipeline, expected_outputs
from tests.reliability.security import metric_total
from tests.reliability.verifier import dlq_sources, verify, wire_records
from tests.support.kafka import read_topic
from tests.support.timing import wait_for
from tests.support.worker_state import read_worker_state


def huge_id(rng: random.Random) -> str:
    """3 KB of random text: too large for a btree index row even compressed."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3000))


def direct_action(n: int, customer: str) -> ActionEvent:
    return ActionEvent(
        action_id=f"direct-{n:05d}", customer_id=customer, rule="life_event_check_in",
        action="life_event_check_in", rule_version=1, destination="care", priority=80,
        reason="The customer asked to cancel.", evidence=[f"direct-event-{n}"],
        channel_hint="call", triggered_at=1_767_323_045_000 + n, details={},
    )  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    customers: int
    days: int
    hostile: int


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(Scenario(600, 30, 4), id="short"),
        pytest.param(Scenario(3000, 90, 40), id="soak", marks=SOAK_MARKS),
    ],
)
def test_a_3kb_customer_id_is_dead_lettered_and_stops_nothing(
    scenario: Scenario, settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    rng = random.Random(14)
    settings = process_settings(settings, tmp_path, database_url=database)
    good = list(simulate(scenario.customers, scenario.days, seed=14))
    codec = codec_for(InteractionEvent)
    records = wire_records(settings, good)
    topic = settings.topics.interactions
    for n in range(scenario.hostile):
        event = replace(rng.choice(good), customer_id=huge_id(rng), event_id=f"hostile-{n}")
        wire = (topic, event.customer_id.encode(), codec.encode(event, validate=False))
        records.insert(rng.randrange(len(records) + 1), (*wire, f"hostile:{n}"))
    direct_good = [direct_action(n, f"C-direct-{n % 7}") for n in range(200)]
    direct_bad = [direct_action(1000 + n, huge_id(rng)) for n in range(scenario.hostile)]
    action_records = wire_records(settings, actions=direct_good)
    for n, action in enumerate(direct_bad):
        care, key, value, _ = wire_records(settings, actions=[action])[0]
        action_records.insert(
            rng.randrange(len(action_records) + 1), (care, key, value, f"bad:{n}")
        )
    figures.update(events=len(good), actions_direct=len(direct_good), hostile=2 * len(direct_bad))

    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start_sink()
        pipeline.start_worker()
        producer = PacedProducer(settings, records + action_records, rate=2000).start()
        producer.join()
        ends = {p: o for (t, p), o in producer.ends.items() if t == settings.topics.interactions}
        pipeline.wait_worker_past(ends, timeout_s=max(180, len(records) / 200))
        worker_metrics = scrape(pipeline.fleet.metrics_port["worker"])
        pipeline.fleet.stop("worker")
        final = read_worker_state(settings)
        expected = expected_outputs(settings, good, final)
        care = settings.topics.action("care")
        care_ends = {p: o for (t, p), o in producer.ends.items() if t == care}
        expected_rows = len(expected.actions) + len(direct_good)
        pipeline.wait_rows(database, expected_rows, expected.decisions_count, 180)

        def sink_caught_up() -> bool:
            committed = committed_offsets(settings, settings.sinks.sink_group, care)
            return all(committed.get(p, -1) >= end for p, end in care_ends.items())

        wait_for(sink_caught_up, 120, "the sink to commit past the hostile actions", poll_s=1.0)
        stuck = sum(
            committed_offsets(settings, settings.sinks.sink_group, care).get(p, -1) < end
            for p, end in care_ends.items()
        )
        pipeline.fleet.stop("sink")
        crashes = pipeline.fleet.crashes()
    finally:
        pipeline.close()

    hostile_events = {
        (t, p, o) for (t, p, o), ident in producer.placed.items() if ident.startswith("hostile:")
    }
    bad_actions = {
        (t, p, o) for (t, p, o), ident in producer.placed.items() if ident.startswith("bad:")
    }
    event_letters = dlq_sources(read_topic(settings, [settings.topics.interactions_dlq]))
    action_letters = dlq_sources(read_topic(settings, [settings.topics.actions_dlq]))
    verdict = verify([*expected.actions, *direct_good], expected.decisions, database)
    figures.update(
        **verdict.figures(),
        **{
            "DLQ interactions (distinct)": len(event_letters.sources),
            "DLQ actions (distinct)": len(action_letters.sources),
            "DLQ actions stage store": action_letters.stages["store"],
            "stuck partitions": stuck,
            "worker consumed": int(metric_total(worker_metrics, "moments_events_consumed_total")),
            "crashes": len(crashes),
            "duration s": round(time.monotonic() - started, 1),
        },
    )
    assert not crashes, crashes
    assert event_letters.sources == hostile_events
    assert action_letters.sources == bad_actions
    assert not action_letters.missing_headers and not event_letters.missing_headers
    assert set(action_letters.stages) == {"store"}
    assert stuck == 0
    assert verdict.ok, verdict.summary()


FAR_FUTURE = 253_402_214_400_000  # 9999-12-31T00:00:00Z


def test_an_event_dated_9999_fires_no_pending_timer(
    settings: Settings, tmp_path: Path, figures: Figures
) -> None:
    """Cases opened just now on one partition, half resolved after the bogus event: no
    case_unresolved fires (their deadlines are 48 h away); the bogus event, feedback, fires
    its own route_feedback (a rule deciding as the event arrives) at its own time; the
    watermark stays within now + skew."""
    settings = process_settings(settings, tmp_path)
    partitions = settings.kafka.interactions_partitions
    bogus_customer = "C-FUTURE"
    target = partition_for(bogus_customer, partitions)
    customers = [
        c for c in (f"C-CASE-{n}" for n in range(400)) if partition_for(c, partitions) == target
    ]
    now_ms = time.time_ns() // 1_000_000
    opened_at = now_ms - 30 * 60_000

    def event(customer: str, kind: str, at: int, n: int) -> InteractionEvent:
        return InteractionEvent(
            f"{kind}-{customer}-{n}", customer, "email", kind, at, "helpdesk",
            reference=f"R-{customer}",
        )  # fmt: skip

    opened = [event(c, "dispute_opened", opened_at + i, i) for i, c in enumerate(customers)]
    bogus = InteractionEvent("bogus", bogus_customer, "call", "feedback_given", FAR_FUTURE, "ivr")
    resolved = [
        event(c, "dispute_resolved", opened_at + 60_000 + i, i)
        for i, c in enumerate(customers[::2])
    ]
    records = wire_records(settings, [*opened, bogus, *resolved])
    figures.update(events=len(records), **{"pending cases": len(customers)})

    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start_worker()
        producer = PacedProducer(settings, records, rate=500).start()
        producer.join()
        ends = {p: o for (_, p), o in producer.ends.items()}
        pipeline.wait_worker_past(ends, timeout_s=180)
        metrics = scrape(pipeline.fleet.metrics_port["worker"])
        pipeline.fleet.stop("worker")
        crashes = pipeline.fleet.crashes()
    finally:
        pipeline.close()
    final = read_worker_state(settings)
    action_codec = codec_for(ActionEvent)
    actions = [
        action_codec.decode(m.value())  # type: ignore[arg-type]
        for m in read_topic(
            settings, [settings.topics.action("care"), settings.topics.action("feedback")]
        )
    ]
    escalations = [a for a in actions if a.rule == "case_unresolved"]
    bogus_actions = [a for a in actions if a.customer_id == bogus_customer]
    watermark = final.watermark(target)
    future_dated = metric_total(metrics, "moments_events_future_dated_total")
    figures.update(
        **{
            "escalations fired early": len(escalations),
            "future-dated counted": int(future_dated),
            "watermark beyond now + skew (min)": round(
                ((watermark or 0) - (time.time_ns() // 1_000_000 + 3_600_000)) / 60_000, 1
            ),
            "lost": len(customers)
            - len({a.customer_id for a in actions if a.rule == "case_follow_up"}),
            "crashes": len(crashes),
        }
    )
    assert not crashes, crashes
    assert escalations == []
    assert [(a.rule, a.triggered_at) for a in bogus_actions] == [("route_feedback", FAR_FUTURE)]
    assert future_dated == 1
    assert watermark is not None and watermark <= time.time_ns() // 1_000_000 + 3_600_000
    assert {a.customer_id for a in actions if a.rule == "case_follow_up"} == set(customers)

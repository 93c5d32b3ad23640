"""kill -9 the worker at random moments while events flow: nothing lost, nothing twice.

A simulated population is published (publisher wire format: Avro single-object
encoding, key customer_id, murmur2_random, lz4) at a steady rate while
`moments worker` is killed with SIGKILL at random moments and restarted, with
each state store: memory:// (every restart rebuilds the state from the
changelog) and rocksdb:// (production: the local store survives the kill and
only its tail is recovered, so it must never hold the state of an event whose
output was not delivered).
The PostgreSQL sink writes what the worker emits. At the end the actions
and decisions tables, and the engine state the worker's changelog holds,
must equal the oracle exactly (`pipeline.expected_outputs`): actions lost 0,
duplicates 0 (no action fired by two decisions), nothing unexpected, every
decision there, and no worker crash. Decisions with reason `duplicate_event`
that the oracle lacks are the trace of events redelivered after a kill
(at-least-once); they are counted, and no action comes with them.

Event time runs about 80 000 times faster than the wall clock here (80
simulated days published in about 90 s), so the events redelivered after a
kill span far more than the engine's dedupe horizon (7 days of event time):
the worker must recognise them by offset (the state holds the offset of
the last record it covers), not by event id. `test_redelivery.py` opens
that window on purpose.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from common.settings import Settings
from producers.simulator import simulate
from tests.reliability.harness import SOAK_MARKS, Figures, PacedProducer, process_settings
from tests.reliability.pipeline import Pipeline, expected_outputs, state_differences
from tests.reliability.verifier import order_violations, verify, wire_records
from tests.support.kafka import read_topic
from tests.support.timing import wait_for
from tests.support.worker_state import read_worker_state


@dataclass(frozen=True)
class Scenario:
    customers: int
    days: int
    kills: int
    store: str = "memory://"  # rocksdb:// keeps the local state across the kill, as in production


# A restart after kill -9 waits the session timeout (6 s) and a group join (3 s) before the
# worker reads again: the events are offered at a rate that keeps them flowing through every kill.
RESTART_S = 14.0
SHORT = Scenario(customers=2000, days=80, kills=5)  # about 20 500 events
SOAK = Scenario(customers=6000, days=250, kills=20)  # about 205 000 events


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(SHORT, id="short"),
        pytest.param(replace(SHORT, store="rocksdb://"), id="short-rocksdb"),
        pytest.param(SOAK, id="soak", marks=SOAK_MARKS),
        pytest.param(replace(SOAK, store="rocksdb://"), id="soak-rocksdb", marks=SOAK_MARKS),
    ],
)
def test_kill9_worker_while_events_flow_loses_and_duplicates_nothing(
    scenario: Scenario, settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    rng = random.Random(20260105)
    settings = process_settings(
        settings, tmp_path, database_url=database, worker_store=scenario.store
    )
    events = list(simulate(scenario.customers, scenario.days, seed=5))
    records = wire_records(settings, events)
    rate = len(records) / ((scenario.kills + 1) * RESTART_S)
    figures.update(events=len(events), **{"publish rate /s": round(rate)})

    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start_sink()
        pipeline.start_worker()
        producer = PacedProducer(settings, records, rate, compression="lz4").start()
        kill_at: list[int] = []
        for _ in range(scenario.kills):
            # Kill once the worker has read again since its (re)start: it is mid-stream.
            committed_before = sum(max(0, o) for o in pipeline.worker_committed().values())

            def progressed(before: int = committed_before) -> bool:
                pipeline.fleet.check_alive()
                return sum(max(0, o) for o in pipeline.worker_committed().values()) > before

            wait_for(
                progressed,
                90,
                "the worker to process and commit events",
                poll_s=0.5,
                describe=pipeline.tails,
            )
            time.sleep(rng.uniform(0.0, 1.5))
            kill_at.append(producer.produced)
            pipeline.fleet.kill9("worker")
            pipeline.start_worker()
        producer.join()
        ends = {p: o for (_, p), o in producer.ends.items()}
        pipeline.wait_worker_past(ends, timeout_s=max(240, len(events) / 200))
        pipeline.fleet.stop("worker")
        final = read_worker_state(settings)
        expected = expected_outputs(settings, events, final)
        pipeline.wait_rows(
            database, len(expected.actions), expected.decisions_count, max(120, len(events) / 500)
        )
        pipeline.fleet.stop("sink")
        crashes = pipeline.fleet.crashes()
        kills = pipeline.fleet.kills
    finally:
        pipeline.close()

    verdict = verify(expected.actions, expected.decisions, database)
    order = order_violations(expected.in_order, read_topic(settings, [settings.topics.decisions]))
    state_problems = state_differences(expected.state, final.engine)
    figures.update(
        kills=kills,
        **{"events published at kills": ", ".join(map(str, kill_at))},
        **verdict.figures(),
        **{"tick timer actions": expected.tick_actions},
        **{"state keys differing": len(state_problems), "worker crashes": len(crashes)},
        **{"customers out of order": len(order)},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert kills == scenario.kills
    assert not crashes, crashes
    assert verdict.ok, verdict.summary()
    assert not state_problems, state_problems[:10]
    assert not order, order[:10]

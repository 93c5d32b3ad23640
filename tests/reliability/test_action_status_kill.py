"""kill -9 the worker while actions are open and their overdue timers pending (docs/design.md 12).

A simulated population is published with status events about the actions it fires
(acknowledged, reassigned, done; some actions left to go overdue and escalate), while
`moments worker` is killed with SIGKILL and restarted. At the end the action-status topic,
read back, must hold exactly the statuses the oracle (replay of the same events, each
partition then advanced to the worker's final watermark) gives: none lost, none that the
oracle lacks, no action overdue twice, every overdue at its due_by (nothing fired early),
and the worker's final state equal to the oracle's. The topic is at least once: a record
delivered again after a kill is the same record (counted, not a difference).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.settings import Settings
from processors.replay import replay_events
from producers.simulator import simulate
from schemas.codec import codec_for
from schemas.records import ActionStatus, InteractionEvent
from tests.reliability.harness import SOAK_MARKS, Figures, PacedProducer, process_settings
from tests.reliability.pipeline import Pipeline, expected_outputs, state_differences
from tests.reliability.verifier import new_engine, wire_records
from tests.support.kafka import read_topic
from tests.support.timing import wait_for
from tests.support.worker_state import read_worker_state

H = 3_600_000


@dataclass(frozen=True)
class Scenario:
    customers: int
    days: int
    kills: int


RESTART_S = 14.0
SHORT = Scenario(customers=400, days=40, kills=3)
SOAK = Scenario(customers=3000, days=150, kills=12)


def _with_statuses(settings: Settings, events: list[InteractionEvent]) -> list[InteractionEvent]:
    """The events plus status events about the actions with a due_by they fire: some
    acknowledged, reassigned and done before their due_by, some acknowledged only (they go
    overdue), some left alone; in occurred_at order, as the publisher sends them."""
    actions, _ = replay_events(events, engine=new_engine(settings))
    rng = random.Random(31)
    extra: list[InteractionEvent] = []
    for n, action in enumerate(a for a in actions if a.due_by is not None):
        fate = rng.choice(["done", "late", "alone"])
        if fate == "alone":
            continue
        steps = [("action_acknowledged", {"owner": f"agent-{n % 7}"})]
        if fate == "done":
            steps.append(("action_reassigned", {"owner": f"agent-{(n + 1) % 7}"}))
            steps.append(("action_done", {"resolution": "completed"}))
        for k, (type_, attributes) in enumerate(steps):
            extra.append(
                InteractionEvent(
                    event_id=f"status-{n}-{k}",
                    customer_id=action.customer_id,
                    channel="other",
                    type=type_,
                    occurred_at=action.triggered_at + (k + 1) * H // 4,
                    source="desk",
                    reference=action.action_id,
                    attributes=attributes,
                )
            )
    return sorted(events + extra, key=lambda e: e.occurred_at)


def _identity(status: ActionStatus) -> tuple[object, ...]:
    return (
        status.action_id,
        status.status,
        status.owner,
        status.resolution,
        status.at,
        status.event_id,
    )


@pytest.mark.parametrize(
    "scenario", [pytest.param(SHORT, id="short"), pytest.param(SOAK, id="soak", marks=SOAK_MARKS)]
)
def test_kill9_worker_with_open_actions_loses_and_repeats_no_status(
    scenario: Scenario, settings: Settings, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    rng = random.Random(20261207)
    settings = process_settings(settings, tmp_path)
    events = _with_statuses(settings, list(simulate(scenario.customers, scenario.days, seed=9)))
    records = wire_records(settings, events)
    rate = len(records) / ((scenario.kills + 1) * RESTART_S)
    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start_worker()
        producer = PacedProducer(settings, records, rate, compression="lz4").start()
        for _ in range(scenario.kills):
            before = sum(max(0, o) for o in pipeline.worker_committed().values())

            def progressed(before: int = before) -> bool:
                pipeline.fleet.check_alive()
                return sum(max(0, o) for o in pipeline.worker_committed().values()) > before

            wait_for(progressed, 90, "the worker to commit events", poll_s=0.5)
            time.sleep(rng.uniform(0.0, 1.5))
            pipeline.fleet.kill9("worker")
            pipeline.start_worker()
        producer.join()
        ends = {p: o for (_, p), o in producer.ends.items()}
        pipeline.wait_worker_past(ends, timeout_s=max(240, len(events) / 200))
        pipeline.fleet.stop("worker")
        final = read_worker_state(settings)
        expected = expected_outputs(settings, events, final)
        codec = codec_for(ActionStatus)
        want = Counter(_identity(s) for s in expected.statuses)
        messages = read_topic(
            settings,
            [settings.topics.action_status],
            enough=lambda got: len(got) >= len(expected.statuses),
            timeout_s=120,
        )
        crashes = pipeline.fleet.crashes()
        kills = pipeline.fleet.kills
    finally:
        pipeline.close()
    values = [m.value() for m in messages]
    got = [codec.decode(value) for value in values if value is not None]
    have = Counter(_identity(s) for s in got)
    lost = want - have
    unexpected = set(have) - set(want)
    # one overdue per action (a record delivered again is the same record)
    overdue = Counter(key[0] for key in have if key[1] == "overdue")
    due_by = {a.action_id: a.due_by for a in expected.actions if a.due_by is not None}
    early = [s for s in got if s.status == "overdue" and s.at != due_by.get(s.action_id)]
    state_problems = state_differences(expected.state, final.engine)
    figures.update(
        events=len(events),
        kills=kills,
        statuses=len(expected.statuses),
        **{
            "status records read": len(got),
            "redelivered": sum((have - want).values()),
            "lost": sum(lost.values()),
            "unexpected": len(unexpected),
            "overdue": len(overdue),
            "duration s": round(time.monotonic() - started, 1),
        },
    )
    assert kills == scenario.kills and not crashes, crashes
    assert {s.status for s in expected.statuses} >= {"open", "acknowledged", "done", "overdue"}
    assert not lost, list(lost)[:5]
    assert not unexpected, list(unexpected)[:5]
    assert max(overdue.values(), default=1) == 1
    assert not early, early[:5]
    assert not state_problems, state_problems[:10]

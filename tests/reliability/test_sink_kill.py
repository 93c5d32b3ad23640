"""kill -9 the PostgreSQL sink mid-batch, again and again: every record lands exactly once.

The sink (`python -m moments sink postgres`) reads a stream of real actions,
decisions and interaction events (a simulation and its oracle's outputs)
while it is killed with SIGKILL at random moments while it writes. After each
kill, with the sink dead and nothing moving, its committed offsets must not
pass a record without a row. At the end the tables hold exactly the oracle:
no action lost, none twice, nothing else.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.settings import Settings
from producers.simulator import simulate
from sinks.postgres import sink_topics
from tests.reliability.harness import (
    SOAK_MARKS,
    Figures,
    Fleet,
    PacedProducer,
    committed_offsets,
    db_count,
    process_settings,
    timed,
)
from tests.reliability.verifier import (
    durable_idents,
    event_rows,
    file_oracle,
    records_past_durable_rows,
    verify,
    wire_records,
)
from tests.support.timing import wait_for


@dataclass(frozen=True)
class Scenario:
    customers: int
    days: int
    kills: int


# A restart after kill -9 takes about 7 s (session timeout + group join): records are offered
# at a rate that keeps them flowing through every kill.
RESTART_S = 7.0
SHORT = Scenario(customers=1500, days=30, kills=5)
SOAK = Scenario(customers=6000, days=60, kills=20)


def offset_problems(settings: Settings, conninfo: str, producer: PacedProducer) -> list[str]:
    """Records below the sink's committed offsets that have no row (call while it is dead)."""
    committed = {
        (topic, partition): offset
        for topic in sink_topics(settings)
        for partition, offset in committed_offsets(
            settings, settings.sinks.sink_group, topic
        ).items()
    }
    return records_past_durable_rows(committed, dict(producer.placed), durable_idents(conninfo))


def describe(settings: Settings, conninfo: str, fleet: Fleet) -> str:
    counts = {
        table: db_count(conninfo, f"SELECT count(*) FROM {table}")
        for table in ("actions", "decisions", "interaction_events")
    }
    committed = {
        topic: committed_offsets(settings, settings.sinks.sink_group, topic)
        for topic in sink_topics(settings)
    }
    tail = fleet.log_tail(f"sink-{fleet.starts['sink']}")
    return f"rows {counts}\ncommitted {committed}\n{tail}"


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(SHORT, id="short"), pytest.param(SOAK, id="soak", marks=SOAK_MARKS)],
)
def test_kill9_sink_mid_batch_every_action_exactly_once(
    scenario: Scenario, settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    rng = random.Random(20260107)
    # A killed member is noticed after the session timeout: 3 s keeps the restarts short.
    settings = process_settings(
        settings,
        tmp_path,
        database_url=database,
        sink_batch_size=400,
        sink_batch_timeout_s=0.3,
        broker_session_timeout_s=3.0,
    )
    events = list(simulate(scenario.customers, scenario.days, seed=11))
    oracle = file_oracle(events, settings)
    records = wire_records(settings, events, oracle.actions, oracle.decisions)
    rng.shuffle(records)  # the sink sees every topic at once, as it does live
    figures.update(
        records=len(records),
        actions=len(oracle.actions),
        **{"oracle decision id collisions": oracle.decision_id_collisions},
    )

    kills_mid_write = 0
    violations: list[str] = []
    with Fleet(settings, tmp_path / "logs") as fleet, timed(figures, "kill phase s"):
        rate = len(records) / (scenario.kills * RESTART_S)
        producer = PacedProducer(settings, records, rate).start()
        fleet.start("sink", "sink", "postgres")
        for _ in range(scenario.kills):
            before = max(0, db_count(database, "SELECT count(*) FROM actions"))

            def grew(before: int = before) -> bool:
                now = db_count(database, "SELECT count(*) FROM actions")
                return now > min(before, len(oracle.actions) - 1)

            wait_for(grew, 90, "the sink to write rows")
            fleet.check_alive()
            time.sleep(rng.uniform(0.0, 0.8))
            writing = db_count(database, "SELECT count(*) FROM actions") < len(oracle.actions)
            fleet.kill9("sink")
            kills_mid_write += writing
            violations += offset_problems(
                settings, database, producer
            )  # the sink is dead: nothing moves
            fleet.start("sink", "sink", "postgres")
        producer.join()
        total, stored = len(oracle.actions), event_rows(events)
        wait_for(
            lambda: (
                db_count(database, "SELECT count(*) FROM actions") == total
                and db_count(database, "SELECT count(*) FROM decisions") == oracle.decision_ids
                and db_count(database, "SELECT count(*) FROM interaction_events") == stored
            ),
            180,
            "every record to land",
            describe=lambda: describe(settings, database, fleet),
        )

        def all_committed() -> bool:
            for (topic, partition), end in producer.ends.items():
                if (
                    committed_offsets(settings, settings.sinks.sink_group, topic).get(partition, -1)
                    < end
                ):
                    return False
            return True

        wait_for(all_committed, 60, "every offset to be committed", poll_s=1.0)
        fleet.check_alive()
        crashes = fleet.crashes()
        kills = fleet.kills
    violations += offset_problems(settings, database, producer)

    verdict = verify(oracle.actions, oracle.decisions, database)
    figures.update(
        kills=kills,
        **{"kills while writing": kills_mid_write},
        **verdict.figures(),
        **{"offsets past durable rows": len(violations), "crashes": len(crashes)},
        **{"events stored": db_count(database, "SELECT count(*) FROM interaction_events")},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert kills == scenario.kills
    assert not crashes, crashes
    assert not violations, violations[:5]
    assert verdict.ok, verdict.summary()
    assert verdict.redelivery_traces == 0  # the sink adds nothing: only the engine writes traces
    assert db_count(
        database, "SELECT count(DISTINCT (customer_id, event_id)) FROM interaction_events"
    ) == event_rows(events)

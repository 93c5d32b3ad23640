"""PostgreSQL stopped mid-stream, then started again on the same data directory.

The PostgreSQL sink (`moments sink postgres`, a child process) reads a steady
stream of real actions, decisions and interaction events (a simulation and
its oracle's outputs) while its database is stopped for a while (15 s here,
60 s in the soak) and started again on the same data directory. Meanwhile the
sink group's committed offsets are sampled every second. Then:

- lost 0, duplicates 0: the tables hold exactly the oracle's records;
- offsets never passed durable rows: in every sample taken while the
  database was down, each record below a committed offset has a row written
  before the database stopped (outside the outage, a row at all). "Before it
  stopped" is the moment `stop()` returned: a shutdown takes a while (on a
  loaded machine, seconds), and the sink rightly keeps committing until the
  server refuses it; rows of a transaction begun before that moment either
  committed before it or do not exist. A sample counts as taken during the
  outage only when it began after the stop was asked for and ended before the
  restart (one sample reads several topics, which takes a while too);
- the sink waited the outage out (its error counter rose) without crashing.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from common.settings import Settings
from moments.stack import EmbeddedPostgres
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
    scrape,
)
from tests.reliability.security import metric_total
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
    outage_s: float
    before_s: float  # records flow this long before the outage
    after_s: float  # and this long after it


SHORT = Scenario(customers=800, days=30, outage_s=15.0, before_s=5.0, after_s=5.0)
SOAK = Scenario(customers=3000, days=60, outage_s=60.0, before_s=15.0, after_s=15.0)


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own (it gets stopped), data right under /tmp."""
    path = Path(tempfile.mkdtemp(prefix="moments-pg-outage-"))
    server = EmbeddedPostgres(data_dir=path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class OffsetSample:
    """The sink group's committed offsets, read between `began` and `ended` (time.time())."""

    began: float
    ended: float
    offsets: dict[tuple[str, int], int]


class OffsetSampler:
    """Samples the sink group's committed offsets of every topic it reads, once a second."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.samples: list[OffsetSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="offset-sampler", daemon=True)

    def _run(self) -> None:
        # One consumer (no subscription, so it never joins the group) and one offset fetch
        # per sample: a sample stays short on a loaded machine.
        consumer = Consumer(
            self.settings.kafka_config(**{"group.id": self.settings.sinks.sink_group})
        )
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in sink_topics(self.settings)
                for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ]
            while not self._stop.wait(1.0):
                began = time.time()
                offsets = {
                    (str(tp.topic), tp.partition): tp.offset
                    for tp in consumer.committed(partitions, timeout=10)
                }
                self.samples.append(OffsetSample(began, time.time(), offsets))
        finally:
            consumer.close()

    def __enter__(self) -> OffsetSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(SHORT, id="short"), pytest.param(SOAK, id="soak", marks=SOAK_MARKS)],
)
def test_database_outage_mid_stream_loses_and_duplicates_nothing(
    scenario: Scenario,
    settings: Settings,
    own_postgres: EmbeddedPostgres,
    tmp_path: Path,
    figures: Figures,
) -> None:
    started = time.monotonic()
    url = own_postgres.url
    settings = process_settings(settings, tmp_path, database_url=url, sink_batch_size=300)
    events = list(simulate(scenario.customers, scenario.days, seed=21))
    oracle = file_oracle(events, settings)
    records = wire_records(settings, events, oracle.actions, oracle.decisions)
    random.Random(4).shuffle(records)
    span = scenario.before_s + scenario.outage_s + scenario.after_s
    figures.update(records=len(records), **{"outage s": scenario.outage_s})

    with Fleet(settings, tmp_path / "logs") as fleet:
        fleet.start("sink", "sink", "postgres")
        wait_for(lambda: db_count(url, "SELECT count(*) FROM actions") >= 0, 60, "migrations")
        with OffsetSampler(settings) as sampler:
            producer = PacedProducer(settings, records, rate=len(records) / span).start()
            wait_for(
                lambda: db_count(url, "SELECT count(*) FROM actions") > 0, 60, "the first rows"
            )
            time.sleep(scenario.before_s / 2)
            rows_before = db_count(url, "SELECT count(*) FROM actions")
            stop_asked_at = datetime.now(UTC)
            down_from = time.time()
            own_postgres.stop()
            stopped_at = datetime.now(UTC)  # nothing commits from here until the restart
            time.sleep(scenario.outage_s)
            fleet.check_alive()
            errors_during = metric_total(
                scrape(fleet.metrics_port["sink"]), "moments_sink_errors_total"
            )
            down_until = time.time()
            assert own_postgres.start() == url
            producer.join()
            total, stored = len(oracle.actions), event_rows(events)
            wait_for(
                lambda: (
                    db_count(url, "SELECT count(*) FROM actions") == total
                    and db_count(url, "SELECT count(*) FROM decisions") == oracle.decision_ids
                    and db_count(url, "SELECT count(*) FROM interaction_events") == stored
                ),
                120,
                "every record to land after the outage",
            )

            def all_committed() -> bool:
                return all(
                    committed_offsets(settings, settings.sinks.sink_group, topic).get(p, -1) >= end
                    for (topic, p), end in producer.ends.items()
                )

            wait_for(all_committed, 60, "every offset to be committed", poll_s=1.0)
        fleet.stop("sink")
        crashes = fleet.crashes()

    before_outage = durable_idents(url, inserted_before=stopped_at)
    everything = durable_idents(url)
    during = [s.offsets for s in sampler.samples if down_from <= s.began and s.ended <= down_until]
    violations = [
        problem
        for sample in during
        for problem in records_past_durable_rows(sample, producer.placed, before_outage)
    ]
    violations += [
        problem
        for sample in sampler.samples
        for problem in records_past_durable_rows(sample.offsets, producer.placed, everything)
    ]
    # Rows the sink committed while the server was shutting down: counted as not durable
    # when the cutoff was taken before `stop()` (once a flake). A figure, no failure.
    before_stop_asked = durable_idents(url, inserted_before=stop_asked_at)
    while_stopping = before_outage - before_stop_asked
    past_at_stop_asked = {
        problem
        for sample in during
        for problem in records_past_durable_rows(sample, producer.placed, before_stop_asked)
    }
    verdict = verify(oracle.actions, oracle.decisions, url)
    figures.update(
        **{
            "action rows before outage": rows_before,
            "stop s": round((stopped_at - stop_asked_at).total_seconds(), 1),
            "rows committed while stopping": len(while_stopping),
            "past rows begun before the stop call": len(past_at_stop_asked),
            "sink errors during outage": int(errors_during),
        },
        **{"offset samples": len(sampler.samples), "samples during outage": len(during)},
        **verdict.figures(),
        **{"offsets past durable rows": len(violations), "crashes": len(crashes)},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert not crashes, crashes
    assert errors_during > 0, "the sink never noticed the database was down"
    assert len(during) >= scenario.outage_s / 2
    assert not violations, violations[:5]
    assert verdict.ok, verdict.summary()

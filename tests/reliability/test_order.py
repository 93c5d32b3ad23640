"""Per-customer order: no customer's events applied out of order, with 1 worker, 3, and rebalances.

One worker starts on a steady stream; two more join (a rebalance hands each
a share of the partitions, and the new owners rebuild their partitions' state
from the changelog); then one leaves (another rebalance). The decisions a
worker emits for a customer follow the order it applies the customer's
events, on one partition of `decisions`: `verifier.order_violations` checks,
per customer, that they come in the order the oracle gives them, applying
the events in input order (first record of each decision id; `duplicate_event`
traces of redelivered events left out). The single-worker case is checked by the kill
test and the poison test the same way. Actions, decisions and the final
engine state must equal the oracle, as always.

A rebalance re-reads the changelog of every partition a worker is given,
even of one it keeps: the worker sends its staged state when partitions are
revoked, so recovery never overwrites a newer value with an older one, and
it skips the records its state already covers when they are delivered again.
"""

from __future__ import annotations

import time
from pathlib import Path

from common.settings import Settings
from producers.simulator import simulate
from tests.reliability.harness import Figures, PacedProducer, process_settings
from tests.reliability.pipeline import Pipeline, expected_outputs, state_differences
from tests.reliability.verifier import order_violations, verify, wire_records
from tests.support.kafka import read_topic
from tests.support.timing import wait_for
from tests.support.worker_state import read_worker_state


def test_no_customer_out_of_order_under_three_workers_and_rebalances(
    settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    settings = process_settings(settings, tmp_path, database_url=database)
    events = list(simulate(1200, 40, seed=13))
    records = wire_records(settings, events)
    pipeline = Pipeline(settings, tmp_path / "logs")
    phases: list[str] = []

    def progress_after(mark: int, timeout_s: float = 90) -> None:
        def moved() -> bool:
            pipeline.fleet.check_alive()
            return sum(max(0, o) for o in pipeline.worker_committed().values()) > mark

        wait_for(
            moved, timeout_s, "the workers to commit progress", poll_s=0.5, describe=pipeline.tails
        )

    def committed() -> int:
        return sum(max(0, o) for o in pipeline.worker_committed().values())

    try:
        pipeline.start_sink()
        pipeline.start_worker("worker-a")
        producer = PacedProducer(settings, records, rate=len(records) / 35, compression="lz4")
        producer.start()
        progress_after(0)
        phases.append(f"1 worker: {committed()} committed")
        pipeline.start_worker("worker-b")
        pipeline.start_worker("worker-c")
        mark = committed()
        progress_after(mark)
        time.sleep(4.0)
        progress_after(committed())  # progress again, after the rebalance settled
        phases.append(f"3 workers: {committed()} committed")
        assert pipeline.fleet.stop("worker-b") == 0  # a worker leaves: another rebalance
        progress_after(committed())
        phases.append(f"2 workers: {committed()} committed")
        producer.join()
        pipeline.wait_worker_past({p: o for (_, p), o in producer.ends.items()}, timeout_s=180)
        pipeline.fleet.stop("worker-a")
        pipeline.fleet.stop("worker-c")
        final = read_worker_state(settings)
        expected = expected_outputs(settings, events, final)
        pipeline.wait_rows(database, len(expected.actions), expected.decisions_count, 120)
        pipeline.fleet.stop("sink")
        crashes = pipeline.fleet.crashes()
    finally:
        pipeline.close()

    decisions = read_topic(settings, [settings.topics.decisions])
    order = order_violations(expected.in_order, decisions)
    verdict = verify(expected.actions, expected.decisions, database)
    state_problems = state_differences(expected.state, final.engine)
    customers = len({e.customer_id for e in events})
    figures.update(
        events=len(events),
        customers=customers,
        **{"phases": "; ".join(phases), "decision records read": len(decisions)},
        **{"customers out of order": len(order)},
        **verdict.figures(),
        **{"state keys differing": len(state_problems), "worker crashes": len(crashes)},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert not crashes, crashes
    assert not order, order[:10]
    assert verdict.ok, verdict.summary()
    assert not state_problems, state_problems[:10]

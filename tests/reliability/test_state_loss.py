"""State loss: the worker's local state is gone; it is rebuilt from the changelog.

The worker runs with the memory store (rocksdict, needed for `rocksdb://`, is
not installed), so a fresh process is exactly a worker whose local state was
deleted; its data directory is deleted as well before the restart. Before the
restart, a simulated population plus three planted customers build up state:

- STATE-COOL asks to cancel (life_event_check_in fires, a 30-day cool-down starts);
- STATE-CASE opens a dispute (a 48-hour absence timer is pending);
- STATE-BILL opens a gas account and gets its first invoice (explain_first_bill, once per
  product, for a product opened within 90 days).

The worker is stopped, its data directory deleted, and a new one started;
then the rest arrives: STATE-COOL asks to cancel again 5 days later (the
cool-down from before the restart must suppress it), STATE-CASE never
resolves (the timer from before the restart must fire once event time passes
it), STATE-BILL's second gas invoice, still within 90 days of the opening,
must not be "first" again. Everything the database holds must equal the
oracle over all events, and the worker's final engine state must equal the
oracle's, key for key.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from common.settings import Settings
from producers.simulator import DAY, HOUR, simulate
from schemas.records import InteractionEvent
from tests.reliability.harness import Figures, PacedProducer, process_settings
from tests.reliability.pipeline import Pipeline, expected_outputs, state_differences
from tests.reliability.verifier import (
    order_violations,
    stored_decisions,
    verify,
    wire_records,
)
from tests.support.kafka import read_topic
from tests.support.worker_state import read_worker_state


def planted(event_id: str, customer: str, kind: str, at: int, **fields: str) -> InteractionEvent:
    return InteractionEvent(
        event_id=event_id,
        customer_id=customer,
        channel="call",
        type=kind,
        occurred_at=at,
        source="state-loss-test",
        **fields,  # type: ignore[arg-type]
    )


def test_state_rebuilt_from_the_changelog_after_local_state_loss(
    settings: Settings, database: str, tmp_path: Path, figures: Figures
) -> None:
    started = time.monotonic()
    settings = process_settings(settings, tmp_path, database_url=database)
    population = list(simulate(600, 40, seed=9))
    t0 = population[0].occurred_at
    middle = t0 + 20 * DAY
    before = [e for e in population if e.occurred_at < middle] + [
        planted("cool-1", "STATE-COOL", "cancellation_requested", middle - 2 * DAY),
        planted("case-1", "STATE-CASE", "dispute_opened", middle - 1 * DAY, reference="D-1"),
        planted("bill-0", "STATE-BILL", "account_opened", middle - 4 * DAY, product="gas"),
        planted("bill-1", "STATE-BILL", "invoice_issued", middle - 3 * DAY, product="gas"),
    ]
    after = [e for e in population if e.occurred_at >= middle] + [
        planted("cool-2", "STATE-COOL", "cancellation_requested", middle + 3 * DAY),
        planted("bill-2", "STATE-BILL", "invoice_issued", middle + 2 * DAY, product="gas"),
        planted("case-2", "STATE-CASE", "inquiry", middle + 5 * DAY + HOUR),
    ]
    before.sort(key=lambda e: e.occurred_at)
    after.sort(key=lambda e: e.occurred_at)

    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start_sink()
        pipeline.start_worker()
        first = PacedProducer(
            settings, wire_records(settings, before), rate=3000, compression="lz4"
        ).start()
        first.join()
        pipeline.wait_worker_past({p: o for (_, p), o in first.ends.items()}, timeout_s=120)
        assert pipeline.fleet.stop("worker") == 0
        state_dir = settings.stack.data_dir / "worker"  # the worker role's data directory
        existed = state_dir.exists()
        shutil.rmtree(state_dir, ignore_errors=True)  # the local state is gone
        pipeline.start_worker()
        second = PacedProducer(
            settings, wire_records(settings, after), rate=3000, compression="lz4"
        ).start()
        second.join()
        pipeline.wait_worker_past({p: o for (_, p), o in second.ends.items()}, timeout_s=120)
        pipeline.fleet.stop("worker")
        final = read_worker_state(settings)
        events = before + after
        expected = expected_outputs(settings, events, final)
        pipeline.wait_rows(database, len(expected.actions), expected.decisions_count, 120)
        pipeline.fleet.stop("sink")
        crashes = pipeline.fleet.crashes()
    finally:
        pipeline.close()

    verdict = verify(expected.actions, expected.decisions, database)
    state_problems = state_differences(expected.state, final.engine)
    order = order_violations(expected.in_order, read_topic(settings, [settings.topics.decisions]))
    planted_decisions = {
        (d.customer_id, d.rule, d.outcome, d.reason, tuple(d.evidence))
        for d in stored_decisions(database)
        if d.customer_id.startswith("STATE-")
    }
    figures.update(
        events=len(events),
        **{
            "state dir existed": existed,
            "state keys restored": sum(map(len, final.engine.values())),
        },
        **verdict.figures(),
        **{"state keys differing": len(state_problems), "worker crashes": len(crashes)},
        **{"duration s": round(time.monotonic() - started, 1)},
    )
    assert not crashes, crashes
    # The cool-down, the pending timer and "first ever" all survived the loss of local state.
    cool = ("STATE-COOL", "life_event_check_in")
    assert (*cool, "fired", "fired", ("cool-1",)) in planted_decisions
    assert (*cool, "suppressed", "cool_down", ("cool-2",)) in planted_decisions
    assert ("STATE-CASE", "case_unresolved", "fired", "fired", ("case-1",)) in planted_decisions
    bill = ("STATE-BILL", "explain_first_bill")
    assert (*bill, "fired", "fired", ("bill-1",)) in planted_decisions
    assert not any(d[:3] == (*bill, "fired") and d[4] == ("bill-2",) for d in planted_decisions)
    assert verdict.ok, verdict.summary()
    assert not state_problems, state_problems[:10]
    assert not order, order[:10]

"""The worker without a broker: what `_emit` observes for metrics, and redelivery skipping."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from common.metrics import ACTIONS_EMITTED, DECISIONS, EVENT_TO_ACTION_LATENCY
from common.settings import Settings
from processors.engine import EngineOutput
from processors.worker import TriggerWorker
from schemas.records import ActionEvent, Decision
from tests.support.worker import FakeEvent, FakeMessage, FakeOutput, FakeTable


@pytest.fixture
def worker(tmp_path: Any) -> TriggerWorker:
    settings = Settings(bootstrap="127.0.0.1:9", data_dir=tmp_path, topic_prefix="unit.")
    worker = TriggerWorker(settings)
    worker.output = FakeOutput()  # type: ignore[assignment]
    return worker


def action(rule: str, destination: str, triggered_at: int) -> ActionEvent:
    return ActionEvent(
        action_id=f"{rule}-{triggered_at}",
        customer_id="ann",
        rule=rule,
        action=rule,
        rule_version=1,
        destination=destination,
        priority=50,
        reason="A reason.",
        evidence=["e1"],
        channel_hint="call",
        triggered_at=triggered_at,
        details={"relationship_balance": "-1"},
    )


def decision(rule: str, outcome: str, reason: str) -> Decision:
    return Decision(
        decision_id=f"d-{rule}-{reason}",
        customer_id="ann",
        rule=rule,
        rule_version=1,
        outcome=outcome,
        reason=reason,
        action_id=None,
        evidence=["e1"],
        decided_at=0,
    )


def observed(destination: str, trigger: str) -> tuple[float, float]:
    """(sum, count) of the latency histogram child."""
    child = EVENT_TO_ACTION_LATENCY.labels(destination, trigger)
    return child._sum.get(), sum(b.get() for b in child._buckets)


def test_actions_answering_the_event_and_timer_actions_are_told_apart(
    worker: TriggerWorker,
) -> None:
    now_ms = int(time.time() * 1000)
    event_ms = now_ms - 2_000
    deadline = now_ms - 600_000  # a timer fires at least the allowed lateness late
    before_event = observed("care", "event")
    before_timer = observed("care", "timer")
    before_actions = ACTIONS_EMITTED.labels("case_follow_up", "care")._value.get()
    out = EngineOutput(
        [action("case_unresolved", "care", deadline), action("case_follow_up", "care", event_ms)],
        [],
    )
    worker._emit(out, event_ms)
    worker._flush_metrics()  # counters are tallied per batch
    event_sum, event_count = observed("care", "event")
    timer_sum, timer_count = observed("care", "timer")
    assert event_count - before_event[1] == 1
    assert 1.5 < event_sum - before_event[0] < 60
    assert timer_count - before_timer[1] == 1
    assert timer_sum - before_timer[0] >= 600
    assert ACTIONS_EMITTED.labels("case_follow_up", "care")._value.get() == before_actions + 1
    sent = worker.output.sent  # type: ignore[attr-defined]
    assert sent == [("unit.actions.care", b"ann")] * 2


def test_a_tick_emits_only_timer_actions(worker: TriggerWorker) -> None:
    deadline = int(time.time() * 1000) - 400_000
    before = observed("crm", "timer"), observed("crm", "event")
    worker._emit(EngineOutput([action("x_absence", "crm", deadline)], []), None)
    assert observed("crm", "timer")[1] == before[0][1] + 1
    assert observed("crm", "event") == before[1]


def test_decisions_count_by_rule_outcome_and_bounded_reason(worker: TriggerWorker) -> None:
    cool = DECISIONS.labels("life_event_check_in", "suppressed", "cool_down")
    other = DECISIONS.labels("life_event_check_in", "suppressed", "other")
    before = cool._value.get(), other._value.get()
    out = EngineOutput(
        [],
        [
            decision("life_event_check_in", "suppressed", "cool_down"),
            decision("life_event_check_in", "suppressed", "Not A Label Value!"),
        ],
    )
    worker._emit(out, 0)
    worker._flush_metrics()
    assert (cool._value.get(), other._value.get()) == (before[0] + 1, before[1] + 1)
    assert worker.output.sent == [("unit.decisions", b"ann")] * 2  # type: ignore[attr-defined]


def test_records_the_state_already_covers_are_skipped_however_old(worker: TriggerWorker) -> None:
    from common.metrics import REDELIVERIES_SKIPPED
    from processors.faust_host.changelog import StagedTable
    from schemas.codec import codec_for
    from schemas.records import InteractionEvent

    worker.staged_state = StagedTable(FakeTable())
    codec = codec_for(InteractionEvent)
    long_ago = 1_500_000_000_000  # years before the others: far beyond the dedupe horizon
    cancel = InteractionEvent("e1", "ann", "call", "cancellation_requested", long_ago, "unit")
    later = InteractionEvent("e2", "ann", "web", "page_viewed", long_ago + 400 * 86_400_000, "u")
    records = [FakeEvent(FakeMessage(7, codec.encode(cancel))), FakeEvent(FakeMessage(8, b"junk"))]
    records.append(FakeEvent(FakeMessage(9, codec.encode(later))))
    skipped_before = REDELIVERIES_SKIPPED._value.get()

    async def deliver_twice() -> None:
        for record in records + records:  # the second pass: redelivered after a crash
            await worker.handle(record)  # type: ignore[arg-type]

    asyncio.run(deliver_twice())
    sent = worker.output.sent  # type: ignore[attr-defined]
    dead_letters = [topic for topic, _ in sent if topic == worker.settings.topics.interactions_dlq]
    assert len(dead_letters) == 1
    assert REDELIVERIES_SKIPPED._value.get() - skipped_before == 3
    assert worker.staged_state.get("0/w/applied") == b"9"
    # the same record on another partition is not covered there: applied
    again = FakeEvent(FakeMessage(7, codec.encode(cancel), partition=1))
    asyncio.run(worker.handle(again))  # type: ignore[arg-type]
    assert worker.staged_state.get("1/w/applied") == b"7"
    assert REDELIVERIES_SKIPPED._value.get() - skipped_before == 3


def test_a_batch_records_each_partitions_last_offset_and_its_redelivery_is_skipped(
    worker: TriggerWorker,
) -> None:
    from common.metrics import REDELIVERIES_SKIPPED
    from processors.faust_host.changelog import StagedTable
    from schemas.codec import codec_for
    from schemas.records import InteractionEvent

    worker.staged_state = StagedTable(FakeTable())
    codec = codec_for(InteractionEvent)

    def record(offset: int, partition: int) -> FakeEvent:
        event = InteractionEvent(f"e{offset}", "ann", "web", "page_viewed", 1_700_000_000_000, "u")
        return FakeEvent(FakeMessage(offset, codec.encode(event), partition=partition))

    batch = [record(3, 0), record(4, 0), record(8, 1), record(5, 0)]
    skipped_before = REDELIVERIES_SKIPPED._value.get()
    asyncio.run(worker.handle_batch(batch))  # type: ignore[arg-type]
    staged = worker.staged_state.take()
    assert (staged[0]["0/w/applied"], staged[1]["1/w/applied"]) == (b"5", b"8")
    # redelivered after a crash, with one record beyond what the state covers
    asyncio.run(worker.handle_batch([*batch, record(9, 1)]))  # type: ignore[arg-type]
    assert REDELIVERIES_SKIPPED._value.get() - skipped_before == 4
    again = worker.staged_state.take()
    assert 0 not in again  # nothing new on partition 0: not even its offset is written again
    assert again[1]["1/w/applied"] == b"9"


def test_the_worker_exports_its_consumer_lag_per_partition(worker: TriggerWorker) -> None:
    from common.metrics import CONSUMER_LAG

    class Consumer:
        """The high watermarks the consumer last fetched, per partition."""

        def highwater(self, tp: Any) -> int:
            return {0: 100, 3: 7}[tp.partition]

    worker.app.consumer = Consumer()  # type: ignore[assignment]
    events = [FakeEvent(FakeMessage(o, b"", partition=p)) for p, o in ((0, 40), (3, 6), (0, 41))]
    worker._export_lag(cast(Any, events))
    group = worker.settings.worker.worker_app_id
    lag = {p: CONSUMER_LAG.labels(group, "unit.interactions", p)._value.get() for p in "03"}
    assert lag == {"0": 100 - 42, "3": 0}  # the next offsets to handle: 42 and 7


def test_a_batch_waits_longer_for_records_only_while_the_worker_is_behind(
    worker: TriggerWorker,
) -> None:
    from processors.worker import BATCH_WITHIN_BEHIND_S, BATCH_WITHIN_S

    batch_size = worker.settings.worker.worker_batch_size
    highwaters = {0: 0, 3: 0}

    class Consumer:
        def highwater(self, tp: Any) -> int:
            return highwaters[tp.partition]

    worker.app.consumer = Consumer()  # type: ignore[assignment]
    events = [FakeEvent(FakeMessage(o, b"", partition=p)) for p, o in ((0, 40), (3, 6))]
    assert worker._batch_window() == BATCH_WITHIN_S  # nothing known yet
    # a batch's worth of records waits behind the two partitions together
    highwaters.update({0: 41 + batch_size // 2, 3: 7 + batch_size - batch_size // 2})
    worker._export_lag(cast(Any, events))
    assert worker._batch_window() == BATCH_WITHIN_BEHIND_S > BATCH_WITHIN_S
    highwaters[3] -= 1  # one record short of a batch: caught up, the short wait again
    worker._export_lag(cast(Any, events))
    assert worker._batch_window() == BATCH_WITHIN_S

"""The Kafka path gives the same actions as replay, across a worker restart.

A simulated population goes Publisher → `interactions` → worker (child
process) → action topics and `decisions` → PostgreSQL sink, and what lands in
PostgreSQL is compared with `replay_events` on the same events, partitioned
like Kafka (`partitions=settings.kafka.interactions_partitions`). The worker
stops where a candidate deferred by an open case and a gathering window are
pending, so both cross the restart. Planted records arrive out of order: two
too late to apply (the worker keeps them on `interactions.late`, replay reports
them `too_late`) and a meter reading that arrives two minutes after the payment
demand it preceded (the pair fires all the same). Afterwards `replay
--from-topic` (`backfill_topic`) over the same `interactions` topic gives what
file replay gives: the same actions, decisions and late records.

Which timer actions may differ, exactly. Both paths keep one watermark per
partition (max occurred_at - allowed lateness) and both advance it the same
way while events arrive; the worker also advances a *quiet* partition's
watermark by the wall clock since the partition's last event (idle ticks),
while replay without `until_ms` stops at the last event. So the only
legitimate difference is the timers still pending at the end of the replay:
absence deadlines, gathered candidates (life_event_check_in), deferred
candidates' queue timers, and the hold timers of events that the rules
deciding at the watermark (engagement rules, `decide: at_watermark`) have
not seen yet (docs/design.md 11.1). Each such action's time is its timer's
deadline (a held event's is its occurred_at), and the worker fires those
whose deadline is at most the partition's final replay watermark plus the
wall time the test has run. (A tick in the middle of the stream changes
nothing: it can raise a partition's watermark only by the wall time since
the partition's last event, between two publishes or across the restart,
far below the allowed lateness of 5 minutes, so the watermark stays behind
the partition's newest event; the events are in occurred_at order, so
every event after the tick is later than the deadlines it passed: none can
resolve an absence timer it fired, join a gathering it closed (the
gathering hour ended before the watermark) or precede an event it released
to the rules deciding at the watermark, which decide as of that event's
time.)

(The planted late reading arrives behind the partition's newest event but
ahead of its watermark, which the ticks cannot move past it either.)

The test pins that down: `expected` = every action of the replay + the
pending timer actions (from a replay to the end of time) whose deadline
lies within that wall-time bound, and two pending timers are planted 5 s of
event time after their partition's last watermark, a case's absence
deadline and a customer's own meter reading held for thank_meter_reading,
so the worker *must* fire both from idle ticks within seconds. Everything
else must be equal exactly: the set of action ids, and each action's full
JSON (and so for decisions).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from common.settings import Settings
from processors.backfill import backfill_topic
from processors.config import engine_config
from processors.engine import Engine, EngineConfig, RulePack, load_rule_pack
from processors.engine.decisions import OPEN_CASE
from processors.offline import partition_for
from processors.replay import Replayer, replay_events
from producers.publisher import Publisher
from producers.simulator import simulate
from schemas.codec import codec_for, to_json_dict
from schemas.records import ActionEvent, Decision, InteractionEvent
from schemas.wire import ERROR_HEADER_PREFIX
from sinks.postgres import apply_migrations, fetch_actions, run_postgres_sink
from tests.support.kafka import read_topic
from tests.support.worker_process import WorkerProcess, headers_of, running_worker

WAIT_S = 240.0
QUIET_S = 3.0
HOUR_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The planted timers' deadlines lie this far (event time) past their partition's last watermark.
PLANTED_AFTER_MS = 5_000
DAY_MS = 24 * HOUR_MS


def ms(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - EPOCH) // timedelta(milliseconds=1)


def stored_actions(settings: Settings) -> dict[str, dict[str, Any]]:
    """The JSON form of every action the sink stored from this test's topics, by action_id."""
    assert settings.database.database_url
    found: dict[str, dict[str, Any]] = {}
    for row in fetch_actions(settings.database.database_url):
        if not str(row["kafka_topic"]).startswith(settings.kafka.topic_prefix):
            continue
        action = ActionEvent(
            action_id=row["action_id"],
            customer_id=row["customer_id"],
            rule=row["rule"],
            action=row["action"],
            rule_version=row["rule_version"],
            destination=row["destination"],
            priority=row["priority"],
            reason=row["reason"],
            evidence=list(row["evidence"]),
            channel_hint=row["channel_hint"],
            triggered_at=ms(row["triggered_at"]) or 0,
            due_by=ms(row["due_by"]),
            details=dict(row["details"]),
        )
        found[action.action_id] = to_json_dict(action)
    return found


def stored_decisions(settings: Settings) -> dict[str, dict[str, Any]]:
    assert settings.database.database_url
    query = (
        "SELECT decision_id, customer_id, rule, rule_version, outcome, reason, action_id,"
        " evidence, decided_at, blocked_by FROM decisions WHERE kafka_topic = %s"
    )
    with psycopg.connect(settings.database.database_url) as conn:
        rows = conn.execute(query, (settings.topics.decisions,)).fetchall()
    decisions = [
        Decision(
            decision_id=row[0],
            customer_id=row[1],
            rule=row[2],
            rule_version=row[3],
            outcome=row[4],
            reason=row[5],
            action_id=row[6],
            evidence=list(row[7]),
            decided_at=ms(row[8]) or 0,
            blocked_by=row[9],
        )
        for row in rows
    ]
    return {d.decision_id: to_json_dict(d) for d in decisions}


def actions_by_id(actions: list[ActionEvent]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for action in actions:
        assert action.action_id not in found, f"replay gave two actions {action.action_id}"
        found[action.action_id] = to_json_dict(action)
    return found


def decisions_by_id(decisions: list[Decision]) -> dict[str, list[dict[str, Any]]]:
    """Every JSON form replay gave each decision id.

    The engine can give two decisions one id (e.g. repair_relationship suppressed
    twice on the same evidence); the sink keeps one row per id, so any of them may
    be the stored one.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    for decision in decisions:
        found.setdefault(decision.decision_id, []).append(to_json_dict(decision))
    return found


def population(settings: Settings) -> list[InteractionEvent]:
    """A few thousand simulated events plus two planted on partition 0 for quiet customers:
    a case opened 48 h before (case_unresolved) and a meter reading on the web
    (thank_meter_reading) just past the partition's last watermark."""
    events = list(simulate(customers=400, days=45, seed=20_260_104, story_rate=0.5))
    partitions = settings.kafka.interactions_partitions
    quiet = (
        c for c in (f"parity-quiet-{n}" for n in range(100)) if partition_for(c, partitions) == 0
    )
    last_on_partition = max(
        e.occurred_at for e in events if partition_for(e.customer_id, partitions) == 0
    )
    watermark = last_on_partition - round(settings.engine.allowed_lateness_s * 1000)
    opened = InteractionEvent(
        event_id="parity-planted-dispute",
        customer_id=next(quiet),
        channel="call",
        type="dispute_opened",
        occurred_at=watermark + PLANTED_AFTER_MS - 48 * HOUR_MS,  # case_unresolved: 48 h
        source="parity-test",
        reference="PARITY-1",
    )
    reading = InteractionEvent(
        event_id="parity-planted-reading",
        customer_id=next(quiet),
        channel="web",
        type="meter_reading_submitted",
        occurred_at=watermark + PLANTED_AFTER_MS,  # held until the watermark passes it
        source="parity-test",
    )
    events.extend((opened, reading))
    events.extend(across_the_restart(events, next(quiet), next(quiet)))
    events.sort(key=lambda e: e.occurred_at)  # stable: the simulation's order is kept
    plant_late_arrivals(events, next(quiet))
    return events


def across_the_restart(
    events: list[InteractionEvent], deferred: str, gathered: str
) -> list[InteractionEvent]:
    """What is pending when the worker stops at the middle of the stream: a meter reading
    on the web (a day before the middle) deferred by the customer's open complaint (opened 3
    days before the middle, resolved 2 days after it) and a cancellation whose gathering hour
    is open at the stop (it is the last event before the stop)."""
    middle = sorted(e.occurred_at for e in events)[len(events) // 2]

    def planted(name: str, customer: str, kind: str, at: int, **fields: Any) -> InteractionEvent:
        return InteractionEvent(
            event_id=f"parity-{name}",
            customer_id=customer,
            channel=fields.pop("channel", "call"),
            type=kind,
            occurred_at=at,
            source="parity-test",
            **fields,
        )

    return [
        planted("complaint", deferred, "complaint_filed", middle - 3 * DAY_MS, reference="CMP-P"),
        planted(
            "deferred", deferred, "meter_reading_submitted", middle - 2 * DAY_MS, channel="web"
        ),
        planted("resolved", deferred, "complaint_resolved", middle + 2 * DAY_MS, reference="CMP-P"),
        planted("gathered", gathered, "cancellation_requested", middle, product="broadband"),
    ]


def plant_late_arrivals(events: list[InteractionEvent], customer: str) -> None:
    """Records that arrive out of order: at a quarter and at four fifths of the stream, a
    reading 8 days older than the newest event so far (too late: beyond the 7 days of
    MOMENTS_MAX_LATENESS), and at three quarters a payment demand followed by the meter
    reading that occurred 2 minutes before it (within the allowed lateness: paired)."""
    for at, name in ((len(events) // 4, "first"), (len(events) * 4 // 5, "second")):
        newest = max(e.occurred_at for e in events[:at])
        old = events[at - 1]
        events.insert(
            at,
            InteractionEvent(
                event_id=f"parity-too-late-{name}",
                customer_id=old.customer_id,
                channel="web",
                type="meter_reading_submitted",
                occurred_at=newest - 8 * DAY_MS,
                source="parity-test",
            ),
        )
    at = len(events) * 3 // 4
    demand_at = events[at - 1].occurred_at
    demand = InteractionEvent(
        event_id="parity-late-demand",
        customer_id=customer,
        channel="billing",
        type="payment_demand_issued",
        occurred_at=demand_at,
        source="parity-test",
        reference="DEM-PARITY",
        amount=120.0,
        currency="EUR",
    )
    reading = InteractionEvent(
        event_id="parity-late-reading",
        customer_id=customer,
        channel="web",
        type="meter_reading_submitted",
        occurred_at=demand_at - 120_000,
        source="parity-test",
    )
    events[at:at] = [demand, reading]


def too_late_ids(
    events: list[InteractionEvent], partitions: int, pack: RulePack, config: EngineConfig
) -> list[str]:
    """The event ids replay finds too late to apply, in stream order."""
    replayer = Replayer(Engine(pack, config), partitions)
    return [e.event_id for e in events if replayer.feed(e).too_late]


@pytest.fixture
def postgres_sink(settings: Settings) -> Iterator[threading.Thread]:
    # The tables exist before the test reads them (the sink migrates too, on its own time).
    assert settings.database.database_url
    apply_migrations(settings.database.database_url)
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run_postgres_sink(settings, stop=stop)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failure.append(exc)
            raise

    thread = threading.Thread(target=target, name="postgres-sink", daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the PostgreSQL sink did not stop within 30 s"
    assert not failure, f"the PostgreSQL sink failed: {failure[0]!r}"


def wait_until_quiet(read: Any, worker: WorkerProcess | None, quiet_s: float) -> Any:
    """Read until the result stopped changing for `quiet_s` (bounded by WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "output never settled"
        if worker is not None:
            worker.check_alive()
        time.sleep(0.5)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


def deferred_across(before: list[Decision], decisions: list[Decision]) -> list[str]:
    """Action ids deferred by an open case among the decisions `before` a stop that fired
    after it (fired among `decisions`, those of the whole stream, but not `before`)."""
    deferred = {d.action_id for d in before if d.outcome == "deferred" and d.reason == OPEN_CASE}
    fired_before = {d.action_id for d in before if d.outcome == "fired"}
    return [
        d.action_id
        for d in decisions
        if d.outcome == "fired"
        and d.action_id is not None
        and d.action_id in deferred
        and d.action_id not in fired_before
    ]


def gathered_across(
    events: list[InteractionEvent],
    split: int,
    before: list[ActionEvent],
    actions: list[ActionEvent],
) -> list[str]:
    """Action ids of gathered candidates (rules with `gather`) whose window took an event
    before `split` but which fired only after it (among `actions`, not among `before`)."""
    first_part = {e.event_id for e in events[:split]}
    fired_before = {a.action_id for a in before}
    return [
        a.action_id
        for a in actions
        if a.rule == "life_event_check_in"
        and a.action_id not in fired_before
        and first_part.intersection(a.evidence)
    ]


def restart_point(
    events: list[InteractionEvent],
    actions: list[ActionEvent],
    decisions: list[Decision],
    partitions: int,
    pack: RulePack,
    config: EngineConfig,
) -> int:
    """The index before which the worker stops: just after the planted cancellation, while
    its gathering window is open and the planted reading is deferred by an open case (as
    replay of the first part, then of everything, says)."""
    split = 1 + next(n for n, e in enumerate(events) if e.event_id == "parity-gathered")
    before, before_decisions = replay_events(
        events[:split], partitions=partitions, pack=pack, config=config
    )
    assert deferred_across(before_decisions, decisions), "no open-case deferral across the stop"
    assert gathered_across(events, split, before, actions), "no gathering open at the stop"
    return split


def test_kafka_path_gives_the_same_actions_as_replay(
    settings: Settings, postgres_sink: threading.Thread, tmp_path: Path
) -> None:
    """The worker stops (SIGTERM) about half-way through the events and a new one takes over
    from the state in its changelog: a candidate deferred before the stop (contact cap or
    open case) fires after it, exactly as in replay. (One test per session: a second
    worker-parity test in the same session found its worker idle, a harness limit not yet
    understood.)"""
    events = population(settings)
    partitions = settings.kafka.interactions_partitions
    config = engine_config(settings)
    pack = load_rule_pack(settings.engine.rules_path)  # the worker's (the default pack)
    lateness_ms = config.allowed_lateness_ms
    actions, decisions = replay_events(events, partitions=partitions, pack=pack, config=config)
    end_of_time = max(e.occurred_at for e in events) + 365 * 24 * HOUR_MS
    all_actions, all_decisions = replay_events(
        events, partitions=partitions, pack=pack, config=config, until_ms=end_of_time
    )
    replayed, replayed_decisions = actions_by_id(actions), decisions_by_id(decisions)
    pending = {k: v for k, v in actions_by_id(all_actions).items() if k not in replayed}
    pending_decisions = {
        k: v for k, v in decisions_by_id(all_decisions).items() if k not in replayed_decisions
    }
    # The population is worth comparing: thousands of events, every rule of the pack acting.
    # (Revision 3's etiquette, cases and gathering make a few hundred actions of them.)
    assert len(events) > 2000 and len(actions) > 400
    # (and the escalations of overdue follow-ups and feedback, docs/design.md 12.4)
    assert {a.rule.removesuffix(".when_overdue") for a in actions} == {r.id for r in pack.rules}
    assert any(a.rule.endswith(".when_overdue") for a in actions)
    final_watermark = {
        p: max(e.occurred_at for e in events if partition_for(e.customer_id, partitions) == p)
        - lateness_ms
        for p in range(partitions)
    }
    planted = [k for k, a in pending.items() if a["customer_id"].startswith("parity-quiet-")]
    assert sorted(pending[k]["rule"] for k in planted) == [
        "case_unresolved",
        "thank_meter_reading",
    ], pending
    half = restart_point(events, actions, decisions, partitions, pack, config)
    late = too_late_ids(events, partitions, pack, config)
    assert late == ["parity-too-late-first", "parity-too-late-second"]
    assert any(
        a.rule == "review_payment_demand" and "parity-late-reading" in a.evidence for a in actions
    )

    started = time.monotonic()
    with running_worker(settings, tmp_path / "worker.log") as worker:
        with Publisher(settings) as publisher:
            for event in events[:half]:
                publisher.publish(event)
        # stop once the first half is done (what replay gives for it is stored)
        first_half, _ = replay_events(
            events[:half], partitions=partitions, pack=pack, config=config
        )
        done = {a.action_id for a in first_half}
        deadline = time.monotonic() + WAIT_S
        while not done <= set(stored_actions(settings)):
            assert time.monotonic() < deadline, f"first half not done; {worker.log_tail()}"
            worker.check_alive()
            time.sleep(1.0)
        assert worker.stop() == 0, worker.log_tail()
        worker.start()
        with Publisher(settings) as publisher:
            for event in events[half:]:
                publisher.publish(event)
        deadline = time.monotonic() + WAIT_S
        wanted = set(replayed) | set(planted)
        while not wanted <= set(stored_actions(settings)):
            missing = len(wanted - set(stored_actions(settings)))
            assert time.monotonic() < deadline, f"{missing} actions missing; {worker.log_tail()}"
            worker.check_alive()
            time.sleep(1.0)
        stored = wait_until_quiet(lambda: stored_actions(settings), worker, QUIET_S)
        assert worker.stop() == 0, worker.log_tail()
    stored = wait_until_quiet(lambda: stored_actions(settings), None, QUIET_S)
    stored_decided = wait_until_quiet(lambda: stored_decisions(settings), None, QUIET_S)
    ran_ms = round((time.monotonic() - started) * 1000)

    def may_have_fired(customer_id: str, iso_time: str) -> bool:
        """A pending timer within the wall-time bound of its partition's final watermark."""
        partition = partition_for(customer_id, partitions)
        deadline_ms = ms(datetime.fromisoformat(iso_time)) or 0
        return deadline_ms <= final_watermark[partition] + ran_ms

    # The worker fires exactly a deadline-ordered prefix of each partition's pending timers.
    fired_timers = {k: v for k, v in pending.items() if k in stored}
    assert set(planted) <= set(fired_timers)
    assert all(may_have_fired(a["customer_id"], a["triggered_at"]) for a in fired_timers.values())
    # absence timers, gathered candidates, held events, deferred candidates' queue timers:
    # never a rule deciding as the event arrives
    timed = {r.id for r in pack.rules if r.at_watermark or r.gather_ms or r.kind == "absence"}
    assert {a["rule"] for a in fired_timers.values()} <= timed
    for partition in range(partitions):
        mine = [
            a for a in pending.values() if partition_for(a["customer_id"], partitions) == partition
        ]
        fired = sorted(a["triggered_at"] for a in mine if a["action_id"] in stored)
        waiting = sorted(a["triggered_at"] for a in mine if a["action_id"] not in stored)
        assert not fired or not waiting or fired[-1] <= waiting[0], (partition, fired, waiting)

    expected = {**replayed, **fired_timers}
    assert set(stored) == set(expected), (
        f"only in PostgreSQL: {sorted(set(stored) - set(expected))[:5]}; "
        f"only in replay: {sorted(set(expected) - set(stored))[:5]}"
    )
    different = [k for k in expected if stored[k] != expected[k]]
    assert not different, [(stored[k], expected[k]) for k in different[:3]]

    # Decisions alike: every replayed one, plus those of the timers the worker fired.
    extra_decisions = {k: v for k, v in stored_decided.items() if k not in replayed_decisions}
    assert set(extra_decisions) <= set(pending_decisions)
    assert all(may_have_fired(d["customer_id"], d["decided_at"]) for d in extra_decisions.values())
    fired_decisions = {
        k for k, forms in pending_decisions.items() if forms[0]["action_id"] in fired_timers
    }
    assert fired_decisions <= set(extra_decisions)
    expected_decisions = {
        **replayed_decisions,
        **{k: pending_decisions[k] for k in extra_decisions},
    }
    assert set(stored_decided) == set(expected_decisions)
    different = [k for k, forms in expected_decisions.items() if stored_decided[k] not in forms]
    assert not different, [(stored_decided[k], expected_decisions[k]) for k in different[:3]]

    # The records too late to apply: kept on interactions.late (stage `late`), as replay says.
    kept = read_topic(
        settings, [settings.topics.interactions_late], enough=lambda found: len(found) >= len(late)
    )
    codec = codec_for(InteractionEvent)
    assert sorted(codec.decode(m.value() or b"").event_id for m in kept) == sorted(late)
    assert all(headers_of(m)[ERROR_HEADER_PREFIX + "stage"] == b"late" for m in kept)

    # `replay --from-topic` over the same topic: what file replay gives, late records included.
    summary = backfill_topic(
        settings,
        settings.topics.interactions,
        actions_out=tmp_path / "backfill-actions.jsonl",
        decisions_out=tmp_path / "backfill-decisions.jsonl",
        late_out=tmp_path / "backfill-late.jsonl",
    )
    assert summary.too_late == len(late) and summary.garbage == 0

    def lines(name: str) -> list[dict[str, Any]]:
        text = (tmp_path / name).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    assert {a["action_id"]: a for a in lines("backfill-actions.jsonl")} == replayed
    backfilled_decisions = lines("backfill-decisions.jsonl")
    assert len(backfilled_decisions) == len(decisions)
    assert all(d in replayed_decisions[d["decision_id"]] for d in backfilled_decisions)
    # the order across partitions is the fetch order (each customer's records keep theirs)
    assert sorted(e["event_id"] for e in lines("backfill-late.jsonl")) == sorted(late)
